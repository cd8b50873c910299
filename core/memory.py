"""Conversation state in Redis: history, rolling summaries, an ordered per-conversation
lock with heartbeats, event dedupe, summary cache, usage ledger, small caches.

Key layout (all under the configured prefix `P`; `K` is a ConversationKey):

    P:h:K          list   history, JSON ChatMessage per entry (RPUSH+LTRIM+PEXPIRE)
    P:rs:K         string rolling summary of folded history (JSON)
    P:imp:K        string "history import done" marker
    P:q:K          hash   FIFO lock: `tail` (last ticket issued), `head` (last ticket served)
    P:q:K:a:N      string lease of ticket N (kept alive by a heartbeat)
    P:ev:E         string dedupe of platform event E: a lease while answering, then "done"
    P:sum:S        string cached on-demand summary of scope S (JSON)
    P:sumidx:C     set    summary scopes that live in channel C (for invalidation)
    P:u:T:DAY      hash   usage ledger of tenant T on a UTC day
    P:c:NS:ID      string small caches (display names, ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel, TypeAdapter
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from core import metrics
from core.settings import Settings
from core.types import ChatMessage, ConversationKey

__all__ = [
    "AlreadyClaimed",
    "KeyedLocks",
    "Memory",
    "RollingSummary",
    "Ticket",
    "UsageRecord",
    "connect_redis",
]

log = logging.getLogger(__name__)

# RPUSH + LTRIM + PEXPIRE in one step.
_APPEND = """
local n = 0
for i = 3, #ARGV do n = redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
"""

# Drop the first N history entries (they were folded) and store the new rolling
# summary, only if the history still starts with the entry we folded from.
_FOLD = """
local first = redis.call('LINDEX', KEYS[1], 0)
if first ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Import history once: only into a conversation that has none and was never imported.
_IMPORT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 1
"""

# FIFO lock. Take a ticket and its lease atomically; with a claim key (KEYS[2]), only if
# that event was not claimed before (returns 0 then: a duplicate delivery).
_ENTER = """
if #KEYS > 1 and not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then
  return 0
end
local n = redis.call('HINCRBY', KEYS[1], 'tail', 1)
redis.call('SET', KEYS[1] .. ':a:' .. n, ARGV[2], 'PX', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
"""

# Is it ticket ARGV[1]'s turn? Skips tickets whose lease expired (their holder died).
# Returns 1 (your turn), 0 (wait), -1 (you were skipped: your lease had expired).
_TURN = """
local me = tonumber(ARGV[1])
for _ = 1, 1000 do
  local head = tonumber(redis.call('HGET', KEYS[1], 'head') or '0')
  local nxt = head + 1
  if nxt == me then return 1 end
  if nxt > me then return -1 end
  if redis.call('EXISTS', KEYS[1] .. ':a:' .. nxt) == 1 then return 0 end
  redis.call('HSET', KEYS[1], 'head', nxt)
end
return 0
"""

# Finish ticket ARGV[1]: advance head past it and drop its lease.
_LEAVE = """
local me = tonumber(ARGV[1])
local head = tonumber(redis.call('HGET', KEYS[1], 'head') or '0')
if head < me then redis.call('HSET', KEYS[1], 'head', me) end
redis.call('DEL', KEYS[1] .. ':a:' .. me)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[1] .. ':wake', me)
return 1
"""

# Extend leases that still hold our token. KEYS are lease keys; ARGV[1]=token, ARGV[2]=ms.
_RENEW = """
local ok = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    ok = ok + 1
  end
