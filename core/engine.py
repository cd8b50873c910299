"""The engine: one reply or one summary, from a neutral event to a finished answer.

`Engine.reply(incoming, sink)`: dedupe the event → wait for the conversation's turn →
load history → fold what no longer fits into the rolling summary → stream the
dialogue route (tool calls dispatched and sent back) into the sink → append the turn
to memory → record usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import httpx
from redis.exceptions import RedisError

from core import metrics
from core.logs import bind
from core.memory import (
    AlreadyClaimed,
    KeyedLocks,
    Memory,
    RollingSummary,
    Ticket,
    UsageRecord,
    connect_redis,
)
from core.providers.base import (
    Finish,
    ModelRequest,
    ProviderError,
    Target,
    TextDelta,
    ToolCallEvent,
    Usage,
)
from core.router import Attempt, Router, request_tokens
from core.settings import Settings
from core.sink import CollectingSink, ReplySink
from core.summaries import (
    BrokenSummary,
    StructuredSummary,
    Summarizer,
    message_hash,
    render_markdown,
)
from core.tokens import estimate_text, split_for_budget
from core.tools import BUILTIN_TOOLS, ToolContext, ToolRegistry, run_tool_calls
from core.types import ChatMessage, ConversationKey, Incoming, MediaPart, Modality, ToolCall

if TYPE_CHECKING:
    from core.tools.mcp_servers import McpManager

__all__ = ["BudgetExceeded", "Engine", "Outcome", "Reservation", "UsageReport"]

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    ANSWERED = "answered"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A claimed event's place in its conversation's line (see `Engine.reserve`)."""

    ticket: Ticket
    platform: str
    event_id: str
    token: str


class BudgetExceeded(Exception):
    def __init__(self, spent: float, budget: float) -> None:
        super().__init__(f"daily budget reached: ${spent:.2f} of ${budget:.2f}")
        self.spent = spent
        self.budget = budget


@dataclass(frozen=True, slots=True)
class UsageReport:
    tenant: str
    day: str
    rows: list[UsageRecord]
    budget: float | None

    @property
    def total_cost(self) -> float:
        return sum(r.cost_usd for r in self.rows)

    def by_route(self, route: str) -> tuple[int, int, float]:
        rows = [r for r in self.rows if r.route == route]
        return (
            sum(r.input_tokens for r in rows),
            sum(r.output_tokens for r in rows),
            sum(r.cost_usd for r in rows),
        )

    def render(self) -> str:
        lines = [f"**Usage today ({self.day}, UTC)**"]
        for route in ("dialogue", "summary"):
            tokens_in, tokens_out, cost = self.by_route(route)
            lines.append(
                f"- {route.capitalize()}: {tokens_in:,} in / {tokens_out:,} out tokens, ${cost:.4f}"
            )
        total = f"- Total: ${self.total_cost:.4f}"
        if self.budget is not None:
            total += f" of a ${self.budget:.2f} daily budget"
        lines.append(total)
        return "\n".join(lines)


_MODALITY_BY_MIME: dict[str, Modality] = {"application/pdf": "pdf"}
_TEXT_MIMES = ("text/", "application/json", "application/xml", "application/x-yaml")
MAX_INLINE_TEXT = 200_000


def _modality(mime: str) -> Modality | None:
    if mime in _MODALITY_BY_MIME:
        return _MODALITY_BY_MIME[mime]
    top = mime.split("/", 1)[0]
    if top in ("image", "audio", "video"):
        return top  # type: ignore[return-value]
    return None


@dataclass
class _Turn:
    """What one dialogue turn produced."""

    messages: list[ChatMessage] = field(default_factory=list)
    shown: str = ""
    finish: str = "stop"


