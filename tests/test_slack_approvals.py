"""Approval cards on Slack, through the real app and the fake Slack: the asker approves
or denies with the buttons, someone else is refused privately, an admin may decide, a
request expires, and the card says how it ended."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import approval_tools
from tests.fakes.cometapi import FakeCometAPI, Reply, ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.test_slack_harness import (
    ALICE,
    BOB,
    BOT,
    GENERAL,
    TEAM,
    Harness,
    running,
    slack_settings,
)
from tests.test_slack_harness import slack as slack

GPT = "gpt-5.3-chat-latest"


@pytest.fixture
async def h(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> AsyncIterator[Harness]:
    settings = slack_settings(
        redis_url,
        key_prefix,
        cometapi,
        slack,
        tool_modules="tests.approval_tools",
        approval_timeout_seconds=3,
    )
    async with running(settings, slack, cometapi) as harness:
        yield harness


def click(h: Harness, card: Any, *, user: str, approve: bool) -> dict[str, Any]:
    """A `block_actions` payload: `user` pressed Approve or Deny on the card."""
    action = "teambot_approve" if approve else "teambot_deny"
    return {
        "type": "block_actions",
        "token": h.slack.verification_token,
        "api_app_id": h.slack.api_app_id,
        "team": {"id": TEAM, "domain": h.slack.team_domain},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "container": {"type": "message", "message_ts": card.ts, "channel_id": GENERAL},
        "channel": {"id": GENERAL, "name": "general"},
        "message": {"ts": card.ts, "text": card.text},
        "trigger_id": h.p.trigger_id(),
        "response_url": h.slack.response_url(GENERAL, user),
        "actions": [
            {
                "type": "button",
                "action_id": action,
                "block_id": "approval",
                "text": {"type": "plain_text", "text": "Approve" if approve else "Deny"},
                "value": card_id(card),
                "action_ts": h.p.new_ts(),
            }
        ],
    }


def card_id(card: Any) -> str:
    blocks = card.blocks if isinstance(card.blocks, list) else json.loads(card.blocks)
    actions = [b for b in blocks if b.get("type") == "actions"]
    return str(actions[0]["elements"][0]["value"])


async def the_card(h: Harness, root: str) -> Any:
    for _ in range(200):
        cards = [m for m in h.slack.thread(GENERAL, root) if m.user == BOT and m.blocks]
        if cards:
            return cards[-1]
        await asyncio.sleep(0.02)
    raise AssertionError("no approval card was posted")


def script(h: Harness) -> None:
    h.cometapi.script(
        GPT,
        Reply("Filing it.", tool_calls=[ToolCall("create_ticket", {"title": "VPN down"})]),
        Reply("Done: the ticket is filed."),
    )


async def test_the_asker_approves_and_the_answer_goes_on(h: Harness) -> None:
    approval_tools.CREATED.clear()
    script(h)
    mention = h.slack.mention(GENERAL, ALICE, "file a ticket: VPN down")
    root = mention["event"]["ts"]
    await h.send(mention)
    card = await the_card(h, root)
    assert "create_ticket" in card.text and "VPN down" in card.text
    assert approval_tools.CREATED == []
    # Bob is not the asker (nor an admin): refused privately, nothing runs
    assert await h.form(click(h, card, user=BOB, approve=True)) == 200
    await asyncio.sleep(0.2)
    assert "Only Alice" in h.slack.responses[-1].text
    assert approval_tools.CREATED == []
    assert await h.form(click(h, card, user=ALICE, approve=True)) == 200
    await h.settle()
    assert approval_tools.CREATED == ["VPN down"]
    texts = [m.text for m in h.slack.thread(GENERAL, root) if m.user == BOT]
    assert any("Approved by Alice" in t for t in texts)
    assert any(t.endswith("Done: the ticket is filed.") for t in texts)
    after = next(m for m in h.slack.thread(GENERAL, root) if m.ts == card.ts)
    assert "teambot_approve" not in json.dumps(after.blocks)  # the buttons are gone


async def test_denied_and_expired_requests_do_not_run(h: Harness) -> None:
    approval_tools.CREATED.clear()
    script(h)
    first = h.slack.mention(GENERAL, ALICE, "file a ticket")
    await h.send(first)
    card = await the_card(h, first["event"]["ts"])
    await h.form(click(h, card, user=ALICE, approve=False))
    await h.settle()
    script(h)
    second = h.slack.mention(GENERAL, ALICE, "file it again")
    await h.send(second)
    await the_card(h, second["event"]["ts"])
    await h.settle()  # nobody clicks: it expires after 3 s
    assert approval_tools.CREATED == []
    denied = [m.text for m in h.slack.thread(GENERAL, first["event"]["ts"]) if m.user == BOT]
    expired = [m.text for m in h.slack.thread(GENERAL, second["event"]["ts"]) if m.user == BOT]
    assert any("Denied by Alice" in t for t in denied)
    assert any("Nobody decided in time" in t for t in expired)
    results = [r.tool_results for r in h.cometapi.requests_for(GPT) if r.tool_results]
    assert all("Not run" in result[0][1] for result in results)
    for texts in (denied, expired):  # the model still answered, under its own first words
        assert any(t.endswith("Done: the ticket is filed.") for t in texts)


async def test_an_admin_may_decide_for_the_asker(h: Harness) -> None:
    approval_tools.CREATED.clear()
    h.slack.add_user("U0ADMIN0001", "admin", display_name="Ada", is_admin=True)
    script(h)
    mention = h.slack.mention(GENERAL, ALICE, "file a ticket")
    await h.send(mention)
    card = await the_card(h, mention["event"]["ts"])
    await h.form(click(h, card, user="U0ADMIN0001", approve=True))
    await h.settle()
    assert approval_tools.CREATED == ["VPN down"]