end
return ok
"""

# Claim an event: NX lease; "done" once answered.
_FINISH_EVENT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE_EVENT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class AlreadyClaimed(Exception):
    """The event was claimed before: a duplicate delivery."""


class RollingSummary(BaseModel):
    text: str
    folded: int = 0  # how many messages it covers in all
    upto_ts: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageRecord:
    route: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(slots=True)
class Ticket:
    """A place in a conversation's queue, kept alive by a heartbeat until released."""

    key: ConversationKey
    number: int
    token: str
    fifo: str
    leases: list[str]
    lost: bool = False
    heartbeat: asyncio.Task[None] | None = None
    released: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class KeyedLocks:
    """In-process FIFO locks by name, dropped when nobody holds or waits for them.
    asyncio locks are fair, so work on one name runs in the order it asked."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users <= 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


def connect_redis(settings: Settings) -> Redis:
    """One Redis pool per process: the real server when REDIS_URL is set, otherwise an
    in-process store that runs the same commands and scripts."""
    if settings.redis_url is None:
        from fakeredis import FakeAsyncRedis

        log.warning(
            "REDIS_URL is not set: using an in-process store; memory is not persistent "
            "and is not shared between processes"
        )
        return cast(Redis, FakeAsyncRedis(decode_responses=True))
    # A blocking pool: under a burst, a command waits for a free connection instead of
    # failing with "Too many connections".
    pool = BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        max_connections=settings.redis_max_connections,
        timeout=20,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=8),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


_HISTORY = TypeAdapter(list[ChatMessage])


def _parse_history(raw: list[str]) -> list[ChatMessage]:
    """Parse stored entries in one pass (pydantic-core parses the joined array natively)."""
    if not raw:
        return []
    return _HISTORY.validate_json("[" + ",".join(raw) + "]")


def _day(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")


class Memory:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.prefix = settings.redis_key_prefix
        self.ttl_ms = settings.memory_ttl_seconds * 1000
        # A conversation's queue counters matter only while messages are in line; they are
        # refreshed on every enter and leave, so an hour of quiet lets them go.
        self.queue_ttl_ms = max(3_600_000, int(settings.total_timeout * 4000))
        self.max_messages = settings.history_max_messages
        self.lease_ms = int(settings.lock_ttl_seconds * 1000)
        self.dedupe_ttl = settings.dedupe_ttl_seconds
        self._append = redis.register_script(_APPEND)
        self._fold = redis.register_script(_FOLD)
        self._import = redis.register_script(_IMPORT)
        self._enter = redis.register_script(_ENTER)
        self._turn = redis.register_script(_TURN)
        self._leave = redis.register_script(_LEAVE)
        self._renew = redis.register_script(_RENEW)
        self._finish_event = redis.register_script(_FINISH_EVENT)
        self._release_event = redis.register_script(_RELEASE_EVENT)
        self._wakeups: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._entering = KeyedLocks()

    # --- keys ----------------------------------------------------------------------

    def _k(self, kind: str, key: ConversationKey | str) -> str:
        return f"{self.prefix}:{kind}:{key}"

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # --- history -------------------------------------------------------------------

    async def history(self, key: ConversationKey) -> list[ChatMessage]:
        raw = cast(list[str], await self.redis.lrange(self._k("h", key), 0, -1))
        return _parse_history(raw)

    async def history_and_summary(
        self, key: ConversationKey
    ) -> tuple[list[ChatMessage], RollingSummary | None]:
        """Both in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lrange(self._k("h", key), 0, -1)
        pipe.get(self._k("rs", key))
        raw, summary = await pipe.execute()
        rolling = RollingSummary.model_validate_json(summary) if summary else None
        return _parse_history(raw), rolling

    async def append(self, key: ConversationKey, messages: Sequence[ChatMessage]) -> int:
        if not messages:
            return 0
        payload = [m.for_storage().model_dump_json() for m in messages]
        return int(
            await self._append(
                keys=[self._k("h", key)], args=[self.ttl_ms, self.max_messages, *payload]
            )
        )

    async def rolling_summary(self, key: ConversationKey) -> RollingSummary | None:
        raw = await self.redis.get(self._k("rs", key))
        return RollingSummary.model_validate_json(raw) if raw else None

    async def fold(
        self, key: ConversationKey, first: ChatMessage, count: int, summary: RollingSummary
    ) -> bool:
        """Replace the first `count` history entries by `summary`, atomically."""
        done = await self._fold(
            keys=[self._k("h", key), self._k("rs", key)],
            args=[first.model_dump_json(), count, summary.model_dump_json(), self.ttl_ms],
        )
        return bool(done)

    async def needs_import(self, key: ConversationKey) -> bool:
        exists = await self.redis.exists(self._k("h", key), self._k("imp", key))
        return not exists

    async def import_history(self, key: ConversationKey, messages: Sequence[ChatMessage]) -> bool:
        payload = [m.for_storage().model_dump_json() for m in messages]
        done = await self._import(
            keys=[self._k("h", key), self._k("imp", key)],
            args=[self.ttl_ms, self.max_messages, *payload],
        )
        return bool(done)

    async def forget(self, key: ConversationKey) -> None:
        """Erase the conversation. The import marker stays set, so a forgotten thread
        is not read back from the platform on the next message."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._k("h", key), self._k("rs", key))
        pipe.set(self._k("imp", key), "forgotten", px=self.ttl_ms)
        await pipe.execute()

    async def forget_channel(self, channel: ConversationKey) -> int:
        """Erase every conversation of a channel (all its threads). Returns how many."""
        base = ConversationKey(channel.platform, channel.workspace, channel.channel, "x")
        pattern = f"{self.prefix}:h:{str(base)[: -len('x')]}*"
        erased = 0
        async for name in self.redis.scan_iter(match=pattern, count=500):
            key = ConversationKey.parse(str(name)[len(f"{self.prefix}:h:") :])
            await self.forget(key)
            erased += 1
        return erased

    # --- ordered lock ----------------------------------------------------------------

    async def reserve(
        self, key: ConversationKey, *, token: str | None = None, claim: str | None = None
    ) -> Ticket:
        """Take this conversation's next ticket: a place in line, in arrival order.

        With `claim` (an event key), the event is claimed in the same step; a duplicate
        raises `AlreadyClaimed`. A heartbeat keeps the ticket's lease (and the claim) alive
        until `release()`, so a long answer keeps its place and a crashed holder is skipped
        once its lease runs out."""
        fifo = self._k("q", key)
        token = token or secrets.token_hex(8)
        keys = [fifo, claim] if claim else [fifo]
        # Tickets of one conversation are taken one at a time, in the order asked for.
        async with self._entering.hold(fifo):
            number = int(
                await self._enter(keys=keys, args=[self.lease_ms, token, self.queue_ttl_ms])
            )
        if number == 0:
            raise AlreadyClaimed(claim)
        ticket = Ticket(
            key, number, token, fifo, [f"{fifo}:a:{number}", *([claim] if claim else [])]
        )
        ticket.heartbeat = asyncio.create_task(self._heartbeat(ticket))
        return ticket

    async def wait(
        self, ticket: Ticket, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Until every earlier ticket of the conversation is done (or its holder died)."""
        metrics.QUEUE_DEPTH.inc()
        try:
            await self._wait_turn(ticket.fifo, ticket, on_wait)
        finally:
            metrics.QUEUE_DEPTH.dec()

    async def release(self, ticket: Ticket) -> None:
        """Give the turn up (idempotent): the next ticket may go."""
        if ticket.released:
            return
        ticket.released = True
        # The heartbeat is stopped by a flag, not cancelled: a cancellation can be lost
        # inside a Redis call under load (asyncio.wait_for on Python 3.11), which would
        # leave us waiting here forever.
        ticket.stop.set()
        if ticket.heartbeat is not None:
            _done, late = await asyncio.wait({ticket.heartbeat}, timeout=5)
            for task in late:
                task.cancel()
        try:
            await self._leave(keys=[ticket.fifo], args=[ticket.number, self.queue_ttl_ms])
        except (RedisConnectionError, RedisTimeoutError):
            log.warning("could not release the turn of %s; its lease will expire", ticket.key)
        self._wake(ticket.fifo)

    @contextlib.asynccontextmanager
    async def turn(
        self,
        key: ConversationKey,
        *,
        on_wait: Callable[[], Awaitable[None]] | None = None,
        token: str | None = None,
        claim: str | None = None,
        ticket: Ticket | None = None,
    ) -> AsyncIterator[Ticket]:
        """Reserve (unless `ticket` was reserved already), wait for the turn, hold it while
        the body runs, release it."""
        if ticket is None:
            ticket = await self.reserve(key, token=token, claim=claim)
        try:
            await self.wait(ticket, on_wait)
            yield ticket
        finally:
            await self.release(ticket)

    async def _wait_turn(
        self, fifo: str, ticket: Ticket, on_wait: Callable[[], Awaitable[None]] | None
    ) -> None:
        delay = 0.01
        told = False
        while True:
            state = int(await self._turn(keys=[fifo], args=[ticket.number]))
            if state == 1:
                return
            if state == -1:
                # Our lease expired while waiting (Redis was away); we keep going rather
                # than lose the message, and say so in the log.
                log.warning("turn %d of %s was skipped while waiting", ticket.number, ticket.key)
                ticket.lost = True
                return
            if not told and on_wait is not None:
                told = True
                await on_wait()
            self._listen()
            event = self._wakeups.setdefault(fifo, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await event.wait()
            # Releases wake waiters at once (a Redis message reaches every process); the
            # poll is the safety net that notices a holder whose lease ran out.
            delay = min(delay * 2, 1.0)

    def _wake(self, fifo: str) -> None:
        event = self._wakeups.pop(fifo, None)
        if event is not None:
            event.set()

    def _listen(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._wake_listener(), name="teambot-wakeups")

    async def _wake_listener(self) -> None:
        """Turns "ticket released" messages from any process into local wake-ups."""
        pattern = f"{self.prefix}:q:*:wake"
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                backoff = 0.1
                async for message in pubsub.listen():
                    channel = str(message.get("channel", ""))
                    if channel.endswith(":wake"):
                        self._wake(channel[: -len(":wake")])
            except (RedisConnectionError, RedisTimeoutError) as error:
                log.warning("wake-up channel lost (%s); polling until it is back", error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Stop the wake-up listener and close the pool."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self.redis.aclose()

    async def _heartbeat(self, ticket: Ticket) -> None:
        leases = ticket.leases
        interval = self.lease_ms / 3000
        while True:
            try:
                async with asyncio.timeout(interval):
                    await ticket.stop.wait()
                return
            except TimeoutError:
                pass
            try:
                renewed = int(await self._renew(keys=leases, args=[ticket.token, self.lease_ms]))
            except (RedisConnectionError, RedisTimeoutError) as error:
                log.warning("heartbeat for %s failed: %s", ticket.key, error)
                continue
            if renewed < len(leases) and not ticket.lost:
                ticket.lost = True
                log.warning("lease of turn %d of %s was lost", ticket.number, ticket.key)

    # --- event dedupe ------------------------------------------------------------------

    def event_key(self, platform: str, event_id: str) -> str:
        return f"{self.prefix}:ev:{platform}:{event_id}"

    async def claim_event(self, platform: str, event_id: str, token: str) -> bool:
        """True if this process should handle the event. A claim is a lease: if the
        claimer dies before finishing, a redelivery can claim the event again."""
        return bool(
            await self.redis.set(
                self.event_key(platform, event_id), token, nx=True, px=self.lease_ms
            )
        )

    async def finish_event(self, platform: str, event_id: str, token: str) -> None:
        await self._finish_event(
            keys=[self.event_key(platform, event_id)], args=[token, self.dedupe_ttl]
        )

    async def release_event(self, platform: str, event_id: str, token: str) -> None:
        await self._release_event(keys=[self.event_key(platform, event_id)], args=[token])

    # --- on-demand summary cache ---------------------------------------------------------

    async def cached_summary(self, scope: ConversationKey) -> dict[str, Any] | None:
        raw = await self.redis.get(self._k("sum", scope))
        return cast(dict[str, Any], json.loads(raw)) if raw else None

    async def store_summary(self, scope: ConversationKey, value: dict[str, Any]) -> None:
        index = self._k("sumidx", scope.channel_key())
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._k("sum", scope), json.dumps(value), px=self.ttl_ms)
        pipe.sadd(index, str(scope))
        pipe.pexpire(index, self.ttl_ms)
        await pipe.execute()

    async def invalidate_summaries(self, key: ConversationKey) -> int:
        """Drop cached summaries that may contain a message of `key`'s channel."""
        index = self._k("sumidx", key.channel_key())
        scopes = cast(set[str], await self.redis.smembers(index))
        if not scopes:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        for scope in scopes:
            pipe.delete(self._k("sum", scope))
        pipe.delete(index)
        await pipe.execute()
        return len(scopes)

    # --- usage ledger ------------------------------------------------------------------

    def _usage_key(self, tenant: str, day: str | None = None) -> str:
        return f"{self.prefix}:u:{tenant}:{day or _day()}"

    async def record_usage(self, tenant: str, record: UsageRecord) -> None:
        key = self._usage_key(tenant)
        field = f"{record.route}|{record.model}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, f"{field}|in", record.input_tokens)
        pipe.hincrby(key, f"{field}|out", record.output_tokens)
        pipe.hincrby(key, f"{field}|calls", 1)
        pipe.hincrby(key, f"{field}|micro_usd", round(record.cost_usd * 1_000_000))
        pipe.expire(key, 40 * 24 * 3600)
        await pipe.execute()

    async def usage(self, tenant: str, day: str | None = None) -> list[UsageRecord]:
        raw = cast(dict[str, str], await self.redis.hgetall(self._usage_key(tenant, day)))
        rows: dict[tuple[str, str], dict[str, int]] = {}
        for name, value in raw.items():
            route, model, what = name.split("|")
            rows.setdefault((route, model), {})[what] = int(value)
        return [
            UsageRecord(
                route,
                model,
                values.get("in", 0),
                values.get("out", 0),
                values.get("micro_usd", 0) / 1_000_000,
            )
            for (route, model), values in sorted(rows.items())
        ]

    async def spent_today(self, tenant: str) -> float:
        return sum(record.cost_usd for record in await self.usage(tenant))

    # --- small caches --------------------------------------------------------------------

    async def cache_get(self, namespace: str, ident: str) -> str | None:
        value = await self.redis.get(f"{self.prefix}:c:{namespace}:{ident}")
        return None if value is None else str(value)

    async def cooldown(self, namespace: str, ident: str, seconds: float) -> float:
        """0.0 if `ident` may act now (and starts its cooldown), else the seconds left."""
        key = f"{self.prefix}:cd:{namespace}:{ident}"
        if await self.redis.set(key, "1", nx=True, px=max(1, int(seconds * 1000))):
            return 0.0
        left = await self.redis.pttl(key)
        return max(0.001, left / 1000) if left and left > 0 else 0.001

    async def cache_set(self, namespace: str, ident: str, value: str, ttl: int) -> None:
        await self.redis.set(f"{self.prefix}:c:{namespace}:{ident}", value, ex=ttl)
