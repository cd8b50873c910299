"""Per-user rate limits and the slow-work pool on Slack, end to end: signed events and
slash commands into the real Bolt endpoint, what people see in the fake Slack."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.fakes.slack_api import FakeSlack
from tests.support import team_model
from tests.test_slack_harness import (
    ALICE,
    BOB,
    BOT,
    FLASH,
    GENERAL,
    GPT,
    Harness,
    running,
    slack_settings,
)

# Fixtures, re-exported so pytest finds them here.
from tests.test_slack_harness import slack as slack


async def until(condition: Callable[[], bool], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling what the fake Slack shows
            await asyncio.sleep(0.02)


def _answered(h: Harness, ts: str) -> bool:
    thread = h.thread(GENERAL, ts)
    return [m.user for m in thread] == [ALICE, BOT] and not thread[1].streaming


@pytest.fixture
async def limited(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> AsyncIterator[Harness]:
    settings = slack_settings(
        redis_url, key_prefix, cometapi, slack, user_rate_limit="20/minute", reply_concurrency=2
    )
    async with running(settings, slack, cometapi) as harness:
        yield harness


async def test_thirty_mentions_from_one_person_twenty_answered_one_private_note(
    limited: Harness,
) -> None:
    h = limited
    h.cometapi.set_responder(lambda r: Reply(f"re {r.last_user_text}"))
    mentions = [h.slack.mention(GENERAL, ALICE, f"question {n}") for n in range(30)]
    for mention in mentions:
        assert await h.send(mention) == 200  # acknowledged, limited or not
    bobs = h.slack.mention(GENERAL, BOB, "and mine?")
    assert await h.send(bobs) == 200
    await h.settle()

    answered = [
        m for m in mentions if [x.user for x in h.thread(GENERAL, m["event"]["ts"])][1:] == [BOT]
    ]
    assert len(answered) == 20
    assert len(h.cometapi.requests_for(GPT)) == 21  # Alice's twenty and Bob's
    [note] = h.slack.ephemerals(ALICE)
    assert "answer you again in about" in note.text
    assert h.slack.ephemerals(BOB) == []
    assert [x.user for x in h.thread(GENERAL, bobs["event"]["ts"])] == [BOB, BOT]
    h.assert_clean()


async def test_summarize_counts_against_the_same_limit(limited: Harness) -> None:
    h = limited
    h.cometapi.set_responder(team_model)
    h.slack.add_message(GENERAL, "We decided on Tuesday", user=BOB)
    for n in range(20):
        await h.send(h.slack.mention(GENERAL, ALICE, f"q{n}"))
    await h.settle()
    ack = await h.command("/summarize", "", user=ALICE, channel=GENERAL)
    assert "answer you again in about" in ack
    await h.settle()
    assert h.cometapi.requests_for(FLASH) == []  # nothing read, nothing summarized
    ack = await h.command("/summarize", "", user=BOB, channel=GENERAL)
    assert "Reading this conversation" in ack


async def test_slow_summaries_never_hold_up_an_answer(limited: Harness) -> None:
    """Two reply slots; `/summarize` and two "@bot summarize" in threads, each taking
    seconds; then a question: it is answered while every summary is still being written."""
    h = limited

    def responder(request: Any) -> Reply:
        reply = team_model(request)
        if request.model == FLASH:
            return dataclasses.replace(reply, delay=3.0)
        return reply

    h.cometapi.set_responder(responder)
    h.slack.add_message(GENERAL, "We decided on Tuesday", user=BOB)
    threads = [h.slack.add_message(GENERAL, f"plan {n}?", user=BOB) for n in range(2)]
    for n, parent in enumerate(threads):
        h.slack.add_message(GENERAL, f"I will do part {n}", user=BOB, thread_ts=parent)
        await h.send(h.slack.mention(GENERAL, ALICE, "summarize this thread", thread_ts=parent))
    await h.command("/summarize", "", user=BOB, channel=GENERAL)
    await until(lambda: len(h.cometapi.requests_for(FLASH)) == 3, 2.0)
    mention = h.slack.mention(GENERAL, ALICE, "quick question")
    await h.send(mention)
    await until(lambda: _answered(h, mention["event"]["ts"]), 2.0)
    # the summaries are still being written
    assert h.slack.responses == []
    assert all(h.replies(GENERAL, parent) == [] for parent in threads)
    await h.settle()
    assert len(h.slack.responses) == 1
    assert all(h.replies(GENERAL, p)[-1].text.startswith("*Thread summary*") for p in threads)
