"""core.knowledge wired into the Engine: two engines (replicas) on one Redis run their
recap schedulers as they do in production (the loop, not single ticks); the clock is
virtual. search_history is offered by the engine once an adapter attaches a history reader.
Only the network edge is fake (CometAPI; the platform is the test's channel)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from core.engine import Engine, Outcome
from core.knowledge import Knowledge
from core.types import Author, Incoming
from tests.core.test_history_search import (
    ALICE,
    DECISION_LINK,
    GPT,
    HERE,
    NOW,
    History,
    flash_answer,
)
from tests.core.test_recaps import ADMIN, GENERAL, START, Channel, Clock
from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.fakes.cometapi import ToolCall as ScriptedCall
from tests.support import RecordingSink, team_model

FLASH = "gemini-3.1-flash-lite"
MEMBER = Author("U-member", "Max")
Replica = Callable[..., contextlib.AbstractAsyncContextManager[Engine]]


def flash_texts(cometapi: FakeCometAPI) -> list[str]:
    return [r.last_user_text for r in cometapi.requests_for(FLASH)]


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def wire(engine: Engine, clock: Clock, channel: Channel) -> Knowledge:
    knowledge = Knowledge(engine, clock=clock, poll_seconds=0.02)
    engine.knowledge = knowledge
    knowledge.attach("slack", recaps=channel)
    return knowledge


async def test_two_replicas_post_one_recap_per_due_time_and_close_stops_them(
    engine_with: Replica, cometapi: FakeCometAPI
) -> None:
    cometapi.set_responder(team_model)
    clock = Clock(START)
    channel = Channel(clock)
    async with (
        engine_with(recap_min_interval_minutes=1) as a,
        engine_with(recap_min_interval_minutes=1) as b,
    ):
        ka, kb = wire(a, clock, channel), wire(b, clock, channel)
        assert ka.running and kb.running
        reply = await ka.recap_command(GENERAL, "/recap every 1m", setter=ADMIN, may_manage=True)
        assert reply.startswith("This channel will get a recap every minute")
        state = await ka.recaps.get(GENERAL)
        assert state is not None
        first = state.next_due
        channel.say("Bob", "old news from before the window", first - 300)
        channel.say("Bob", "We decided the venue is the Old Mill", first - 40)
        for minute, text in enumerate(["", "Decision: the budget is 4,000 EUR", "", ""]):
            if text:
                channel.say("Dan", text, first + 60 * minute - 30)
            clock.now = first + 60 * minute + 1
            expected = 1 + (minute >= 1)
            await until(lambda n=minute + 1: channel.reads >= n)  # this due time was handled
            await asyncio.sleep(0.2)  # both loops tick several more times
            assert len(channel.posts) == expected, minute
        # four due times with news at two of them: two posts, two Flash-Lite requests
        first_request, second_request = flash_texts(cometapi)
        assert "Old Mill" in first_request and "old news" not in first_request
        assert "4,000 EUR" in second_request
        assert "Old Mill" not in second_request.split("Conversation:")[1]
        assert channel.reads == 4  # one read per due time, whichever replica won
        assert [p.due for p in channel.posts] == [first, first + 60]
    assert not ka.running and not kb.running  # Engine.close stopped the schedulers
    assert cometapi.rejected == []


async def test_a_missed_due_time_is_posted_once_after_a_restart(
    engine_with: Replica, cometapi: FakeCometAPI
) -> None:
    cometapi.set_responder(team_model)
    clock = Clock(START)
    channel = Channel(clock)
    async with engine_with() as engine:
        knowledge = Knowledge(engine, clock=clock)
        reply = await knowledge.recap_command(
            GENERAL, "daily 09:00", setter=ADMIN, may_manage=True, timezone="UTC"
        )
        assert "daily at 09:00" in reply or "every day" in reply, reply
        state = await knowledge.recaps.get(GENERAL)
        assert state is not None
    channel.say("Bob", "We shipped the release", state.next_due - 600)
    clock.now = state.next_due + 2 * 3600  # every process was down at the due time
    async with engine_with() as a, engine_with() as b:  # the restart: two replicas
        wire(a, clock, channel)
        wire(b, clock, channel)
        await until(lambda: len(channel.posts) == 1)
        await asyncio.sleep(0.3)
        assert len(channel.posts) == 1
        assert "We shipped the release" in flash_texts(cometapi)[0]
    async with engine_with() as c:  # another restart: not repeated
        wire(c, clock, channel)
        await asyncio.sleep(0.3)
    assert len(channel.posts) == 1


async def test_a_member_may_list_but_not_set_a_recap(engine: Engine) -> None:
    knowledge = engine.knowledge
    reply = await knowledge.recap_command(
        GENERAL, "/recap daily 09:00", setter=MEMBER, may_manage=False
    )
    assert reply == "Only people who can manage this channel can set or remove its recap."
    assert await knowledge.recaps.get(GENERAL) is None
    listed = await knowledge.recap_command(GENERAL, "/recap", setter=MEMBER, may_manage=False)
    assert listed.startswith("This channel has no scheduled recap.")


async def test_search_history_is_offered_once_attached_and_cites_the_link(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    history = History()
    history.seed("C-general", 2000, days=7)
    history.add(
        "C-general", "Carol", "Decision: the offsite venue is the Old Mill", NOW - 5 * 86_400
    )
    history.add("C-lead", "Carol", "Decision: the venue budget is secret", NOW - 86_400)
    engine.knowledge = Knowledge(engine, clock=lambda: NOW)
    assert "search_history" not in engine.tools.names()
    engine.knowledge.attach("slack", history=history)
    assert "search_history" in engine.tools.names()
    cometapi.set_responder(flash_answer, FLASH)

    question = {"question": "What did we decide about the offsite venue?", "days": 7}
    cometapi.script(GPT, Reply(tool_calls=[ScriptedCall("search_history", question)]))
    sink = RecordingSink()
    incoming = Incoming(HERE, "Ev-k1", ALICE, "what did we decide about the venue?")
    assert await engine.reply(incoming, sink) == Outcome.ANSWERED
    [search] = cometapi.requests_for(FLASH)
    assert "Old Mill" in search.last_user_text
    assert search.last_user_text.count("\n[") >= 2000  # the whole window was read
    [(_, result)] = cometapi.requests_for(GPT)[-1].tool_results
    assert json.loads(result)["sources"][0]["link"] == DECISION_LINK
    assert sink.final is not None and DECISION_LINK in sink.final
    report = await engine.usage(HERE.tenant)
    tokens_in, _out, cost = report.by_route("summary")
    assert tokens_in > 100_000 // 4 and cost > 0  # billed on the summary route

    # a private channel the asker is not in: refused, nothing read, no model call
    cometapi.clear_requests()
    reads = len(history.reads)
    private = {"question": "What is the venue budget?", "channel": "#leadership"}
    cometapi.script(GPT, Reply(tool_calls=[ScriptedCall("search_history", private)]))
    sink = RecordingSink()
    incoming = Incoming(HERE, "Ev-k2", ALICE, "what is the venue budget in #leadership?")
    assert await engine.reply(incoming, sink) == Outcome.ANSWERED
    assert len(history.reads) == reads
    assert cometapi.requests_for(FLASH) == []
    [(_, refused)] = cometapi.requests_for(GPT)[-1].tool_results
    assert "private" in refused
