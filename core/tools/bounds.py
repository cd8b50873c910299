"""Bounds on one turn's tool calls: at most `per_round` calls run per model round and
`per_turn` per turn; calls beyond get a result that says so. Identical calls (same name,
same arguments) run once per turn: a repeat gets the first one's result."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.types import ChatMessage, ToolCall

__all__ = ["Planned", "ToolBounds", "call_signature"]


def call_signature(call: ToolCall) -> str:
    """Name and arguments, with JSON arguments in one canonical form."""
    try:
        arguments = json.dumps(json.loads(call.arguments or "{}"), sort_keys=True)
    except json.JSONDecodeError:
        arguments = call.arguments
    return f"{call.name}\0{arguments}"


@dataclass(frozen=True, slots=True)
class Planned:
    """One round's calls: those to run, and a fixed result for the others (by call id);
    a repeat within the round is answered by `first` (call id → the call that runs)."""

    run: list[ToolCall]
    fixed: dict[str, str]
    first: dict[str, ToolCall]


@dataclass
class ToolBounds:
    per_round: int
    per_turn: int
    ran: int = 0
    results: dict[str, str] = field(default_factory=dict)  # signature → result

    def over_round(self) -> str:
        return (
            f"Not run: at most {self.per_round} tool calls run in one round. Call fewer "
            "tools at once, or answer with what you have."
        )

    def over_turn(self) -> str:
        return (
            f"Not run: this answer already made {self.per_turn} tool calls, the most "
            "allowed. Answer with what you have."
        )

    @classmethod
    def resumed(cls, messages: Sequence[ChatMessage], per_round: int, per_turn: int) -> ToolBounds:
        """The bounds of a turn that already has `messages` (resumed after an approval)."""
        bounds = cls(per_round, per_turn)
        calls = {c.id: c for m in messages for c in m.tool_calls}
        refused = {bounds.over_round(), bounds.over_turn()}
        for message in messages:
            call = calls.get(message.tool_call_id or "")
            if message.role == "tool" and call is not None and message.content not in refused:
                signature = call_signature(call)
                if signature not in bounds.results:
                    bounds.results[signature] = message.content
                    bounds.ran += 1
        return bounds

    def plan(self, calls: Sequence[ToolCall]) -> Planned:
        run: list[ToolCall] = []
        fixed: dict[str, str] = {}
        first: dict[str, ToolCall] = {}
        running: dict[str, ToolCall] = {}
        for call in calls:
            signature = call_signature(call)
            if signature in self.results:
                fixed[call.id] = self.results[signature]
            elif signature in running:
                first[call.id] = running[signature]
            elif len(run) >= self.per_round:
                fixed[call.id] = self.over_round()
            elif self.ran + len(run) >= self.per_turn:
                fixed[call.id] = self.over_turn()
            else:
                running[signature] = call
                run.append(call)
        return Planned(run, fixed, first)

    def results_of(
        self,
        calls: Sequence[ToolCall],
        planned: Planned,
        ran: Mapping[str, ChatMessage],
        missing: str,
    ) -> list[ChatMessage]:
        """One result per call, in order; remembers what ran. `missing`: the result of a
        planned call that did not run (e.g. a tool switched off here)."""
        self.ran += len(planned.run)
        for call in planned.run:
            self.results[call_signature(call)] = ran[call.id].content if call.id in ran else missing
        out: list[ChatMessage] = []
        for call in calls:
            if call.id in planned.fixed:
                out.append(ChatMessage.tool_result(call, planned.fixed[call.id]))
            elif call.id in planned.first:
                out.append(ChatMessage.tool_result(call, self.results[call_signature(call)]))
            elif call.id in ran:
                out.append(ran[call.id])
            else:
                out.append(ChatMessage.tool_result(call, missing))
        return out
