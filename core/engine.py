"""The reply pipeline: one answer to one admitted message, from its turn to the answer.

`Engine.answer(incoming, sink, ticket)` (the turn is held): load history → fold what no
longer fits into the rolling summary → stream the dialogue route (tool calls dispatched
and sent back) into the sink → append the turn to memory (only while the turn's lease
is ours) → record usage. Admission (dedupe, whether to answer, the place in line, slots,
backfill, commands) is `core.intake`'s; `Engine.reply` is the short way for one message
(admit, wait, answer) used by scripts and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from redis.exceptions import RedisError

from core import metrics
from core.approval_flow import ApprovalMixin, Asking
from core.attachments import UserMessage, user_message
from core.budget import Budget
from core.channel_settings import Effective, SettingsStore
from core.failures import (
    LOST_TURN,
    MEMORY_DOWN,
    RESTARTING,
    BudgetExceeded,
    error_class,
    failure_message,
    fenced,
    guard,
    oops,
    safe_fail,
)
from core.feedback import AnswerMeta, Feedback
from core.ledger import Ledger, UsageReport, utc_day
from core.logs import bind
from core.memory import History, RollingSummary
from core.model_calls import ModelCallsMixin, Turn
from core.providers.base import (
    ModelRequest,
    ProviderError,
)
from core.queue import Admission, LeaseLost, Line, Ticket
from core.ratelimit import UserRateLimit
from core.router import Router
from core.settings import Settings
from core.sink import ReplySink, TimedSink
from core.store import KeyedLocks, Store, connect_store
from core.summaries import BrokenSummary
from core.summary_cache import SummaryMixin
from core.tools import BUILTIN_TOOLS, ToolContext, ToolRegistry
from core.tools.approval import Approvals, PausedTurn
from core.tools.approval import Outcome as Decided
from core.tools.bounds import ToolBounds
from core.types import ChatMessage, ConversationKey, Incoming

if TYPE_CHECKING:
    from core.knowledge import Knowledge
    from core.tools.mcp_servers import McpManager

__all__ = ["BudgetExceeded", "Engine", "Outcome", "UsageReport"]

log = logging.getLogger(__name__)

T = TypeVar("T")

WAITING = "Waiting for my answer to the previous message…"
STOPPED = "_(stopped)_"
SWITCHED_OFF = "Not run: this tool is switched off in this channel. Answer without it."


class Outcome(StrEnum):
    ANSWERED = "answered"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    STOPPED = "stopped"


class Engine(ModelCallsMixin, SummaryMixin, ApprovalMixin):
    def __init__(
        self,
        settings: Settings,
        store: Store,
        router: Router,
        tools: ToolRegistry,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.memory = History(store, settings)
        self.line = Line(store, settings)
        self.ledger = Ledger(store, settings)
        self.rate_limit = UserRateLimit(store, settings.user_rate_limit)
        self.summary_locks = KeyedLocks()
        # Summaries and other slow commands: their own pool, apart from replies.
        self.slow_slots = asyncio.Semaphore(settings.summary_concurrency)
        self.budget = Budget(store, settings)
        self.approvals = Approvals(store, self.line, settings)
        self.feedback = Feedback(store, settings)
        self._settling: set[asyncio.Task[None]] = set()
        self.channels = SettingsStore(store, settings)
        self.router = router
        self.tools = tools
        self._http = http
        self._tasks: set[asyncio.Task[Any]] = set()
        self._draining = False
        self.mcp: McpManager | None = None
        self._knowledge: Knowledge | None = None

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
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=30.0,
                pool=30.0,
            ),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
        )
        store = await connect_store(settings)
        tools = ToolRegistry(BUILTIN_TOOLS)
        for module in settings.tool_modules:
            tools.load_module(module)
        router = Router.from_settings(settings, http)
        engine = cls(settings, store, router, tools, http=http)
        if mcp is not None:
            tools.add_source(mcp)
            mcp.start()
            engine.mcp = mcp
        return engine

    @property
    def knowledge(self) -> Knowledge:
        """History search and scheduled recaps (`core.knowledge`), made on first use."""
        if self._knowledge is None:
            from core.knowledge import Knowledge

            self._knowledge = Knowledge(self)
        return self._knowledge

    @knowledge.setter
    def knowledge(self, knowledge: Knowledge) -> None:
        self._knowledge = knowledge

    async def close(self) -> None:
        if self._knowledge is not None:
            await self._knowledge.stop()
        if self.mcp is not None:
            await self.mcp.stop()
        if self._settling:  # usage of cancelled calls still being recorded
            await asyncio.wait(set(self._settling), timeout=2.0)
        if self._http is not None:
            await self._http.aclose()
        await self.line.close()
        await self.store.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        task = asyncio.create_task(guard(work, name), name=name)
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        pending = set(self._tasks)
        if pending:
            log.info("draining %d task(s) in flight", len(pending))
        # Work in flight may start more (a command hands its answer to the intake): wait
        # for those too, within the same grace.
        while pending and loop.time() < deadline:
            await asyncio.wait(pending, timeout=deadline - loop.time())
            pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning(
                "%d task(s) were still running after %.0f s and were cancelled", len(pending), grace
            )
        return len(pending)

    # --- replies -----------------------------------------------------------------------

    async def reply(self, incoming: Incoming, sink: ReplySink) -> Outcome:
        """Admit one message, wait for its turn and answer it (scripts and tests; adapters
        go through `core.intake.Intake`). A duplicate delivery is ignored."""
        try:
            admitted = await self.line.admit(
                incoming.key,
                incoming.event_id,
                incoming.place,
                addressed=True,
                follow=incoming.follow,
            )
        except RedisError as error:
            log.error("memory store failed while admitting a message: %s", error)
            await safe_fail(sink, MEMORY_DOWN)
            return Outcome.FAILED
        if isinstance(admitted, Admission):
            log.info("duplicate event %s ignored", incoming.event_id)
            metrics.REPLIES.labels(incoming.key.platform, Outcome.DUPLICATE).inc()
            return Outcome.DUPLICATE
        try:
            try:
                await self.line.wait(admitted, on_wait=lambda: sink.status(WAITING))
            except LeaseLost:
                return Outcome.DUPLICATE  # another process took the event over
            return await self.answer(incoming, sink, admitted)
        finally:
            await self.line.leave(admitted)
            await self.line.done(admitted, handled=False)  # no-op once answered

    async def answer(
        self,
        incoming: Incoming,
        sink: ReplySink,
        ticket: Ticket,
        *,
        resume: tuple[PausedTurn, Decided, str | None] | None = None,
    ) -> Outcome:
        """Answer `incoming`, whose turn `ticket` holds. Always ends the sink with `finish`
        or `fail`. If the turn's lease is lost meanwhile, the answer stops at once, writes
        nothing to memory and says so in one line. `resume`: finish a turn that was paused
        for approval (by another process), with the person's decision."""
        platform = incoming.key.platform
        bind(conversation=str(incoming.key), event_id=incoming.event_id, platform=platform)
        delivered = False
        outcome = Outcome.FAILED
        timed = TimedSink(sink)
        turn = Turn()
        metrics.INFLIGHT.inc()
        try:
            timed.start()
            outcome = await fenced(self._stoppable(incoming, timed, ticket, resume, turn), ticket)
            delivered = True
        except LeaseLost:
            metrics.ERRORS.labels("lease_lost").inc()
            delivered = await safe_fail(sink, LOST_TURN)
        except asyncio.CancelledError:
            if ticket.paused:  # waiting for approval: another process will finish it
                log.warning("reply paused for approval, left for another process")
                delivered = True
                raise
            log.warning("reply cancelled (shutting down)")
            delivered = await safe_fail(sink, RESTARTING, shielded=True)
            raise
        except RedisError as error:
            log.error("memory store failed while answering: %s", error)
            metrics.ERRORS.labels("memory").inc()
            delivered = await safe_fail(sink, MEMORY_DOWN)
        except Exception:
            error_id = secrets.token_hex(3)
            log.exception("unexpected error while answering (error id %s)", error_id)
            metrics.ERRORS.labels("internal").inc()
            delivered = await safe_fail(sink, oops(error_id))
        finally:
            metrics.INFLIGHT.dec()
            metrics.REPLIES.labels(platform, outcome).inc()
            timed.observe(platform)
            log.info("reply %s", outcome, extra=timed.fields())
            # Answered or told why not: a redelivery is a duplicate. Nothing reached the
            # user: the claim is released so a redelivery is answered.
            await self.line.done(ticket, handled=delivered)
        return outcome

    async def _stoppable(
        self,
        incoming: Incoming,
        sink: TimedSink,
        ticket: Ticket,
        resume: tuple[PausedTurn, Decided, str | None] | None,
        turn: Turn,
    ) -> Outcome:
        """The answer, unless someone stops it (Stop, `stop`, Ctrl-C): then the model call
        is cancelled at once, the text shown so far ends with "(stopped)" and is kept in
        memory marked as stopped, and the next message goes."""
        work = asyncio.ensure_future(self._answer(incoming, sink, ticket, resume, turn))
        ended = asyncio.Event()
        stop = asyncio.ensure_future(self.line.stop_requested(ticket, ended))
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            raise
        finally:
            ended.set()
            stop.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        log.info("answer stopped on request")
        if ticket.paused:  # stopped while a person was asked to approve a tool call
            ticket.paused = False
            await self.line.unpause(ticket)
        shown = sink.text.rstrip()
        if turn.message is not None:
            kept = f"{shown}\n\n(stopped by the user here)" if shown else "(stopped by the user)"
            await self.memory.append(
                incoming.key, [turn.message, ChatMessage.assistant(kept)], fence=ticket
            )
        await sink.finish(f"{shown}\n\n{STOPPED}" if shown else STOPPED)
        return Outcome.STOPPED

    async def _answer(
        self,
        incoming: Incoming,
        sink: ReplySink,
        ticket: Ticket,
        resume: tuple[PausedTurn, Decided, str | None] | None,
        turn: Turn,
    ) -> Outcome:
        key = incoming.key
        effective = await self.channels.effective(key)
        context = ToolContext(
            key=key,
            author=incoming.author,
            summarize=lambda: self.summarize_conversation(key),
        )
        start = 0
        if resume is None:
            built = await user_message(incoming, self.settings)
            message, notes = built.message, built.notes
        else:
            paused, decided, by = resume
            message, notes = paused.user_message, []
            built = UserMessage(message)
            turn.messages = list(paused.turn_messages)
            turn.messages += await self._settled(
                paused.calls, set(paused.needing), decided, by, context
            )
            start = paused.round_number + 1
        turn.message = message
        history, rolling = await self._fitted_history(key)
        system = self._system_prompt(rolling, effective)
        asking = Asking(incoming, message, ticket)
        try:
            await self._converse(
                key, system, [*history, message], sink, context, turn, start, asking, effective
            )
        except (ProviderError, BudgetExceeded, BrokenSummary) as error:
            metrics.ERRORS.labels(error_class(error)).inc()
            await self.memory.append(key, [message, *turn.messages], fence=ticket)
            await sink.fail(failure_message(error))
            return Outcome.FAILED
        stored = await self._for_memory(built, key.tenant)
        final = turn.shown
        if turn.finish == "length":
            final += "\n\n_(The answer was cut off at the length limit.)_"
        elif turn.finish == "content_filter" and not final.strip():
            final = "The model declined to answer this message."
        if notes:
            final += "\n\n" + "\n".join(f"_{note}_" for note in notes)
        added = [stored, *turn.messages]
        await self.memory.append(key, added, fence=ticket)
        answer_id = await self._offer_feedback(incoming, sink, turn)
        await sink.finish(final)
        if answer_id is not None:
            await self._answered(incoming, sink, turn, answer_id)
        # Fold now, while the user reads the answer, so the next turn starts within budget.
        await self._fold_if_needed(key, [*history, *(m.for_storage() for m in added)], rolling)
        return Outcome.ANSWERED

    async def _offer_feedback(self, incoming: Incoming, sink: ReplySink, turn: Turn) -> str | None:
        """A sink that shows 👍/👎 (`offer_feedback(answer_id)`) gets the answer's id
        before its final text goes out."""
        offer = getattr(sink, "offer_feedback", None)
        if offer is None:
            return None
        answer_id = secrets.token_hex(8)
        offer(answer_id)
        return answer_id

    async def _answered(
        self, incoming: Incoming, sink: TimedSink | ReplySink, turn: Turn, answer_id: str
    ) -> None:
        started = getattr(sink, "started", None)
        latency = (time.monotonic() - started) * 1000 if started else 0.0
        meta = AnswerMeta(
            answer_id=answer_id,
            tenant=incoming.key.tenant,
            conversation=str(incoming.key),
            route="dialogue",
            model=turn.model,
            platform=incoming.key.platform,
            latency_ms=max(0.0, latency),
            tools=tuple(dict.fromkeys(turn.tools)),
            message_id=incoming.event_id,
        )
        try:
            await self.feedback.answered(meta)
        except RedisError as error:
            log.warning("could not keep what produced answer %s: %s", answer_id, error)

    def _system_prompt(
        self, rolling: RollingSummary | None, effective: Effective | None = None
    ) -> str:
        prompt = self.settings.system_prompt
        if effective is not None and effective.instructions:
            prompt += f"\n\nInstructions for this channel:\n{effective.instructions}"
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
        turn: Turn,
        start: int = 0,
        asking: Asking | None = None,
        effective: Effective | None = None,
    ) -> None:
        specs = self.tools.specs()
        route = "dialogue"
        if effective is not None:
            specs = [spec for spec in specs if effective.tool_allowed(spec.name)]
            if effective.model != self.settings.dialogue_model:
                route = f"dialogue@{effective.model}"
        rounds = self.settings.max_tool_rounds
        bounds = ToolBounds.resumed(
            turn.messages,
            self.settings.tool_max_calls_per_round,
            self.settings.tool_max_calls_per_turn,
        )
        for round_number in range(min(start, rounds), rounds + 1):
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
                route, request, key.tenant, sink, shown=turn.shown, turn=turn
            )
            turn.shown += text
            turn.finish = finish
            if not calls or last:
                turn.messages.append(ChatMessage.assistant(text))
                return
            turn.messages.append(ChatMessage.assistant(text, calls))
            turn.tools.extend(call.name for call in calls)
            names = ", ".join(dict.fromkeys(call.name for call in calls))
            await sink.status(f"Using {names}…")
            planned = bounds.plan(calls)
            allowed = [
                c for c in planned.run if effective is None or effective.tool_allowed(c.name)
            ]
            ran = {
                m.tool_call_id or "": m
                for m in await self._run_calls(
                    allowed, context, sink, turn.messages, turn.shown, round_number, asking
                )
            }
            turn.messages.extend(bounds.results_of(calls, planned, ran, SWITCHED_OFF))
            if turn.shown and not turn.shown.endswith("\n"):
                turn.shown += "\n\n"
                await sink.append("\n\n")

    # --- the rest of the public API -----------------------------------------------------------

    async def forget(self, key: ConversationKey) -> None:
        """Erase a conversation and stop following it."""
        await self.memory.forget(key)
        await self.line.unfollow(key)
        await self.memory.invalidate_summaries(key)

    async def forget_channel(self, key: ConversationKey) -> int:
        """Erase every conversation in `key`'s channel and stop following its threads;
        returns how many were erased."""
        erased = await self.memory.forget_channel(key)
        await self.line.unfollow_channel(key)
        await self.memory.invalidate_summaries(key)
        return erased

    @property
    def http(self) -> httpx.AsyncClient:
        """The process's shared HTTP client (adapters use it to download attachments)."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(30.0, read=self.settings.read_timeout)
            )
        return self._http

    async def usage(self, tenant: str) -> UsageReport:
        try:
            feedback = await self.feedback.week(tenant)
        except RedisError as error:
            log.warning("could not read this week's feedback: %s", error)
            feedback = {}
        return UsageReport(
            tenant,
            utc_day(),
            await self.ledger.usage(tenant),
            self.settings.daily_budget_usd,
            feedback,
            await self.ledger.week(tenant),
        )

    async def once(self, namespace: str, ident: str) -> bool:
        """True the first time `ident` is seen (a button pressed twice acts once)."""
        return await self.ledger.once(namespace, ident)

    async def cache_get(self, namespace: str, ident: str) -> str | None:
        """A small shared cache (e.g. display names), kept in Redis."""
        return await self.ledger.cache_get(namespace, ident)

    async def cache_set(self, namespace: str, ident: str, value: str, ttl: int = 86_400) -> None:
        await self.ledger.cache_set(namespace, ident, value, ttl)

    async def cooldown(self, namespace: str, ident: str, seconds: float) -> float:
        """Per-user rate limiting shared by all processes: 0.0 if `ident` may act now (its
        cooldown starts), otherwise the seconds it still has to wait."""
        if seconds <= 0:
            return 0.0
        return await self.ledger.cooldown(namespace, ident, seconds)

    async def ready(self) -> bool:
        """Can the engine serve? (Redis answers within two seconds.)"""
        try:
            async with asyncio.timeout(2):
                return await self.store.ping()
        except (RedisError, TimeoutError, OSError):
            return False

    async def import_history(self, key: ConversationKey, messages: Sequence[ChatMessage]) -> bool:
        return await self.memory.import_history(key, messages)
