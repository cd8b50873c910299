"""A person approves a tool call before it runs: approved, denied, expired, clicked by
someone else, later messages waiting behind the paused turn, and a turn finished by
another process after the one that asked went away. Real Redis, the fake CometAPI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from core import ApprovalCard, Author, ConversationKey, Engine, Incoming, Intake, tool
from tests.fakes.cometapi import FakeCometAPI, Reply, ToolCall
from tests.support import RecordingSink

GPT = "gpt-5.3-chat-latest"
ANA = Author("U1", "Ana")
BO = Author("U2", "Bo")
WRITES: list[str] = []


@tool(needs_approval=True)
async def create_ticket(title: str) -> str:
    """Create a ticket in the team's tracker."""
    WRITES.append(title)
    return f"created ticket T-1: {title}"


class Card(RecordingSink):
    """A reply that can ask for approval (as an adapter's reply does)."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[ApprovalCard] = []
        self.settled: list[tuple[str, str | None]] = []
        self.asked = asyncio.Event()
        self.approval_ui = self

    async def show(self, card: ApprovalCard) -> Mapping[str, str]:
        self.cards.append(card)
        self.asked.set()
        return {"message": "card-1"}

    async def settle(
        self, card: ApprovalCard, outcome: str, by: str | None, where: Mapping[str, str]
    ) -> None:
        assert where == {"message": "card-1"}
        self.settled.append((outcome, by))


def said(key: ConversationKey, text: str, n: int, author: Author = ANA) -> Incoming:
    return Incoming(
        key=key,
        event_id=f"{key.thread}:{n}",
        author=author,
        text=text,
        position=n,
        reply_to={"thread": key.thread},
    )


def script_ticket(cometapi: FakeCometAPI) -> None:
    cometapi.script(
        GPT,
        Reply("I'll file it.", tool_calls=[ToolCall("create_ticket", {"title": "VPN down"})]),
        Reply("Done: T-1 is filed."),
    )


def key_now() -> ConversationKey:
    return ConversationKey("slack", "T1", "C1", f"{time.time():.6f}")


async def test_approved_the_tool_runs_and_the_answer_goes_on(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    WRITES.clear()
    script_ticket(cometapi)
    async with engine_with() as engine:
        engine.tools.add(create_ticket)
        intake, sink, key = Intake(engine), Card(), key_now()
        answering = asyncio.create_task(intake.run(said(key, "file a ticket", 1), sink))
        await asyncio.wait_for(sink.asked.wait(), 10)
        (card,) = sink.cards
        assert card.asker_id == ANA.id and card.calls[0][0] == "create_ticket"
        assert "VPN down" in card.calls[0][1]
        assert WRITES == []  # nothing ran before the person said yes
        refused = await intake.decide(card.id, BO.id, BO.name, approve=True)
        assert refused.outcome is None and "Only Ana" in refused.message
        decision = await intake.decide(card.id, ANA.id, ANA.name, approve=True)
        assert decision.outcome == "approved"
        await asyncio.wait_for(answering, 10)
    assert WRITES == ["VPN down"]
    assert sink.settled == [("approved", "Ana")]
    assert sink.final == "I'll file it.\n\nDone: T-1 is filed."
    last = cometapi.requests_for(GPT)[-1]
    assert "created ticket T-1" in json.dumps(last.json)


async def test_denied_or_expired_it_does_not_run_and_the_model_still_answers(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    WRITES.clear()
    async with engine_with(approval_timeout_seconds=1) as engine:
        engine.tools.add(create_ticket)
        intake = Intake(engine)
        for decide in (True, False):
            script_ticket(cometapi)
            sink, key = Card(), key_now()
            answering = asyncio.create_task(intake.run(said(key, "file it", 1), sink))
            await asyncio.wait_for(sink.asked.wait(), 10)
            if decide:
                await intake.decide(sink.cards[0].id, BO.id, "Bo", approve=False, admin=True)
            await asyncio.wait_for(answering, 10)
            results = cometapi.requests_for(GPT)[-1].tool_results
            outcome = "denied" if decide else "expired"
            assert sink.settled == [(outcome, "Bo" if decide else None)]
            assert "Not run" in results[0][1]
            assert sink.final is not None and sink.final.endswith("Done: T-1 is filed.")
    assert WRITES == []


async def test_later_messages_wait_behind_a_paused_turn(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    script_ticket(cometapi)
    async with engine_with() as engine:
        engine.tools.add(create_ticket)
        intake, first, key = Intake(engine), Card(), key_now()
        answering = asyncio.create_task(intake.run(said(key, "file it", 1), first))
        await asyncio.wait_for(first.asked.wait(), 10)
        second = RecordingSink()
        later = asyncio.create_task(intake.run(said(key, "and the other thing?", 2), second))
        await asyncio.sleep(0.5)
        assert second.final is None and len(cometapi.requests_for(GPT)) == 1
        await intake.decide(first.cards[0].id, ANA.id, "Ana", approve=True)
        await asyncio.wait_for(asyncio.gather(answering, later), 10)
    assert first.done.is_set() and second.final is not None
    last = cometapi.requests_for(GPT)[-1]
    assert "created ticket T-1" in json.dumps(last.json)  # the later one saw it all


async def test_a_second_process_finishes_a_turn_the_first_left_paused(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    WRITES.clear()
    script_ticket(cometapi)
    reopened: list[Mapping[str, str]] = []
    resumed = Card()

    async def reopen(address: Mapping[str, str]) -> Any:
        reopened.append(dict(address))
        return resumed

    async with engine_with() as first, engine_with() as second:
        first.tools.add(create_ticket)
        second.tools.add(create_ticket)
        asked_on, key = Card(), key_now()
        task = first.spawn(Intake(first).run(said(key, "file it", 1), asked_on))
        assert task is not None
        await asyncio.wait_for(asked_on.asked.wait(), 10)
        await first.drain(0)  # the first process stops while the person thinks
        card = asked_on.cards[0]
        other = Intake(second, reopen=reopen)
        decision = await other.decide(card.id, ANA.id, "Ana", approve=True)
        assert decision.outcome == "approved" and decision.resumed_here
        await asyncio.wait_for(resumed.done.wait(), 10)
        await second.idle()
        history = await second.memory.history(key)
        late = await other.decide(card.id, ANA.id, "Ana", approve=False)
    assert WRITES == ["VPN down"]
    assert reopened and reopened[0]["thread"] == key.thread
    assert resumed.settled == [("approved", "Ana")]
    assert resumed.final == "Done: T-1 is filed."
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert late.outcome is None
