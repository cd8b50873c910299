"""On-demand summaries with a cache: a scope asked again is summarized incrementally, on
top of the cached summary, and only when nothing it covered was edited or deleted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from core.channel_settings import SettingsStore
from core.failures import MEMORY_DOWN, BudgetExceeded, failure_message
from core.memory import History
from core.providers.base import ProviderError
from core.sink import CollectingSink, ReplySink
from core.store import RELEASE_IF_HELD, KeyedLocks, Store, honour_cancel
from core.summaries import (
    BrokenSummary,
    StructuredSummary,
    Summarizer,
    message_hash,
    render_markdown,
)
from core.types import ChatMessage, ConversationKey

__all__ = ["Summary", "SummaryMixin", "incremental"]

log = logging.getLogger(__name__)

#: How long one summary may hold its scope's lock, and how long another waits for it.
SUMMARY_LOCK_MS = 600_000
SUMMARY_LOCK_WAIT = 120.0


@dataclass(frozen=True, slots=True)
class Summary:
    """A summary as data: adapters render it in their own format (Block Kit, Discord
    Markdown, plain text); `markdown()` is the neutral form."""

    data: StructuredSummary
    title: str
    count: int  # messages it covers

    def markdown(self) -> str:
        return render_markdown(self.data, self.title)


class SummaryMixin:
    """The engine's summary API (needs `memory` and `summarizer`)."""

    memory: History
    channels: SettingsStore
    summary_locks: KeyedLocks
    store: Store

    def summarizer(self, tenant: str, language: str = "") -> Summarizer:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, scope: ConversationKey) -> AsyncIterator[None]:
        """One summary of `scope` at a time, in this process and across processes (a lock
        in Redis, in the scope's slot): the next asker then reuses what the first cached.
        A holder that died is waited for at most SUMMARY_LOCK_WAIT seconds."""
        async with self.summary_locks.hold(str(scope)):
            name = self.store.keys.of("sl", scope)
            token = secrets.token_hex(8)
            loop = asyncio.get_running_loop()
            give_up = loop.time() + SUMMARY_LOCK_WAIT
            held = False
            while True:
                honour_cancel()
                held = bool(await self.store.redis.set(name, token, nx=True, px=SUMMARY_LOCK_MS))
                if held or loop.time() >= give_up:
                    break
                await asyncio.sleep(0.2)
            try:
                yield
            finally:
                if held:
                    with contextlib.suppress(RedisError):
                        await self.store.redis.eval(RELEASE_IF_HELD, 1, name, token)

    async def summarize(
        self,
        scope: ConversationKey,
        messages: Sequence[ChatMessage],
        sink: ReplySink | None = None,
        *,
        heading: str | None = None,
        context: str | None = None,
        show: bool = True,
    ) -> Summary | None:
        """A structured Markdown summary of `messages` (oldest first) on the summary route.

        `scope` names what is summarized (a thread, a channel window); the result is
        cached with the last message it covers. Asked again, only messages after it are
        summarized, on top of the cached summary; `messages` may then be the whole scope
        again or just the newer ones. A changed or missing message inside the covered
        range starts over. Returns the summary (also shown in `sink` as Markdown unless
        `show` is False), or None after `sink.fail`."""
        sink = sink or CollectingSink()
        try:
            # One summary per scope at a time: a second asker (or a tool-call storm)
            # waits and then reuses what the first one cached.
            async with self._one_at_a_time(scope):
                language = (await self.channels.effective(scope)).summary_language
                cached = await self.memory.cached_summary(scope)
                if cached is not None and cached.get("language", "") != language:
                    cached = None  # the channel's summary language changed: start over
                previous, new, covered = incremental(cached, messages)
                count = len(covered) + len(new)
                if previous is not None and not new:
                    summary = previous
                else:
                    if not any(m.content.strip() for m in (*covered, *new)):
                        await sink.finish("There is nothing to summarize yet.")
                        return None
                    await sink.status(
                        f"Summarizing {len(new):,} message{'s' if len(new) != 1 else ''}…"
                    )
                    summarizer = self.summarizer(scope.tenant, language)
                    summary = await summarizer.summarize(new, previous, context)
                    hashes = {ident(m): message_hash(m) for m in (*covered, *new)}
                    last = new[-1] if new else covered[-1]
                    await self.memory.store_summary(
                        scope,
                        {
                            "summary": summary.model_dump(),
                            "hashes": hashes,
                            "last_id": ident(last),
                            "last_ts": last.ts,
                            "count": count,
                            "language": language,
                        },
                    )
        except (ProviderError, BudgetExceeded, BrokenSummary) as error:
            await sink.fail(failure_message(error))
            return None
        except RedisError as error:
            log.error("memory store failed during a summary: %s", error)
            await sink.fail(MEMORY_DOWN)
            return None
        title = heading or f"Summary of {count:,} message{'s' if count != 1 else ''}"
        result = Summary(summary, title, count)
        if show:
            await sink.finish(result.markdown())
        return result

    async def summarize_conversation(
        self, key: ConversationKey, sink: ReplySink | None = None
    ) -> str:
        """Summary of the conversation in memory (its rolling summary is the background)."""
        history = [m for m in await self.memory.history(key) if m.role != "tool"]
        rolling = await self.memory.rolling_summary(key)
        scope = ConversationKey(key.platform, key.workspace, key.channel, f"{key.thread}#memory")
        result = await self.summarize(
            scope, history, sink, context=rolling.text if rolling else None
        )
        return result.markdown() if result is not None else "There is nothing to summarize yet."

    async def invalidate_summaries(self, key: ConversationKey) -> None:
        """A message in `key`'s channel was edited or deleted: cached summaries that may
        quote it are dropped."""
        await self.memory.invalidate_summaries(key)


def ident(message: ChatMessage) -> str:
    """A message's id for the cache: the platform's, or (the bot's own answers, console
    messages) one made of its role and time, which memory keeps as they were."""
    return message.id or f"~{message.role}:{message.ts!r}"


def incremental(
    cached: dict[str, Any] | None, messages: Sequence[ChatMessage]
) -> tuple[StructuredSummary | None, list[ChatMessage], list[ChatMessage]]:
    """(previous summary or None, messages still to summarize, messages already covered)."""
    if not cached:
        return None, list(messages), []
    hashes: dict[str, str] = cached.get("hashes") or {}
    last_ts = float(cached.get("last_ts") or 0)
    covered = [m for m in messages if ident(m) in hashes]
    older = [m for m in messages if m.ts <= last_ts and ident(m) not in hashes]
    if older:
        return None, list(messages), []  # a message appeared inside the covered range
    if any(message_hash(m) != hashes[ident(m)] for m in covered):
        return None, list(messages), []  # a covered message was edited
    if covered:
        present = [ident(m) for m in messages if ident(m) in hashes]
        order = list(hashes)
        first = order.index(present[0])
        if order[first:] != present:
            return None, list(messages), []  # a covered message was deleted
    new = [m for m in messages if ident(m) not in hashes and m.ts > last_ts]
    previous = StructuredSummary.model_validate(cached["summary"])
    return previous, new, covered
