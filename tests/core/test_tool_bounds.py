"""A tool-call storm from the model is bounded: at most TOOL_MAX_CALLS_PER_ROUND calls run
per round and TOOL_MAX_CALLS_PER_TURN per answer, identical calls run once; against the
fake CometAPI over HTTP and a real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from core.engine import Engine
from core.tools import tool
from core.types import Author, ConversationKey, Incoming
from tests.fakes.cometapi import FakeCometAPI, RecordedRequest, Reply, ToolCall
from tests.support import RecordingSink

GPT = "gpt-5.3-chat-latest"
FLASH = "gemini-3.1-flash-lite"
KEY = ConversationKey("slack", "T1", "C1", "storm")


def storm(request: RecordedRequest) -> Reply:
    """Every round: 5 identical summaries, 3 identical lookups, 12 new lookups."""
    if request.json.get("tool_choice") == "none" or request.model != GPT:
        return Reply("done")
    round_number = sum(1 for m in request.messages if m.get("tool_calls"))
    calls = [ToolCall("summarize_conversation", {}) for _ in range(5)]
    calls += [ToolCall("lookup", {"query": "same"}) for _ in range(3)]
    calls += [ToolCall("lookup", {"query": f"r{round_number}-{n}"}) for n in range(12)]
    return Reply("", tool_calls=calls)


async def test_a_tool_call_storm_runs_within_the_caps_and_identical_calls_once(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    queries: list[str] = []

    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        queries.append(query)
        return f"found {query}"

    cometapi.set_responder(storm)
    async with engine_with(max_tool_rounds=4) as engine:
        engine.tools.add(lookup)
        sink = RecordingSink()
        await engine.reply(
            Incoming(key=KEY, event_id="Ev-storm", author=Author("U1", "Ana"), text="go"), sink
        )
        assert sink.final is not None and sink.final.endswith("done")

    summaries = len(cometapi.requests_for(FLASH))
    runs = len(queries) + (1 if summaries else 0)
    assert queries.count("same") == 1
    assert len(queries) == len(set(queries))  # identical calls ran once
    assert runs <= 16  # TOOL_MAX_CALLS_PER_TURN
    assert summaries <= 1  # five identical summary calls per round, run once
    dialogue = cometapi.requests_for(GPT)
    # the first round ran 8 of its 14 distinct calls (TOOL_MAX_CALLS_PER_ROUND)
    first_results = [content for _id, content in dialogue[1].tool_results]
    assert len(first_results) == 20
    assert sum("at most 8 tool calls run in one round" in c for c in first_results) == 6
    # identical calls got the same result
    assert first_results[5:8] == ["found same"] * 3
    # later rounds were told the turn's cap was reached
    last_results = [content for _id, content in dialogue[-1].tool_results]
    assert any("already made 16 tool calls" in c for c in last_results)
    assert json.dumps(last_results).count("found same") == 3  # reused, not run again


async def test_summarize_conversation_reuses_the_cached_summary_and_runs_once_per_scope(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    """The bot's own answers (stored without a platform id) no longer defeat the cache:
    asked again with nothing new, no model call; after one more turn, only that turn is
    summarized, on top of the cached summary. Three at once make one summary."""
    import asyncio

    from tests.support import team_model

    cometapi.set_responder(team_model)
    async with engine_with() as engine:
        for n, text in enumerate(["We decided to hire Dana.", "I will write the offer."]):
            await engine.reply(
                Incoming(key=KEY, event_id=f"Ev-c{n}", author=Author("U1", "Ana"), text=text),
                RecordingSink(),
            )
        first = await asyncio.gather(*(engine.summarize_conversation(KEY) for _ in range(3)))
        assert len(cometapi.requests_for(FLASH)) == 1
        assert len(set(first)) == 1 and "hire Dana" in first[0]
        again = await engine.summarize_conversation(KEY)
        assert again == first[0]
        assert len(cometapi.requests_for(FLASH)) == 1  # nothing new: the cached summary
        await engine.reply(
            Incoming(key=KEY, event_id="Ev-c9", author=Author("U1", "Ana"), text="Budget is 5k."),
            RecordingSink(),
        )
        await engine.summarize_conversation(KEY)
        summaries = cometapi.requests_for(FLASH)
        assert len(summaries) == 2
        assert "Current summary:" in summaries[-1].last_user_text  # incremental
        assert "hire Dana" not in summaries[-1].last_user_text.split("New messages:")[1]


async def test_two_processes_asked_for_the_same_summary_make_one(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    """Two engines on one Redis (two replicas), the same scope asked on both at once: one
    summary is written, the other replica reuses it."""
    import asyncio
    import dataclasses

    from core.types import ChatMessage
    from tests.support import team_model

    cometapi.set_responder(lambda r: dataclasses.replace(team_model(r), delay=0.5))
    scope = ConversationKey("slack", "T1", "C1", "shared#summary")
    messages = [
        ChatMessage.user(f"We decided item {n}.", "Ana", id=f"m{n}", ts=1_700_000_000 + n)
        for n in range(5)
    ]
    async with engine_with() as one, engine_with() as two:
        first, second = await asyncio.gather(
            one.summarize(scope, messages), two.summarize(scope, messages)
        )
    assert first is not None and second is not None
    assert first.markdown() == second.markdown()
    assert len(cometapi.requests_for(FLASH)) == 1
