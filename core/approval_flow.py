"""The engine's tool round with a person in the loop: calls that need approval pause the
turn (see `core.tools.approval`) and run only once the asker said yes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from core.queue import Line, Ticket
from core.settings import Settings
from core.sink import ReplySink
from core.tools import ToolContext, ToolRegistry, run_tool_calls
from core.tools.approval import (
    APPROVED,
    DENIED,
    EXPIRED,
    ApprovalCard,
    Approvals,
    ApprovalUI,
    Outcome,
    PausedTurn,
    declined_result,
)
from core.types import ChatMessage, Incoming, ToolCall

__all__ = ["ApprovalMixin", "Asking"]

log = logging.getLogger(__name__)

CANNOT_ASK = (
    "Not run: this action needs a person's approval, and I can't ask for it here. "
    "Answer without it and say so."
)


@dataclass(frozen=True, slots=True)
class Asking:
    """What pausing a turn needs: the message answered, its place in line, its sink."""

    incoming: Incoming
    message: ChatMessage
    ticket: Ticket


class ApprovalMixin:
    """`_run_calls`: one round's tool calls, asking the person first when a tool needs it."""

    settings: Settings
    tools: ToolRegistry
    line: Line
    approvals: Approvals

    def _needs_approval(self, name: str) -> bool:
        tool = self.tools.get(name)
        return bool(tool is not None and getattr(tool, "needs_approval", False))

    def _describe(self, call: ToolCall) -> str:
        tool = self.tools.get(call.name)
        describe = getattr(tool, "describe", None)
        if describe is not None:
            return str(describe(call.arguments))
        return call.arguments if len(call.arguments) <= 1500 else call.arguments[:1497] + "…"

    async def _run_calls(
        self,
        calls: Sequence[ToolCall],
        context: ToolContext,
        sink: ReplySink,
        turn_messages: list[ChatMessage],
        shown: str,
        round_number: int,
        asking: Asking | None,
    ) -> list[ChatMessage]:
        needing = [call for call in calls if self._needs_approval(call.name)]
        if not needing:
            return await self._execute(calls, context)
        ui = getattr(sink, "approval_ui", None)
        if asking is None or not isinstance(ui, ApprovalUI):
            return await self._settled(calls, {c.id for c in needing}, None, None, context)
        incoming = asking.incoming
        card = ApprovalCard(
            self.approvals.new_id(),
            incoming.key,
            incoming.author.id,
            incoming.author.name,
            tuple((call.name, self._describe(call)) for call in needing),
            time.time() + self.settings.approval_timeout_seconds,
        )
        paused = PausedTurn(
            id=card.id,
            key=incoming.key,
            event_id=incoming.event_id,
            member=asking.ticket.member,
            author_id=incoming.author.id,
            author_name=incoming.author.name,
            user_message=asking.message.for_storage(),
            turn_messages=list(turn_messages),
            shown=shown,
            round_number=round_number,
            calls=list(calls),
            needing=[call.id for call in needing],
            card=card,
            reply=dict(incoming.reply_to),
        )
        await sink.status("Waiting for approval…")
        # Kept in Redis first: from here on, any process can finish the turn.
        await self.approvals.pause(paused, asking.ticket)
        asking.ticket.paused = True
        where = await ui.show(card)
        paused.reply.update({f"card.{k}": v for k, v in where.items()})
        await self.approvals.remember(paused)
        outcome, by = await self.approvals.wait(paused)  # cancelled: the turn stays paused
        asking.ticket.paused = False
        log.info("approval %s of %s: %s", card.id, [c.name for c in needing], outcome)
        try:
            await ui.settle(card, outcome, by, where)
        except Exception:
            log.exception("could not show how the approval ended")
        await self.approvals.close(paused)
        await self.line.unpause(asking.ticket)
        return await self._settled(calls, set(paused.needing), outcome, by, context)

    async def _settled(
        self,
        calls: Sequence[ToolCall],
        needing: set[str],
        outcome: Outcome | None,
        by: str | None,
        context: ToolContext,
    ) -> list[ChatMessage]:
        """Results in the order of the calls: the approved (or free) ones run, the others
        get a result that says why they did not."""
        if outcome == APPROVED:
            return await self._execute(calls, context)
        ran = {
            result.tool_call_id: result
            for result in await self._execute([c for c in calls if c.id not in needing], context)
        }
        out: list[ChatMessage] = []
        for call in calls:
            if call.id in ran:
                out.append(ran[call.id])
            elif outcome in (DENIED, EXPIRED):
                out.append(ChatMessage.tool_result(call, declined_result(outcome, by)))
            else:
                out.append(ChatMessage.tool_result(call, CANNOT_ASK))
        return out

    async def _execute(self, calls: Sequence[ToolCall], context: ToolContext) -> list[ChatMessage]:
        return await run_tool_calls(
            calls,
            self.tools,
            context,
            time_limit=self.settings.tool_timeout_seconds,
            max_chars=self.settings.tool_result_max_chars,
        )
