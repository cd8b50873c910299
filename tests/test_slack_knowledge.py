"""`/recap` and `search_history` on Slack, end to end against the fake Slack Web API and
the fake CometAPI: who may set a recap, the setter's time zone from `users.info`, a due
recap posted in the channel, a decision found among 2,000 messages with its permalink, a
private channel refused without a read or a model call."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator

import pytest

from tests.fakes.cometapi import FakeCometAPI, RecordedRequest, Reply
from tests.fakes.cometapi import ToolCall as ScriptedCall
from tests.fakes.slack_api import FakeSlack
from tests.support import team_model
from tests.test_slack_harness import (
    ALICE,
    BOB,
    BOT,
    CAROL,
    FLASH,
    GENERAL,
    GPT,
    SECRET,
    Harness,
    running,
    slack_settings,
)
from tests.test_slack_harness import slack as slack

DAY = 86_400


@pytest.fixture
async def h(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> AsyncIterator[Harness]:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack, recap_min_interval_minutes=1)
    async with running(settings, slack, cometapi) as harness:
        yield harness


async def test_recap_permissions_time_zone_and_a_due_recap_posted_once(h: Harness) -> None:
    h.cometapi.set_responder(team_model)
    # Bob is a member, not an admin, not the channel's creator (Alice created #general)
    await h.command("/recap", "daily 09:00", user=BOB, channel=GENERAL)
    await h.settle()
    refused = h.slack.responses[-1]
    assert refused.response_type == "ephemeral"
    assert refused.text == "Only people who can manage this channel can set or remove its recap."
    await h.command("/recap", "", user=BOB, channel=GENERAL)
    await h.settle()
    assert h.slack.responses[-1].text.startswith("This channel has no scheduled recap.")

    # Alice created it: her time zone (users.info tz) is the schedule's
    await h.command("/recap", "weekdays 17:30", user=ALICE, channel=GENERAL)
    await h.settle()
    assert "17:30 (Europe/Berlin)" in h.slack.responses[-1].text, h.slack.responses[-1].text

    # every minute; the due time comes (the scheduler's clock is moved, nothing else)
    await h.command("/recap", "every 1m", user=ALICE, channel=GENERAL)
    await h.settle()
    knowledge = h.bot.engine.knowledge
    state = await knowledge.recaps.get(knowledge_key())
    assert state is not None
    h.slack.add_message(GENERAL, "We decided the venue is the Old Mill", user=CAROL)
    h.slack.add_message(GENERAL, "I will book the bus", user=BOB)
    due = state.next_due
    knowledge.recaps.clock = lambda: due + 1
    knowledge.recaps.changed.set()
    for _ in range(500):
        if any(m.user == BOT for m in h.slack.messages(GENERAL)):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    posts = [m for m in h.slack.messages(GENERAL) if m.user == BOT]
    assert len(posts) == 1
    assert posts[0].text.startswith("*Recap: 2 messages since ")
    [request] = h.cometapi.requests_for(FLASH)
    assert "Old Mill" in request.last_user_text and "book the bus" in request.last_user_text
    h.assert_clean()


def knowledge_key() -> object:
    from core.types import ConversationKey

    return ConversationKey("slack", "T0000000001", GENERAL, "-")


def flash_answer(request: RecordedRequest) -> Reply:
    cited = [
        int(n) for n in re.findall(r"^\[(\d+)\] [^\n]*venue", request.last_user_text, re.MULTILINE)
    ]
    answer = "Carol decided the offsite venue is the Old Mill in Bath."
    return Reply(json.dumps({"answer": answer, "sources": cited, "found": bool(cited)}))


async def test_search_history_finds_a_decision_among_2000_messages_with_its_permalink(
    h: Harness,
) -> None:
    now = time.time()
    for i in range(2000):
        ts = f"{now - 7 * DAY + 60 + i * 300:.6f}"
        h.slack.add_message(GENERAL, f"status {i}: ticket T-{i} in review", user=BOB, ts=ts)
    decided = f"{now - 5 * DAY + 7:.6f}"
    h.slack.add_message(
        GENERAL, "Decision: the offsite venue is the Old Mill in Bath", user=CAROL, ts=decided
    )
    h.cometapi.set_responder(flash_answer, FLASH)
    question = {"question": "What did we decide about the offsite venue?", "days": 7}
    h.cometapi.script(GPT, Reply(tool_calls=[ScriptedCall("search_history", question)]))
    parent = h.slack.add_message(GENERAL, f"<@{BOT}> what did we decide about the venue?", ALICE)
    await h.send(h.p.app_mention(GENERAL, ALICE, f"<@{BOT}> what did we decide?", ts=parent))
    await h.settle()

    link = f"https://{h.slack.team_domain}.slack.com/archives/{GENERAL}/p{decided.replace('.', '')}"
    [search] = h.cometapi.requests_for(FLASH)
    assert "Old Mill" in search.last_user_text
    # the 2,000, the decision and the question: the whole window
    assert "(2,002, oldest first)" in search.last_user_text
    [(_, result)] = h.cometapi.requests_for(GPT)[-1].tool_results
    assert json.loads(result)["sources"][0]["link"] == link
    answer = h.replies(GENERAL, parent)[-1].text
    assert link in answer  # the fake model echoes the tool result into its answer

    # #secret is private and Alice is not in it: refused, not read, no model call
    h.cometapi.clear_requests()
    reads = [c for c in h.slack.calls if c.method == "conversations.history"]
    private = {"question": "What is in #secret?", "channel": f"<#{SECRET}|secret>"}
    h.cometapi.script(GPT, Reply(tool_calls=[ScriptedCall("search_history", private)]))
    second = h.slack.add_message(GENERAL, f"<@{BOT}> what is in secret?", ALICE)
    await h.send(h.p.app_mention(GENERAL, ALICE, f"<@{BOT}> what is in secret?", ts=second))
    await h.settle()
    assert [c for c in h.slack.calls if c.method == "conversations.history"] == reads
    assert h.cometapi.requests_for(FLASH) == []
    [(_, refused)] = h.cometapi.requests_for(GPT)[-1].tool_results
    assert "not a member of #secret" in refused
    h.assert_clean()


async def test_documents_attached_on_slack_reach_the_models(h: Harness) -> None:
    """A 20-page PDF with a fact only on page 17 is read into the message; a 3-page scan
    goes to Flash-Lite as application/pdf; an oversized file is noted, not downloaded."""
    from tests.core.test_documents import scanned_pdf, text_pdf

    pdf = text_pdf(20, fact_page=17, fact="The venue contract number is VX-4471.")
    report = h.slack.add_file("report.pdf", "application/pdf", pdf, user=ALICE)
    mention = h.slack.mention(GENERAL, ALICE, "what is the contract number?", files=[report])
    await h.send(mention)
    await h.settle()
    [request] = h.cometapi.requests_for(GPT)
    assert "--- page 17 ---" in request.last_user_text
    assert "VX-4471" in request.last_user_text

    h.cometapi.clear_requests()
    scan = scanned_pdf(3)
    scanned = h.slack.add_file("scan.pdf", "application/pdf", scan, user=ALICE)
    big = h.slack.add_file("dump.csv", "text/csv", b"a,b\n1,2\n", user=ALICE)
    big["size"] = 300 * 1024 * 1024
    mention = h.slack.mention(GENERAL, ALICE, "summarize the scan", files=[scanned, big])
    await h.send(mention)
    await h.settle()
    [request] = h.cometapi.requests
    assert request.model == FLASH
    mimes = [
        part["inlineData"]["mimeType"]
        for content in request.contents
        for part in content.get("parts", [])
        if "inlineData" in part
    ]
    assert mimes == ["application/pdf"]
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert "I skipped dump.csv: it is 314.6 MB" in answer.text
    assert len(h.slack.file_downloads) == 2  # report.pdf and scan.pdf; not dump.csv
    h.assert_clean()
