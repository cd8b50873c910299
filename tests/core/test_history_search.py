"""search_history: answers from channel history with links, on the summary route of the
fake CometAPI; refusals read nothing and call no model."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from core.engine import Engine, Outcome
from core.history_search import (
    HistoryMessage,
    HistorySearch,
    HistorySource,
    search_history_tool,
)
from core.tools import ToolContext, ToolError, ToolRegistry, run_tool_calls
from core.types import Author, ConversationKey, Incoming, ToolCall
from tests.fakes.cometapi import FakeCometAPI, RecordedRequest, Reply
from tests.fakes.cometapi import ToolCall as ScriptedCall
from tests.support import RecordingSink

FLASH = "gemini-3.1-flash-lite"
GPT = "gpt-5.3-chat-latest"
NOW = 1_750_000_000.0
DAY = 86_400
ALICE = Author("U-alice", "Alice")
CAROL = Author("U-carol", "Carol")
HERE = ConversationKey("slack", "T1", "C-general", "1749999000.000100")
DECISION = "Decision: the offsite venue is the Old Mill in Bath, booked for June 12."
DECISION_LINK = "https://team.slack.example/archives/C-general/p1749568000000000"


def link(channel: str, ts: float) -> str:
    return f"https://team.slack.example/archives/{channel}/p{int(ts * 1_000_000)}"


class History:
    """A workspace's channels as an adapter would serve them: pages of 200, newest first."""

    def __init__(self) -> None:
        self.channels: dict[str, list[HistoryMessage]] = {"C-general": [], "C-lead": []}
        self.names = {"general": "C-general", "leadership": "C-lead"}
        self.private = {"C-lead": {CAROL.id}}
        self.reads: list[tuple[str, float, int]] = []
        self.pages = 0

    def seed(self, channel: str, count: int, days: float) -> None:
        people = ["Alice", "Bob", "Dan", "Eve"]
        for i in range(count):
            ts = NOW - days * DAY + (i + 0.5) * days * DAY / count
            text = f"status {i}: ticket T-{i} is in review, CI green"
            self.channels[channel].append(
                HistoryMessage(f"{channel}-{i}", people[i % 4], ts, text, link(channel, ts))
            )

    def add(self, channel: str, author: str, text: str, ts: float) -> HistoryMessage:
        message = HistoryMessage(f"{channel}-x{ts}", author, ts, text, link(channel, ts))
        self.channels[channel].append(message)
        self.channels[channel].sort(key=lambda m: m.ts)
        return message

    async def resolve(self, current: ConversationKey, channel: str) -> ConversationKey | None:
        ident = self.names.get(channel.lstrip("#"), channel)
        if ident not in self.channels:
            return None
        return ConversationKey(current.platform, current.workspace, ident)

    async def may_read(self, asker: Author, channel: ConversationKey) -> bool | str:
        members = self.private.get(channel.channel)
        if members is not None and asker.id not in members:
            return "That channel is private and the person asking is not in it."
        return True

    async def read(
        self, channel: ConversationKey, oldest_ts: float, limit: int
    ) -> AsyncIterator[Sequence[HistoryMessage]]:
        self.reads.append((channel.channel, oldest_ts, limit))
        window = [m for m in self.channels[channel.channel] if m.ts > oldest_ts][::-1][:limit]
        for start in range(0, len(window), 200):
            self.pages += 1
            await asyncio.sleep(0)
            yield window[start : start + 200]


def flash_answer(request: RecordedRequest) -> Reply:
    """Flash-Lite, for these tests: cites the lines that mention the venue."""
    text = request.last_user_text
    cited = [int(n) for n in re.findall(r"^\[(\d+)\] [^\n]*venue", text, re.MULTILINE)]
    if not cited:
        return Reply(
            json.dumps({"answer": "The messages don't say.", "sources": [], "found": False})
        )
    answer = "Carol wrote that the offsite venue is the Old Mill in Bath, booked for June 12."
    return Reply(json.dumps({"answer": answer, "sources": cited, "found": True}))


@pytest.fixture
def history() -> History:
    history = History()
    history.seed("C-general", 2000, days=7)
    history.add("C-general", "Carol", DECISION, NOW - 5 * DAY)
    history.add("C-lead", "Carol", "Decision: the venue budget is secret", NOW - DAY)
    return history


def searcher(history: History, engine: Engine, max_messages: int = 5000) -> HistorySearch:
    assert isinstance(history, HistorySource)
    return HistorySearch(
        {"slack": history}, engine.summarizer, max_messages=max_messages, clock=lambda: NOW
    )