class Engine:
    def __init__(
        self,
        settings: Settings,
        memory: Memory,
        router: Router,
        tools: ToolRegistry,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.memory = memory
        self.router = router
        self.tools = tools
        self._http = http
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ordered = KeyedLocks()
        self._draining = False
        self.mcp: McpManager | None = None

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def start(cls, settings: Settings) -> Engine:
        """Open the process's one HTTP client and one Redis pool; connect to the MCP
        servers in the background."""
        settings.require("cometapi_api_key")
        mcp = None
        if settings.mcp_config is not None:  # the SDK is imported only when it is used
            from core.tools.mcp_servers import McpManager

            mcp = McpManager.from_settings(settings)  # a bad MCP_CONFIG stops start-up here
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.connect_timeout, read=None, write=30.0, pool=30.0
            ),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
        )
        redis = connect_redis(settings)
        memory = Memory(redis, settings)
        tools = ToolRegistry(BUILTIN_TOOLS)
        for module in settings.tool_modules:
            tools.load_module(module)
        router = Router.from_settings(settings, http)
        engine = cls(settings, memory, router, tools, http=http)
        if mcp is not None:
            tools.add_source(mcp)
            mcp.start()
            engine.mcp = mcp
        return engine

    async def close(self) -> None:
        if self.mcp is not None:
            await self.mcp.stop()
        if self._http is not None:
            await self._http.aclose()
        await self.memory.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- replies -----------------------------------------------------------------------

    def spawn(
        self, work: Coroutine[Any, Any, Any], *, name: str = "teambot-work"
    ) -> asyncio.Task[None] | None:
        """Run background work (a reply, a summary, a command) tracked for graceful
        shutdown; an exception it raises is logged, never lost. Returns None, without
        running it, once the engine is draining."""
        if self._draining:
            work.close()
            log.warning("shutting down: %s not started", name)
            return None
        task = asyncio.create_task(_guard(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def accepting(self) -> bool:
        """False once `drain()` started: adapters stop taking new events."""
        return not self._draining

    @property
    def in_flight(self) -> int:
        """How many spawned tasks are running."""
        return len(self._tasks)

    async def idle(self) -> None:
        """Wait until no spawned task is running (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def drain(self, grace: float = 20.0, *, stop_accepting: bool = True) -> int:
        """Stop taking work (unless `stop_accepting` is False), let the work in flight
        finish for up to `grace` seconds, then cancel the rest (a reply cancelled this
        way tells its user that the bot restarts). Returns how many were cancelled."""
        if stop_accepting:
            self._draining = True
        pending = set(self._tasks)
        if pending:
            log.info("draining %d task(s) in flight", len(pending))
            _done, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning(
                "%d task(s) were still running after %.0f s and were cancelled", len(pending), grace
            )
        return len(pending)

    def ordered(self, key: ConversationKey) -> contextlib.AbstractAsyncContextManager[None]:
        """An in-process FIFO section per conversation. An adapter that must await
        something (a Redis lookup) before `reserve()` does both inside it, so messages keep
        their arrival order up to the reservation."""
        return self._ordered.hold(str(key))

    async def reserve(self, key: ConversationKey, event_id: str) -> Reservation | None:
        """Claim the event and take the conversation's next place in line, in one step;
        None for a duplicate delivery. Adapters reserve as soon as an event arrives (before
        slow work like downloads or name lookups), then pass the reservation to `reply()`,
        so a conversation is answered in arrival order. An unused reservation must be
        given back with `abandon()`."""
        token = secrets.token_hex(8)
        try:
            ticket = await self.memory.reserve(
                key, token=token, claim=self.memory.event_key(key.platform, event_id)
            )
        except AlreadyClaimed:
            log.info("duplicate event %s ignored", event_id)
            metrics.REPLIES.labels(key.platform, Outcome.DUPLICATE).inc()
            return None
        return Reservation(ticket, key.platform, event_id, token)

    async def wait_turn(
        self, reservation: Reservation, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Wait until every earlier message of the conversation is answered. Adapters that
        limit how much work runs at once wait here first, then take a slot, so a slot is
        never held by a message waiting behind one that has no slot."""
        await self.memory.wait(reservation.ticket, on_wait)

    async def abandon(self, reservation: Reservation, *, handled: bool = True) -> None:
        """Give back a reservation that will not be answered. `handled`: the user was told
        something, so a redelivery of the event is a duplicate; otherwise a redelivery
        will be answered."""
        await self.memory.release(reservation.ticket)
        with contextlib.suppress(RedisError):
            if handled:
                await self.memory.finish_event(
                    reservation.platform, reservation.event_id, reservation.token
                )
            else:
                await self.memory.release_event(
                    reservation.platform, reservation.event_id, reservation.token
                )

    async def reply(
        self, incoming: Incoming, sink: ReplySink, *, reservation: Reservation | None = None
    ) -> Outcome:
        """Answer one message. Always ends the sink with `finish` or `fail`, except for
        a duplicate delivery, which is ignored. `reservation` is the place in line taken
        with `reserve()` when the event arrived (taken here otherwise)."""
        platform = incoming.key.platform
        bind(conversation=str(incoming.key), event_id=incoming.event_id, platform=platform)
        delivered = False
        outcome = Outcome.FAILED
        timed = _TimedSink(sink)
        metrics.INFLIGHT.inc()
        token = reservation.token if reservation else secrets.token_hex(8)
        try:
            async with self.memory.turn(
                incoming.key,
                token=token,
                claim=self.memory.event_key(platform, incoming.event_id),
                ticket=reservation.ticket if reservation else None,
                on_wait=lambda: sink.status("Waiting for my answer to the previous message…"),
            ):
                timed.start()
                outcome = await self._answer(incoming, timed)
                delivered = True
        except AlreadyClaimed:
            log.info("duplicate event ignored")
            outcome = Outcome.DUPLICATE
        except asyncio.CancelledError:
            log.warning("reply cancelled (shutting down)")
            delivered = await _safe_fail(sink, RESTARTING, shielded=True)
            raise
        except RedisError as error:
            log.error("memory store failed while answering: %s", error)
            metrics.ERRORS.labels("memory").inc()
            delivered = await _safe_fail(sink, MEMORY_DOWN)
        except Exception:
            error_id = secrets.token_hex(3)
            log.exception("unexpected error while answering (error id %s)", error_id)
            metrics.ERRORS.labels("internal").inc()
            delivered = await _safe_fail(
                sink,
                f"Something went wrong on my side while answering (error {error_id}). "
                "Please try again.",
            )
        finally:
            metrics.INFLIGHT.dec()
            metrics.REPLIES.labels(platform, outcome).inc()
            timed.observe(platform)
            log.info("reply %s", outcome, extra=timed.fields())
            if outcome is not Outcome.DUPLICATE:
                # Answered or told why not: a redelivery is a duplicate. Nothing reached
                # the user: release the claim so a redelivery is answered.
                event = incoming.event_id
                with contextlib.suppress(RedisError):
                    if delivered:
                        await self.memory.finish_event(platform, event, token)
                    else:
                        await self.memory.release_event(platform, event, token)
        return outcome

    async def _answer(self, incoming: Incoming, sink: ReplySink) -> Outcome:
        key = incoming.key
        user_message, notes = await self._user_message(incoming)
        history, rolling = await self._fitted_history(key)
        system = self._system_prompt(rolling)
        context = ToolContext(
            key=key,
            author=incoming.author,
            summarize=lambda: self.summarize_conversation(key),
        )
        turn = _Turn()
        try:
            await self._converse(key, system, [*history, user_message], sink, context, turn)
        except (ProviderError, BudgetExceeded, BrokenSummary) as error:
            metrics.ERRORS.labels(_error_class(error)).inc()
            await self.memory.append(key, [user_message, *turn.messages])
            await sink.fail(failure_message(error))
            return Outcome.FAILED
        final = turn.shown
        if turn.finish == "length":
            final += "\n\n_(The answer was cut off at the length limit.)_"
        elif turn.finish == "content_filter" and not final.strip():
            final = "The model declined to answer this message."
        if notes:
            final += "\n\n" + "\n".join(f"_{note}_" for note in notes)
        added = [user_message, *turn.messages]
        await self.memory.append(key, added)
        await sink.finish(final)
        # Fold now, while the user reads the answer, so the next turn starts within budget.
        await self._fold_if_needed(key, [*history, *(m.for_storage() for m in added)], rolling)
        return Outcome.ANSWERED

    async def _user_message(self, incoming: Incoming) -> tuple[ChatMessage, list[str]]:
        parts: list[MediaPart] = []
        notes: list[str] = []
        inline: list[str] = []
        limit = self.settings.max_attachment_bytes
        for attachment in incoming.attachments:
            kind = _modality(attachment.mime)
            is_text = attachment.mime.startswith(_TEXT_MIMES)
            if kind is None and not is_text:
                notes.append(f"I can't read {attachment.name} ({attachment.mime} files).")
                continue
            max_size = MAX_INLINE_TEXT if is_text else limit
            if attachment.size > max_size:
                notes.append(
                    f"I skipped {attachment.name}: it is {attachment.size / 1e6:.1f} MB, "
                    f"over my {max_size / 1e6:.1f} MB limit."
                )
                continue
            try:
                data = await attachment.fetch()
            except Exception as error:
                log.warning("could not download %s: %s", attachment.name, error)
                notes.append(f"I couldn't download {attachment.name}.")
                continue
            if len(data) > max_size:
                notes.append(f"I skipped {attachment.name}: it is over my size limit.")
                continue
            if is_text:
                inline.append(
                    f"\n\n--- {attachment.name} ---\n{data.decode('utf-8', 'replace')}\n---"
                )
            elif kind is not None:
                parts.append(
                    MediaPart(kind=kind, mime=attachment.mime, data=data, name=attachment.name)
                )
        text = incoming.text + "".join(inline)
        if notes:
            text += "\n" + " ".join(f"[{note}]" for note in notes)
        message = ChatMessage.user(
            text,
            incoming.author.name,
            id=incoming.message_id or incoming.event_id,
            ts=incoming.ts,
            parts=parts,
        )
        return message, notes

    def _system_prompt(self, rolling: RollingSummary | None) -> str:
        prompt = self.settings.system_prompt
        if rolling is not None and rolling.text.strip():
            prompt += (
                "\n\nMemory of the earlier part of this conversation (older messages were "
                f"condensed into it):\n{rolling.text.strip()}"
            )
        return prompt

    async def _converse(
        self,
        key: ConversationKey,
        system: str,
        messages: list[ChatMessage],
        sink: ReplySink,
        context: ToolContext,
        turn: _Turn,
    ) -> None:
        specs = self.tools.specs()
        rounds = self.settings.max_tool_rounds
        for round_number in range(rounds + 1):
            last = round_number == rounds
            request = ModelRequest(
                system=system,
                messages=[*messages, *turn.messages],
                tools=specs,
                tool_choice="none" if last or not specs else "auto",
                max_output_tokens=self.settings.dialogue_max_output_tokens,
                thinking_level=self.settings.dialogue_thinking_level,
            )
            text, calls, finish = await self._stream(
                "dialogue", request, key.tenant, sink, shown=turn.shown
            )
            turn.shown += text
            turn.finish = finish
            if not calls or last:
                turn.messages.append(ChatMessage.assistant(text))
                return
            turn.messages.append(ChatMessage.assistant(text, calls))
            names = ", ".join(dict.fromkeys(call.name for call in calls))
            await sink.status(f"Using {names}…")
            turn.messages.extend(
                await run_tool_calls(
                    calls,
                    self.tools,
                    context,
                    time_limit=self.settings.tool_timeout_seconds,
                    max_chars=self.settings.tool_result_max_chars,
                )
            )
            if turn.shown and not turn.shown.endswith("\n"):
                turn.shown += "\n\n"
                await sink.append("\n\n")

    async def _stream(
        self,
        route: str,
        request: ModelRequest,
        tenant: str,
        sink: ReplySink | None,
        *,
        shown: str = "",
    ) -> tuple[str, list[ToolCall], str]:
        """One model call along a route, streamed into `sink`, with budget check and usage
        accounting. Returns (text, tool calls, finish reason)."""
        await self._check_budget(tenant, route, request)
        text: list[str] = []
        calls: list[ToolCall] = []
        usage: Usage | None = None
        finish = "stop"
        target: Target | None = None
        async with contextlib.aclosing(self.router.stream(route, request)) as events:
            async for event in events:
                if isinstance(event, Attempt):
                    target = event.target
                    if event.restart:
                        text.clear()
                        calls.clear()
                        if sink is not None:
                            await sink.reset()
                            if shown:
                                await sink.append(shown)
                elif isinstance(event, TextDelta):
                    text.append(event.text)
                    if sink is not None:
                        await sink.append(event.text)
                elif isinstance(event, ToolCallEvent):
                    calls.append(event.call)
                elif isinstance(event, Usage):
                    usage = event
                elif isinstance(event, Finish):
                    finish = event.reason
        assert target is not None
        joined = "".join(text)
        if usage is None:
            usage = Usage(request_tokens(request), estimate_text(joined))
        await self._record(tenant, route, target, usage)
        return joined, calls, finish

    async def _check_budget(self, tenant: str, route: str, request: ModelRequest) -> None:
        budget = self.settings.daily_budget_usd
        if budget is None:
            return
        spent = await self.memory.spent_today(tenant)
        first = self.router.routes[route][0]
        if spent + first.cost(request_tokens(request), 0) > budget:
            raise BudgetExceeded(spent, budget)

    async def _record(self, tenant: str, route: str, target: Target, usage: Usage) -> None:
        cost = target.cost(usage.input_tokens, usage.output_tokens)
        record = UsageRecord(route, target.model, usage.input_tokens, usage.output_tokens, cost)
        metrics.TOKENS.labels(route, target.model, "input").inc(usage.input_tokens)
        metrics.TOKENS.labels(route, target.model, "output").inc(usage.output_tokens)
        metrics.COST_USD.labels(route, target.model).inc(cost)
        try:
            await self.memory.record_usage(tenant, record)
        except RedisError as error:
            log.warning("could not record usage: %s", error)

    # --- history budget ------------------------------------------------------------------

    async def _fitted_history(
        self, key: ConversationKey
    ) -> tuple[list[ChatMessage], RollingSummary | None]:
        """History and rolling summary, folded first if they outgrew the budget."""
        history, rolling = await self.memory.history_and_summary(key)
        return await self._fold_if_needed(key, history, rolling)

    async def _fold_if_needed(
        self, key: ConversationKey, history: list[ChatMessage], rolling: RollingSummary | None
    ) -> tuple[list[ChatMessage], RollingSummary | None]:
        """Fold the oldest history into the rolling summary once it outgrows the budget.
        If the summary route fails, history is kept whole (never silently cut)."""
        budget = self.settings.history_token_budget
        target = int(budget * self.settings.history_fold_ratio)
        fold, keep = split_for_budget(history, budget, target)
        if not fold:
            return history, rolling
        try:
            text = await self.summarizer(key.tenant).fold(rolling.text if rolling else None, fold)
        except (ProviderError, BudgetExceeded, BrokenSummary) as error:
            log.warning("could not fold history of %s: %s", key, error)
            return history, rolling
        summary = RollingSummary(
            text=text,
            folded=(rolling.folded if rolling else 0) + len(fold),
            upto_ts=fold[-1].ts,
        )
        if not await self.memory.fold(key, fold[0], len(fold), summary):
            log.info("history of %s changed while folding; will fold next time", key)
            return history, rolling
        return keep, summary

    # --- summaries -----------------------------------------------------------------------

    def summarizer(self, tenant: str) -> Summarizer:
        """A summarizer whose model calls are budgeted and billed to `tenant`."""

        async def call(request: ModelRequest) -> str:
            text, _calls, _finish = await self._stream("summary", request, tenant, None)
            return text

        return Summarizer(
            call,
            chunk_tokens=self.settings.summary_chunk_tokens,
            max_output_tokens=self.settings.summary_max_output_tokens,
            thinking_level=self.settings.summary_thinking_level,
            bot_name=self.settings.bot_name,
        )

    async def summarize(
        self,
        scope: ConversationKey,
        messages: Sequence[ChatMessage],
        sink: ReplySink | None = None,
        *,
        heading: str | None = None,
        context: str | None = None,
    ) -> str | None:
        """A structured Markdown summary of `messages` (oldest first) on the summary route.

        `scope` names what is summarized (a thread, a channel window); the result is
        cached with the last message it covers. Asked again, only messages after it are
        summarized, on top of the cached summary; `messages` may then be the whole scope
        again or just the newer ones. A changed or missing message inside the covered
        range starts over. Returns the Markdown, or None after `sink.fail`."""
        sink = sink or CollectingSink()
        try:
            cached = await self.memory.cached_summary(scope)
            previous, new, covered = _incremental(cached, messages)
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
                summary = await self.summarizer(scope.tenant).summarize(new, previous, context)
                hashes = {m.id: message_hash(m) for m in (*covered, *new) if m.id}
                last = new[-1] if new else covered[-1]
                await self.memory.store_summary(
                    scope,
                    {
                        "summary": summary.model_dump(),
                        "hashes": hashes,
                        "last_id": last.id,
                        "last_ts": last.ts,
                        "count": count,
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
        markdown = render_markdown(summary, title)
        await sink.finish(markdown)
        return markdown

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
        return result or "There is nothing to summarize yet."

    async def invalidate_summaries(self, key: ConversationKey) -> None:
        """A message in `key`'s channel was edited or deleted: cached summaries that may
        quote it are dropped."""
        await self.memory.invalidate_summaries(key)

    # --- the rest of the public API -----------------------------------------------------------

    async def forget(self, key: ConversationKey) -> None:
        await self.memory.forget(key)
        await self.memory.invalidate_summaries(key)

    async def forget_channel(self, key: ConversationKey) -> int:
        """Erase every conversation in `key`'s channel; returns how many were erased."""
        erased = await self.memory.forget_channel(key)
        await self.memory.invalidate_summaries(key)
        return erased

    @property
    def http(self) -> httpx.AsyncClient:
        """The process's shared HTTP client (adapters use it to download attachments)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
        return self._http

    async def usage(self, tenant: str) -> UsageReport:
        from core.memory import _day

        return UsageReport(
            tenant, _day(), await self.memory.usage(tenant), self.settings.daily_budget_usd
        )

    async def once(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen (for actions other than replies, which
        dedupe themselves)."""
        token = secrets.token_hex(8)
        if not await self.memory.claim_event(platform, event_id, token):
            return False
        await self.memory.finish_event(platform, event_id, token)
        return True

    async def cache_get(self, namespace: str, ident: str) -> str | None:
        """A small shared cache (e.g. display names), kept in Redis."""
        return await self.memory.cache_get(namespace, ident)

    async def cache_set(self, namespace: str, ident: str, value: str, ttl: int = 86_400) -> None:
        await self.memory.cache_set(namespace, ident, value, ttl)

    async def cooldown(self, namespace: str, ident: str, seconds: float) -> float:
        """Per-user rate limiting shared by all processes: 0.0 if `ident` may act now (its
        cooldown starts), otherwise the seconds it still has to wait."""
        if seconds <= 0:
            return 0.0
        return await self.memory.cooldown(namespace, ident, seconds)

    async def ready(self) -> bool:
        """Can the engine serve? (Redis answers within two seconds.)"""
        try:
            async with asyncio.timeout(2):
                return await self.memory.ping()
        except (RedisError, TimeoutError):
            return False

    async def needs_import(self, key: ConversationKey) -> bool:
        return await self.memory.needs_import(key)

    async def import_history(self, key: ConversationKey, messages: Sequence[ChatMessage]) -> bool:
        return await self.memory.import_history(key, messages)


def _incremental(
    cached: dict[str, Any] | None, messages: Sequence[ChatMessage]
) -> tuple[StructuredSummary | None, list[ChatMessage], list[ChatMessage]]:
    """(previous summary or None, messages still to summarize, messages already covered)."""
    if not cached:
        return None, list(messages), []
    hashes: dict[str, str] = cached.get("hashes") or {}
    last_ts = float(cached.get("last_ts") or 0)
    covered = [m for m in messages if m.id in hashes]
    older = [m for m in messages if m.ts <= last_ts and m.id not in hashes]
    if older:
        return None, list(messages), []  # a message appeared inside the covered range
    if any(message_hash(m) != hashes[m.id] for m in covered if m.id):
        return None, list(messages), []  # a covered message was edited
    if covered:
        present = [m.id for m in messages if m.id in hashes]
        order = list(hashes)
        first = order.index(present[0])
        if order[first:] != present:
            return None, list(messages), []  # a covered message was deleted
    new = [m for m in messages if m.id not in hashes and m.ts > last_ts]
    previous = StructuredSummary.model_validate(cached["summary"])
    return previous, new, covered


RESTARTING = "I'm restarting, so I couldn't finish this answer. Please send your message again."

MEMORY_DOWN = (
    "I can't reach my memory store right now, so I couldn't answer. Please try again in a minute."
)


def _error_class(error: Exception) -> str:
    if isinstance(error, ProviderError):
        return f"model_{error.category}"
    if isinstance(error, BudgetExceeded):
        return "budget"
    return "summary_unreadable"


def failure_message(error: Exception) -> str:
    """One plain sentence or two for the user."""
    if isinstance(error, BudgetExceeded):
        return (
            f"This workspace has used its daily AI budget (${error.spent:.2f} of "
            f"${error.budget:.2f}). It resets at midnight UTC."
        )
    if isinstance(error, BrokenSummary):
        return "The summary model returned something I couldn't read. Please try again."
    assert isinstance(error, ProviderError)
    category = error.category
    if category == "auth":
        return (
            "The AI service refused my API key, so I can't answer. "
            "An admin should check COMETAPI_API_KEY."
        )
    if category == "too_large":
        return (
            "This is more than my models can read at once. "
            "Try a shorter request or start a new thread."
        )
    if category == "unsupported_media":
        return "None of my models can read that kind of file."
    if category in ("blocked",):
        return "The model declined to answer this message."
    if category == "bad_request":
        return (
            "The AI service rejected the request. Please rephrase it; if this keeps "
            "happening, tell an admin."
        )
    if category == "quota":
        return "The AI service's quota is used up, so I can't answer right now."
    return "The AI service isn't answering right now. Please try again in a minute."


async def _guard(work: Coroutine[Any, Any, Any], name: str) -> None:
    try:
        await work
    except asyncio.CancelledError:
        log.warning("%s was cancelled", name)
        raise
    except Exception:
        log.exception("%s failed", name)


async def _safe_fail(sink: ReplySink, message: str, *, shielded: bool = False) -> bool:
    """Deliver a failure message; False if even that failed. `shielded` lets it finish
    while the reply is being cancelled (shutdown), within a few seconds."""
    try:
        if shielded:
            await asyncio.wait_for(asyncio.shield(sink.fail(message)), timeout=5)
        else:
            await sink.fail(message)
    except (Exception, asyncio.CancelledError):
        log.exception("could not deliver the failure message either")
        return False
    return True


class _TimedSink:
    """Passes everything through; measures time to first text and to the end."""

    def __init__(self, inner: ReplySink) -> None:
        self.inner = inner
        self.started: float | None = None
        self.first: float | None = None
        self.ended: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()

    def fields(self) -> dict[str, float]:
        """Timings for the log line of this reply, in milliseconds."""
        if self.started is None:
            return {}
        out = {}
        if self.first is not None:
            out["first_text_ms"] = round((self.first - self.started) * 1000, 1)
        if self.ended is not None:
            out["answer_ms"] = round((self.ended - self.started) * 1000, 1)
        return out

    def observe(self, platform: str) -> None:
        if self.started is None:
            return
        if self.first is not None:
            metrics.FIRST_TOKEN_SECONDS.labels(platform).observe(self.first - self.started)
        if self.ended is not None:
            metrics.ANSWER_SECONDS.labels(platform).observe(self.ended - self.started)

    async def status(self, text: str) -> None:
        await self.inner.status(text)

    async def append(self, delta: str) -> None:
        if self.first is None:
            self.first = time.monotonic()
        await self.inner.append(delta)

    async def reset(self) -> None:
        await self.inner.reset()

    async def finish(self, text: str) -> None:
        self.ended = time.monotonic()
        await self.inner.finish(text)

    async def fail(self, message: str) -> None:
        self.ended = time.monotonic()
        await self.inner.fail(message)
