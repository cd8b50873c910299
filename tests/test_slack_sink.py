"""A Slack reply (core's `PagedReply` on a `SlackThread`) driven directly, as the engine
drives it, against the fake Slack Web API: retries that discard text, failures half-way,
pings split across deltas, long answers, refused streaming and statuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.sink import slack_pacers, slack_reply
from core import PagedReply
from tests.fakes.slack_api import FakeSlack
from tests.test_slack_harness import ALICE, BOT, GENERAL, TEAM, TOKEN, seed


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=TOKEN) as fake:
        seed(fake)
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.api_url)


def make_sink(
    client: AsyncWebClient, parent: str, *, limit: int | None = None, stream: bool = True
) -> PagedReply:
    reply = slack_reply(
        client,
        slack_pacers(0.01, 0.01),
        channel=GENERAL,
        thread_ts=parent,
        user=ALICE,
        team=TEAM,
        stream=stream,
    )
    if limit is not None:
        reply.surface.limit = limit
    return reply


async def drip(sink: PagedReply, *pieces: str) -> None:
    for piece in pieces:
        await sink.append(piece)
        await asyncio.sleep(0.03)  # let the background flush run between deltas


def bot_messages(slack: FakeSlack, parent: str) -> list[str]:
    return [m.text for m in slack.thread(GENERAL, parent) if m.user == BOT]


async def test_a_retry_rewrites_the_streamed_message_instead_of_adding_one(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    sink = make_sink(client, parent)
    await drip(sink, "The first attempt ", "was cut")
    assert bot_messages(slack, parent) == ["The first attempt was cut"]
    (first,) = [m.ts for m in slack.thread(GENERAL, parent) if m.user == BOT]
    await sink.reset()
    await asyncio.sleep(0.1)
    # the message stays (nothing flickers away), saying it starts again
    assert bot_messages(slack, parent) == ["_Trying again…_"]
    await drip(sink, "Second ", "attempt")
    await sink.finish("Second attempt, complete.")
    assert bot_messages(slack, parent) == ["Second attempt, complete."]
    assert [m.ts for m in slack.thread(GENERAL, parent) if m.user == BOT] == [first]
    assert len(slack.calls_to("chat.startStream")) == 1
    assert not slack.calls_to("chat.delete")
    assert all(c.ok for c in slack.calls)


async def test_a_retry_without_native_streaming_edits_the_same_message(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    sink = make_sink(client, parent, stream=False)
    await drip(sink, "The first attempt ", "was cut")
    (first,) = [m.ts for m in slack.thread(GENERAL, parent) if m.user == BOT]
    await sink.reset()
    await asyncio.sleep(0.1)
    assert bot_messages(slack, parent) == ["_Trying again…_"]
    await sink.finish("Second attempt, complete.")
    assert bot_messages(slack, parent) == ["Second attempt, complete."]
    assert [m.ts for m in slack.thread(GENERAL, parent) if m.user == BOT] == [first]
    assert not slack.calls_to("chat.delete")


async def test_a_failure_half_way_keeps_the_text_and_says_what_happened(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    sink = make_sink(client, parent)
    await drip(sink, "Partial ", "answer")
    await sink.fail("The AI service isn't answering right now.")
    assert bot_messages(slack, parent) == [
        "Partial answer",
        ":warning: The AI service isn't answering right now.",
    ]
    assert not slack.thread(GENERAL, parent)[1].streaming  # the stream was closed


async def test_a_ping_split_across_deltas_is_still_caught(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    sink = make_sink(client, parent)
    await drip(sink, "Hi <!chan", "nel> and @ev", "eryone!")
    await sink.finish("Hi <!channel> and @everyone!")
    [text] = bot_messages(slack, parent)
    assert "<!channel>" not in text and "@everyone" not in text
    assert text.replace("\u2060", "") == "Hi <!channel> and @everyone!"


async def test_a_long_stream_continues_in_a_second_message(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    sink = make_sink(client, parent, limit=560)
    lines = [f"row {i}: {'x' * 30}\n" for i in range(40)]
    await drip(sink, "Table:\n```\n", *lines[:20])
    await drip(sink, *lines[20:], "```\nEnd.")
    await sink.finish("Table:\n```\n" + "".join(lines) + "```\nEnd.")
    parts = bot_messages(slack, parent)
    assert len(parts) >= 2
    assert all(len(p) <= 600 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)  # every code block closed
    assert parts[0] == "Table:"  # cut before the code block rather than inside it
    assert parts[1].startswith("```\n")
    assert "".join(parts).count("row ") == 40
    assert all(not m.streaming for m in slack.thread(GENERAL, parent))


async def test_fallback_shows_a_status_line_until_text_comes(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    slack.refuse_streaming()
    sink = make_sink(client, parent)
    await drip(sink, "Checking.")
    await sink.status("Using current_time…")
    await asyncio.sleep(0.05)
    assert bot_messages(slack, parent) == ["Checking.\n\n_Using current_time…_"]
    await drip(sink, "\n\nIt is noon.")
    await sink.finish("Checking.\n\nIt is noon.")
    assert bot_messages(slack, parent) == ["Checking.\n\nIt is noon."]


async def test_a_refused_status_is_not_asked_again(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    slack.fail("assistant.threads.setStatus", "missing_scope", times=None)
    sink = make_sink(client, parent)
    await sink.status("")
    await asyncio.sleep(0.03)
    await sink.status("Waiting for my answer to the previous message…")
    await asyncio.sleep(0.03)
    await sink.finish("done")
    assert len(slack.calls_to("assistant.threads.setStatus")) == 1
    assert bot_messages(slack, parent) == ["done"]


async def test_abandon_clears_the_status(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    sink = make_sink(client, parent)
    await sink.status("")
    await asyncio.sleep(0.03)
    assert slack.thread_status(GENERAL, parent) == "is thinking…"
    await sink.close()
    assert slack.thread_status(GENERAL, parent) == ""
    assert bot_messages(slack, parent) == []


async def test_an_empty_answer_is_still_a_message(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    sink = make_sink(client, parent)
    await sink.finish("")
    assert bot_messages(slack, parent) == [
        "_(The model returned an empty answer. Try rephrasing the question.)_"
    ]


async def test_an_answer_that_cannot_be_shown_ends_without_hanging(
    slack: FakeSlack, client: AsyncWebClient, caplog: pytest.LogCaptureFixture
) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    slack.refuse_streaming()
    slack.fail("chat.postMessage", "is_archived", times=None)
    sink = make_sink(client, parent)
    await asyncio.wait_for(sink.finish("hello"), 5)
    assert "could not post" in caplog.text
    assert bot_messages(slack, parent) == []