async def test_a_decision_five_days_back_among_2000_messages_is_found_with_its_link(
    history: History, engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.set_responder(flash_answer, FLASH)
    search = searcher(history, engine)
    answer = await search.search(
        asker=ALICE, current=HERE, question="What did we decide about the offsite venue?"
    )
    assert answer.found and "Old Mill" in answer.answer
    assert [(m.author, m.link) for m in answer.sources] == [("Carol", DECISION_LINK)]
    assert answer.searched == 2001
    [request] = cometapi.requests_for(FLASH)
    prompt = request.last_user_text
    assert DECISION in prompt and prompt.count("\n[") == 2001
    assert prompt.startswith("Question: What did we decide about the offsite venue?")
    assert history.reads == [("C-general", NOW - 7 * DAY, 5000)] and history.pages == 11
    result = answer.for_model()
    assert result["sources"] == [
        {
            "author": "Carol",
            "time": "2025-06-10 15:06 UTC",
            "link": DECISION_LINK,
            "quote": DECISION,
        }
    ]
    _in, _out, cost = (await engine.usage(HERE.tenant)).by_route("summary")
    assert cost > 0  # billed to the workspace through the engine's summary route
    assert cometapi.rejected == []


async def test_the_dialogue_model_calls_the_tool_and_cites_the_link(
    history: History, engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.set_responder(flash_answer, FLASH)
    engine.tools.add(search_history_tool(searcher(history, engine)))
    question = {"question": "What did we decide about the offsite venue?", "days": 7}
    cometapi.script(GPT, Reply(tool_calls=[ScriptedCall("search_history", question)]))
    sink = RecordingSink()
    incoming = Incoming(HERE, "Ev-1", ALICE, "what did we decide about the venue?")
    assert await engine.reply(incoming, sink) == Outcome.ANSWERED
    assert sink.final is not None and DECISION_LINK in sink.final  # the fake echoes the result
    second = cometapi.requests_for(GPT)[-1]
    [(_, result)] = second.tool_results
    assert json.loads(result)["sources"][0]["link"] == DECISION_LINK
    assert "search_history" in cometapi.requests_for(GPT)[0].tool_names


async def test_a_private_channel_the_asker_is_not_in_is_refused_without_reading(
    history: History, engine: Engine, cometapi: FakeCometAPI
) -> None:
    search = searcher(history, engine)
    registry = ToolRegistry([search_history_tool(search)])
    context = ToolContext(key=HERE, author=ALICE, summarize=_unused)
    call = ToolCall(
        id="call-1",
        name="search_history",
        arguments=json.dumps({"question": "What is the venue budget?", "channel": "#leadership"}),
    )
    [message] = await run_tool_calls([call], registry, context, time_limit=5, max_chars=10_000)
    assert message.content == ("Error: That channel is private and the person asking is not in it.")
    assert history.reads == [] and cometapi.requests == []
    # a member of it may search it
    cometapi.set_responder(flash_answer, FLASH)
    answer = await search.search(
        asker=CAROL, current=HERE, question="What is the venue budget?", channel="leadership"
    )
    assert answer.channel == ConversationKey("slack", "T1", "C-lead", "*")
    assert [m.text for m in answer.sources] == ["Decision: the venue budget is secret"]


async def test_window_cap_and_unknown_channels(
    history: History, engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.set_responder(flash_answer, FLASH)
    search = searcher(history, engine, max_messages=500)
    answer = await search.search(asker=ALICE, current=HERE, question="Venue?", days=3)
    assert not answer.found and answer.sources == [] and answer.searched == 500
    assert answer.notes == ["Only the newest 500 messages of the window were searched."]
    assert DECISION not in cometapi.requests_for(FLASH)[-1].last_user_text
    assert history.pages == 3  # stopped reading at the cap
    with pytest.raises(ToolError, match=r"There is no channel '#random' that I can see"):
        await search.search(asker=ALICE, current=HERE, question="q", channel="#random")
    with pytest.raises(ToolError, match="who is asking"):
        await search.search(asker=None, current=HERE, question="q")
    discord = ConversationKey("discord", "G1", "123")
    with pytest.raises(ToolError, match="can't be searched on this platform"):
        await search.search(asker=ALICE, current=discord, question="q")
    calls = len(cometapi.requests)
    lead = ConversationKey("slack", "T1", "C-lead")
    empty = await search.search(asker=CAROL, current=lead, question="q", days=1)
    assert (empty.searched, empty.found, empty.sources) == (0, False, [])
    assert len(cometapi.requests) == calls  # nothing to read, no model call


async def test_bad_citations_are_dropped_and_unreadable_answers_are_an_error(
    history: History, engine: Engine, cometapi: FakeCometAPI
) -> None:
    search = searcher(history, engine)
    ordered = sorted(history.channels["C-general"], key=lambda m: m.ts)
    number = [m.text for m in ordered].index(DECISION) + 1
    cited = [0, 99_999, number, number]
    cometapi.script(
        FLASH, Reply(json.dumps({"answer": "Old Mill.", "sources": cited, "found": True}))
    )
    answer = await search.search(asker=ALICE, current=HERE, question="Venue?")
    assert [m.text for m in answer.sources] == [DECISION]
    cometapi.script(FLASH, Reply("I think it was the Old Mill"), times=2)
    with pytest.raises(ToolError, match="twice returned an unreadable answer"):
        await search.search(asker=ALICE, current=HERE, question="Venue?")


async def test_nothing_in_the_window_means_no_model_call(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    quiet = History()
    search = HistorySearch({"slack": quiet}, engine.summarizer, clock=lambda: NOW)
    answer = await search.search(asker=ALICE, current=HERE, question="Anything?")
    assert answer.answer == "Nobody wrote anything there in the last 7 days."
    assert cometapi.requests == []


async def _unused() -> str:
    raise AssertionError("not called")


def _schema(tool: Any) -> dict[str, Any]:
    return ToolRegistry([tool]).specs()[0].parameters


def test_the_tool_schema(history: History) -> None:
    parameters = _schema(search_history_tool(HistorySearch({}, _no_summarizer)))
    assert parameters["required"] == ["question"]
    assert parameters["properties"]["days"] == {
        "type": "integer",
        "default": 7,
        "minimum": 1,
        "maximum": 90,
        "description": "How many days back to search",
    }


def _no_summarizer(tenant: str) -> Any:
    raise AssertionError("not called")
