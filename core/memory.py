"""Conversation memory in Redis: history, the rolling summary, one-time imports, deletions
and edits, and cached on-demand summaries.

Keys (`K` a conversation key, `C` its channel key; braces are Redis Cluster hash tags):

    P:h:{K}        list    every message, JSON ChatMessage per entry (bounded, expiring)
    P:ho:{K}       int     how many of the oldest entries the rolling summary covers
    P:rs:{K}       string  the rolling summary of those entries (JSON)
    P:imp:{K}      string  "history imported" marker (also set by forget)
    P:mi:{C}       hash    message id → conversation key, for deletions and edits
    P:sum:{C}:S    string  cached on-demand summary of scope S (JSON)
    P:sumidx:{C}   set     the summary scopes of channel C (for invalidation)

Folded messages stay in the list behind the rolling summary's offset: the model sees
the summary and the entries after it; when a folded message is deleted or edited, the
summary is dropped and the next turn folds what remains again, so nothing deleted is
ever sent to a model again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, TypeAdapter

from core.queue import LeaseLost, Ticket
from core.settings import Settings
from core.store import Store, channel_glob
from core.types import ChatMessage, ConversationKey

__all__ = ["History", "MessageRef", "RollingSummary"]

log = logging.getLogger(__name__)

# Rolling summary, offset and the entries after it, in one round trip.
# KEYS: history, offset, summary.
_LOAD = """
local offset = tonumber(redis.call('GET', KEYS[2]) or '0')
return {redis.call('GET', KEYS[3]) or false, offset, redis.call('LRANGE', KEYS[1], offset, -1)}
"""

# Append, bounded, with a fencing check. KEYS: history, offset, lease (or any name).
# ARGV: ttl ms, max entries, token ('' = no fence), entries...
# Returns the new length, or -1 when the fence (the turn's lease) is no longer ours.
_APPEND = """
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then return -1 end
local n = 0
for i = 4, #ARGV do n = redis.call('RPUSH', KEYS[1], ARGV[i]) end
local excess = n - tonumber(ARGV[2])
if excess > 0 then
  redis.call('LTRIM', KEYS[1], excess, -1)
  local offset = tonumber(redis.call('GET', KEYS[2]) or '0')
  if offset > 0 then
    redis.call('SET', KEYS[2], math.max(0, offset - excess), 'PX', ARGV[1])
  end
  n = n - excess
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
"""

# Fold: the rolling summary now covers COUNT more entries, if the entry at the current
# offset is still the one folded from. KEYS: history, offset, summary.
# ARGV: first folded entry, count, summary JSON, ttl ms.
_FOLD = """
local offset = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('LINDEX', KEYS[1], offset) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], offset + tonumber(ARGV[2]), 'PX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Import once: only into a conversation that has no history and was never imported.
# KEYS: history, marker. ARGV: ttl ms, max entries, entries...
_IMPORT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 1
"""

# Replace (or, with an empty replacement, remove) exact entries. KEYS: history, offset,
# summary. ARGV: count of pairs, then (old entry, new entry or '') pairs.
# A changed entry behind the offset drops the rolling summary (it is folded again).
# Returns how many entries changed.
_REWRITE = """
local offset = tonumber(redis.call('GET', KEYS[2]) or '0')
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local changed, folded_hit = 0, false
for i = 1, #entries do
  for p = 0, tonumber(ARGV[1]) - 1 do
    if entries[i] == ARGV[2 + 2 * p] then
      local replacement = ARGV[3 + 2 * p]
      if i - 1 < offset then folded_hit = true end
      if replacement == '' then
        redis.call('LSET', KEYS[1], i - 1, '__teambot_removed__')
      else
        redis.call('LSET', KEYS[1], i - 1, replacement)
      end
      changed = changed + 1
      break
    end
  end
end
redis.call('LREM', KEYS[1], 0, '__teambot_removed__')
if folded_hit then
  redis.call('DEL', KEYS[2], KEYS[3])
end
return changed
"""


class RollingSummary(BaseModel):
    text: str
    folded: int = 0  # how many messages it covers in all
    upto_ts: float = 0.0


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A platform message, as deletions and edits name it."""

    platform: str
    workspace: str
    channel: str
    message_id: str

    @property
    def channel_key(self) -> ConversationKey:
        return ConversationKey(self.platform, self.workspace, self.channel, "*")


