"""Model calls as the engine makes them: every attempt reserves its worst case against the
workspace's daily budget and is settled with what it really used (failed, cut and
cancelled attempts included), its tokens recorded; and the history budget, which folds
what no longer fits into the rolling summary on the summary route."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from core import metrics
from core.attachments import UserMessage, fold_documents
from core.budget import Budget, Hold, worst_case
from core.failures import BudgetExceeded
from core.ledger import Ledger, UsageRecord
from core.memory import History, RollingSummary
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
from core.sink import ReplySink
from core.summaries import BrokenSummary, Summarizer
from core.tokens import estimate_text, split_for_budget
from core.types import ChatMessage, ConversationKey, ToolCall

log = logging.getLogger(__name__)


@dataclass
class Turn:
    """What one dialogue turn produced."""

    messages: list[ChatMessage] = field(default_factory=list)
    shown: str = ""
    finish: str = "stop"
    message: ChatMessage | None = None  # the person's message, once read
    model: str = ""  # the model that wrote the (last part of the) answer
    tools: list[str] = field(default_factory=list)  # tools called, in order


@dataclass
class Attempted:
    """One attempt of a model call: its target, its budget hold, what it produced."""

    target: Target
    hold: Hold
    output: list[str] = field(default_factory=list)


class ModelCallsMixin:
    """The engine's budgeted, metered model calls and its history budget (needs the
    attributes below)."""

    settings: Settings
    router: Router
    budget: Budget
    ledger: Ledger
    memory: History
    _settling: set[asyncio.Task[None]]

    async def _stream(
        self,
        route: str,
        request: ModelRequest,
        tenant: str,
        sink: ReplySink | None,
        *,
        shown: str = "",
        turn: Turn | None = None,
    ) -> tuple[str, list[ToolCall], str]:
        """One model call along a route, streamed into `sink`. Each attempt first reserves
        its worst case against the workspace's daily budget (BudgetExceeded when none is
        left) and settles it with what it really used when it ends, failed and cut attempts
        included. Returns (text, tool calls, finish reason)."""
        ledger_route = route.partition("@")[0]
        estimate = request_tokens(request)
        text: list[str] = []
        calls: list[ToolCall] = []
        usage: Usage | None = None
        finish = "stop"
        attempt: Attempted | None = None
        try:
            async with contextlib.aclosing(self.router.stream(route, request)) as events:
                async for event in events:
                    if isinstance(event, Attempt):
                        if attempt is not None:  # the previous attempt failed
                            await self._settle(attempt, ledger_route, estimate, None)
                            attempt = None
                        hold = await self.budget.reserve(
                            tenant, worst_case(event.target, request, estimate)
                        )
                        attempt = Attempted(event.target, hold)
                        usage = None
                        if turn is not None:
                            turn.model = event.target.model
                        if event.restart:
                            text.clear()
                            calls.clear()
                            if sink is not None:
                                await sink.reset()
                                if shown:
                                    await sink.append(shown)
                    elif isinstance(event, TextDelta):
                        text.append(event.text)
                        if attempt is not None:
                            attempt.output.append(event.text)
                        if sink is not None:
                            await sink.append(event.text)
                    elif isinstance(event, ToolCallEvent):
                        calls.append(event.call)
                        if attempt is not None:
                            attempt.output.append(event.call.name + str(event.call.arguments))
                    elif isinstance(event, Usage):
                        usage = event
                    elif isinstance(event, Finish):
                        finish = event.reason
        except BaseException:
            if attempt is not None:  # failed, cut or cancelled: bill what it used
                # In the background: a cancelled answer (Stop, a lost lease while Redis
                # stalls) must end now, not after Redis answers.
                self._settle_soon(attempt, ledger_route, estimate, usage)
            raise
        assert attempt is not None
        if usage is None:
            usage = Usage(estimate, estimate_text("".join(attempt.output)))
        await self._settle(attempt, ledger_route, estimate, usage)
        return "".join(text), calls, finish

    def _settle_soon(
        self, attempt: Attempted, route: str, estimate: int, usage: Usage | None
    ) -> None:
        async def settle() -> None:
            try:
                async with asyncio.timeout(min(self.settings.total_timeout, 30.0)):
                    await self._settle(attempt, route, estimate, usage)
            except (TimeoutError, RedisError) as error:  # the hold lapses on its own
                log.warning("could not settle a budget reservation: %r", error)

        task = asyncio.get_running_loop().create_task(settle(), name="teambot-settle")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(
        self, attempt: Attempted, route: str, estimate: int, usage: Usage | None
    ) -> None:
        """Record an attempt's tokens and replace its budget hold with its real cost. An
        attempt that ended without usage is billed by estimate if the model produced
        anything, and not at all if it failed before that (the hold is released)."""
        if usage is None and attempt.output:
            usage = Usage(estimate, estimate_text("".join(attempt.output)))
        cost = 0.0
        try:
            if usage is not None:
                cost = await self._record(attempt.hold.tenant, route, attempt.target, usage)
        finally:
            try:
                await self.budget.settle(attempt.hold, cost)
            except RedisError as error:  # the hold lapses on its own
                log.warning("could not settle a budget reservation: %s", error)

    async def _record(self, tenant: str, route: str, target: Target, usage: Usage) -> float:
        """Record one call's usage; returns its cost in USD."""
        cost = target.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens)
        record = UsageRecord(
            route,
            target.model,
            usage.input_tokens,
            usage.output_tokens,
            cost,
            usage.cached_input_tokens,
        )
        metrics.TOKENS.labels(route, target.model, "input").inc(usage.input_tokens)
        metrics.TOKENS.labels(route, target.model, "output").inc(usage.output_tokens)
        if usage.cached_input_tokens:
            metrics.TOKENS.labels(route, target.model, "cached_input").inc(
                usage.cached_input_tokens
            )
        metrics.COST_USD.labels(route, target.model).inc(cost)
        try:
            await self.ledger.record_usage(tenant, record)
        except RedisError as error:
            log.warning("could not record usage: %s", error)
        return cost

    # --- history budget ------------------------------------------------------------------

    async def _for_memory(self, built: UserMessage, tenant: str) -> ChatMessage:
        """The person's message as memory keeps it: a large document folded to a summary
        on the summary route (budgeted and billed to `tenant`)."""

        async def call(request: ModelRequest) -> str:
            text, _calls, _finish = await self._stream("summary", request, tenant, None)
            return text

        return await fold_documents(built, self.settings.history_token_budget, call)

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

    def summarizer(self, tenant: str, language: str = "") -> Summarizer:
        """A summarizer whose model calls are budgeted and billed to `tenant`, writing in
        `language` ("" = the conversation's own)."""

        async def call(request: ModelRequest) -> str:
            text, _calls, _finish = await self._stream("summary", request, tenant, None)
            return text

        return Summarizer(
            call,
            chunk_tokens=self.settings.summary_chunk_tokens,
            max_output_tokens=self.settings.summary_max_output_tokens,
            thinking_level=self.settings.summary_thinking_level,
            bot_name=self.settings.bot_name,
            language=language,
        )