_HISTORY = TypeAdapter(list[ChatMessage])


def _parse(raw: Sequence[str]) -> list[ChatMessage]:
    """Parse stored entries in one pass (pydantic-core parses the joined array natively)."""
    if not raw:
        return []
    return _HISTORY.validate_json("[" + ",".join(raw) + "]")


class History:
    """Everything about what was said in a conversation."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.keys = store.keys
        self.ttl_ms = settings.memory_ttl_seconds * 1000
        self.max_messages = settings.history_max_messages
        redis = store.redis
        self._load = redis.register_script(_LOAD)
        self._append = redis.register_script(_APPEND)
        self._fold = redis.register_script(_FOLD)
        self._import = redis.register_script(_IMPORT)
        self._rewrite = redis.register_script(_REWRITE)

    def _k(self, kind: str, key: ConversationKey) -> str:
        return self.keys.of(kind, key)

    def _conversation(self, key: ConversationKey) -> list[str]:
        return [self._k("h", key), self._k("ho", key), self._k("rs", key)]

    # --- reading -----------------------------------------------------------------------

    async def history_and_summary(
        self, key: ConversationKey
    ) -> tuple[list[ChatMessage], RollingSummary | None]:
        """The rolling summary and the messages after it, in one round trip."""
        raw_summary, _offset, raw = await self._load(keys=self._conversation(key))
        rolling = RollingSummary.model_validate_json(raw_summary) if raw_summary else None
        return _parse(raw), rolling

    async def history(self, key: ConversationKey) -> list[ChatMessage]:
        """The messages the rolling summary does not cover yet."""
        messages, _rolling = await self.history_and_summary(key)
        return messages

    async def rolling_summary(self, key: ConversationKey) -> RollingSummary | None:
        raw = await self.store.redis.get(self._k("rs", key))
        return RollingSummary.model_validate_json(raw) if raw else None

    async def everything(self, key: ConversationKey) -> list[ChatMessage]:
        """Every stored message, folded ones included."""
        raw = cast(list[str], await self.store.redis.lrange(self._k("h", key), 0, -1))
        return _parse(raw)

    # --- writing -----------------------------------------------------------------------

    async def append(
        self, key: ConversationKey, messages: Sequence[ChatMessage], *, fence: Ticket | None = None
    ) -> int:
        """Append messages. With `fence`, only while that turn's lease is still ours;
        LeaseLost otherwise (nothing is written)."""
        if not messages:
            return 0
        if fence is not None and fence.is_lost:
            raise LeaseLost(key)
        payload = [m.for_storage().model_dump_json() for m in messages]
        lease = fence.lease if fence is not None else self._k("h", key)
        token = fence.token if fence is not None else ""
        length = int(
            await self._append(
                keys=[self._k("h", key), self._k("ho", key), lease],
                args=[self.ttl_ms, self.max_messages, token, *payload],
            )
        )
        if length < 0:
            raise LeaseLost(key)
        await self._index(key, [m for m in messages if m.id and m.role == "user"])
        return length

    async def fold(
        self, key: ConversationKey, first: ChatMessage, count: int, summary: RollingSummary
    ) -> bool:
        """The rolling summary now covers `count` more messages, starting with `first`;
        False when the history changed meanwhile."""
        done = await self._fold(
            keys=self._conversation(key),
            args=[first.model_dump_json(), count, summary.model_dump_json(), self.ttl_ms],
        )
        return bool(done)

    async def needs_import(self, key: ConversationKey) -> bool:
        exists = await self.store.redis.exists(self._k("h", key), self._k("imp", key))
        return not exists

    async def import_history(self, key: ConversationKey, messages: Sequence[ChatMessage]) -> bool:
        """Store a conversation's earlier messages, once, into an empty conversation."""
        payload = [m.for_storage().model_dump_json() for m in messages]
        done = await self._import(
            keys=[self._k("h", key), self._k("imp", key)],
            args=[self.ttl_ms, self.max_messages, *payload],
        )
        if done:
            await self._index(key, [m for m in messages if m.id and m.role == "user"])
        return bool(done)

    async def forget(self, key: ConversationKey) -> None:
        """Erase the conversation. The import marker stays set, so a forgotten thread
        is not read back from the platform on the next message."""
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.delete(*self._conversation(key))
        pipe.set(self._k("imp", key), "forgotten", px=self.ttl_ms)
        await pipe.execute()

    async def forget_channel(self, channel: ConversationKey) -> int:
        """Erase every conversation of a channel (all its threads). Returns how many."""
        erased = 0
        async for name in self.store.scan(self.keys.match("h", channel_glob(channel))):
            key = ConversationKey.parse(self.keys.tag_of("h", name))
            await self.forget(key)
            erased += 1
        await self.store.redis.delete(self.keys.of("mi", channel.channel_key()))
        return erased

    # --- deletions and edits -------------------------------------------------------------

    async def _index(self, key: ConversationKey, messages: Sequence[ChatMessage]) -> None:
        if not messages:
            return
        index = self.keys.of("mi", key.channel_key())
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.hset(index, mapping={str(m.id): str(key) for m in messages})
        pipe.pexpire(index, self.ttl_ms)
        await pipe.execute()

    async def conversation_of(self, ref: MessageRef) -> ConversationKey | None:
        raw = await self.store.redis.hget(self.keys.of("mi", ref.channel_key), ref.message_id)
        return ConversationKey.parse(str(raw)) if raw else None

    async def remove_message(self, ref: MessageRef) -> bool:
        """The platform message was deleted: it leaves the history with the answer to it
        (which may repeat it), and the rolling summary, if that covered it."""
        return await self._change(ref, None)

    async def replace_message(self, ref: MessageRef, text: str) -> bool:
        """The platform message was edited: its stored text becomes `text`."""
        return await self._change(ref, text)

    async def _change(self, ref: MessageRef, text: str | None) -> bool:
        key = await self.conversation_of(ref)
        if key is None:
            return False
        raw = cast(list[str], await self.store.redis.lrange(self._k("h", key), 0, -1))
        parsed = _parse(raw)
        pairs: list[str] = []
        for index, message in enumerate(parsed):
            if message.id != ref.message_id or message.role != "user":
                continue
            if text is not None:
                updated = message.model_copy(update={"content": _with_notes(text, message)})
                pairs += [raw[index], updated.model_dump_json()]
                continue
            # Deleted: the message goes, and so does the answer to it (it may repeat it).
            pairs += [raw[index], ""]
            for following, entry in zip(parsed[index + 1 :], raw[index + 1 :], strict=True):
                if following.role == "user":
                    break
                pairs += [entry, ""]
        if not pairs:
            return False
        changed = int(
            await self._rewrite(keys=self._conversation(key), args=[len(pairs) // 2, *pairs])
        )
        if text is None:
            await self.store.redis.hdel(self.keys.of("mi", ref.channel_key), ref.message_id)
        log.info(
            "message %s of %s %s in memory",
            ref.message_id,
            key,
            "removed" if text is None else "replaced",
        )
        return changed > 0

    # --- on-demand summary cache ---------------------------------------------------------

    def _summary_key(self, scope: ConversationKey) -> str:
        return self.keys.of("sum", scope.channel_key(), str(scope))

    async def cached_summary(self, scope: ConversationKey) -> dict[str, Any] | None:
        raw = await self.store.redis.get(self._summary_key(scope))
        return cast(dict[str, Any], json.loads(raw)) if raw else None

    async def store_summary(self, scope: ConversationKey, value: dict[str, Any]) -> None:
        index = self.keys.of("sumidx", scope.channel_key())
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.set(self._summary_key(scope), json.dumps(value), px=self.ttl_ms)
        pipe.sadd(index, str(scope))
        pipe.pexpire(index, self.ttl_ms)
        await pipe.execute()

    async def invalidate_summaries(self, key: ConversationKey) -> int:
        """Drop cached summaries that may contain a message of `key`'s channel."""
        index = self.keys.of("sumidx", key.channel_key())
        scopes = cast(set[str], await self.store.redis.smembers(index))
        if not scopes:
            return 0
        pipe = self.store.redis.pipeline(transaction=True)
        for scope in scopes:
            pipe.delete(self._summary_key(ConversationKey.parse(scope)))
        pipe.delete(index)
        await pipe.execute()
        return len(scopes)


def _with_notes(text: str, old: ChatMessage) -> str:
    """An edited message's new text, keeping the notes about its files."""
    notes = [line for line in old.content.splitlines() if line.startswith("[attached ")]
    return "\n".join([text, *notes]) if notes else text
