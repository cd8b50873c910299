"""Slack's agent surface, through the real app, the fake Slack and the fake CometAPI:
👍/👎 under every final answer (streamed or posted), votes stored and counted once per
person, 👎 asks a reason in a modal; Slack's Stop button stops the model call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import ConversationKey
from core.feedback import iso_week
from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.fakes.slack_api import FakeSlack, SlackPayloads, ThreadMessage, check_blocks
from tests.support import team_model
from tests.test_slack_harness import (
    ALICE,
    BOB,
    BOT,
    FLASH,
    GENERAL,
    GPT,
    SECRET,
    TEAM,
    Harness,
    running,
    slack_settings,
)
from tests.test_slack_harness import slack as slack

TENANT = f"slack:{TEAM}"


@pytest.fixture
async def h(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> AsyncIterator[Harness]:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack)
    async with running(settings, slack, cometapi) as harness:
        yield harness


def feedback_of(message: ThreadMessage) -> dict[str, Any]:
    """The message's feedback_buttons element (the block shape checked by the fake)."""
    check_blocks(message.blocks)
    blocks = [b for b in message.blocks if b["type"] == "context_actions"]
    assert len(blocks) == 1, message.blocks
    (element,) = blocks[0]["elements"]
    assert element["type"] == "feedback_buttons"
    return dict(element)


def press(h: Harness, message: ThreadMessage, user: str, *, positive: bool) -> dict[str, Any]:
    element = feedback_of(message)
    button = element["positive_button" if positive else "negative_button"]
    return h.p.block_action(
        user=user,
        channel=GENERAL,
        message_ts=message.ts,
        action={
            "type": "feedback_buttons",
            "action_id": element["action_id"],
            "block_id": "feedback",
            "text": button["text"],
            "value": button["value"],
        },
    )


async def counts(h: Harness) -> dict[tuple[str, str], list[int]]:
    return await h.bot.engine.feedback.week(TENANT, iso_week())


async def test_a_streamed_answer_carries_feedback_and_votes_count_once(h: Harness) -> None:
    h.cometapi.script(GPT, Reply("Paris is the capital of France."))
    mention = h.slack.mention(GENERAL, ALICE, "capital of France?")
    await h.send(mention)
    await h.settle()
    (answer,) = h.replies(GENERAL, mention["event"]["ts"])
    assert answer.streamed and not answer.streaming
    assert "Paris" in answer.text
    stops = [c for c in h.slack.calls if c.method == "chat.stopStream"]
    assert stops and "blocks" in stops[-1].args  # attached when the stream stops
    # Alice 👍, Bob 👎 with a reason, then Alice changes her mind: counted once each
    assert await h.form(press(h, answer, ALICE, positive=True)) == 200
    await h.settle()
    assert await counts(h) == {("dialogue", GPT): [1, 0]}
    assert await h.form(press(h, answer, BOB, positive=False)) == 200
    await h.settle()
    assert await counts(h) == {("dialogue", GPT): [1, 1]}
    (modal,) = h.slack.views
    assert modal["type"] == "modal"
    submit = h.p.view_submission(
        user=BOB, view=modal, values={"reason": {"reason_input": {"value": "too short"}}}
    )
    assert await h.form(submit) == 200
    await h.settle()
    assert await counts(h) == {("dialogue", GPT): [1, 1]}  # the reason did not count twice
    assert await h.form(press(h, answer, ALICE, positive=False)) == 200
    await h.form(press(h, answer, ALICE, positive=False))  # twice: still one vote
    await h.settle()
    assert await counts(h) == {("dialogue", GPT): [0, 2]}
    stored = await h.bot.engine.store.redis.hgetall(
        h.bot.engine.store.keys.of(
            "fb", TENANT, feedback_of(answer)["positive_button"]["value"][3:]
        )
    )
    assert stored[f"v:{BOB}"] == "down|too short"
    assert stored["model"] == GPT and stored["conversation"].startswith(f"slack:{TEAM}:{GENERAL}")
    h.assert_clean()


async def test_a_posted_answer_carries_feedback_on_its_last_page(h: Harness) -> None:
    h.slack.refuse_streaming()  # a workspace without streaming: post, then edit
    h.cometapi.script(GPT, Reply("Here is the answer."))
    mention = h.slack.mention(GENERAL, ALICE, "a question")
    await h.send(mention)
    await h.settle()
    (answer,) = h.replies(GENERAL, mention["event"]["ts"])
    assert not answer.streamed
    element = feedback_of(answer)
    assert element["positive_button"]["value"].startswith("up:")
    assert any(
        b["type"] == "section" and "Here is the answer." in b["text"]["text"] for b in answer.blocks
    )
    h.assert_clean(allowed={"chat.startStream": {"channel_type_not_supported"}})


async def test_stop_cancels_the_model_call_within_a_second_and_the_next_message_goes(
    h: Harness,
) -> None:
    slow = " ".join(f"word{i}" for i in range(40))
    h.cometapi.script(GPT, Reply(slow, chunks=40, chunk_delay=0.15))
    mention = h.slack.mention(GENERAL, ALICE, "tell me a long story")
    root = mention["event"]["ts"]
    await h.send(mention)
    for _ in range(200):
        shown = h.replies(GENERAL, root)
        if shown and "word3" in shown[0].text:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the answer never started")
    pressed = time.monotonic()
    assert await h.send(h.p.agent_session_stopped(GENERAL, root, ALICE, [shown[0].ts])) == 200
    (request,) = h.cometapi.requests_for(GPT)
    for _ in range(100):
        if request.client_closed_at is not None:
            break
        await asyncio.sleep(0.02)
    assert request.client_closed_at is not None, "the model stream was never closed"
    assert request.client_closed_at - pressed < 1.0
    await h.settle()
    (stopped,) = h.replies(GENERAL, root)
    assert stopped.text.rstrip().endswith("(stopped)_") or stopped.text.rstrip().endswith(
        "(stopped)"
    )
    assert "word39" not in stopped.text
    # the next message in the thread proceeds
    h.cometapi.script(GPT, Reply("Back again."))
    follow = h.slack.user_message(GENERAL, ALICE, "and now?", thread_ts=root)
    await h.send(follow)
    await h.settle()
    assert any("Back again." in m.text for m in h.replies(GENERAL, root))
    h.assert_clean()


# --- the agent surface -------------------------------------------------------------------------


def agent_thread(h: Harness, user: str = ALICE) -> tuple[str, str]:
    """A new agent thread in the user's DM with the bot (Slack posts its root)."""
    dm = h.slack.add_im(user)
    root = h.slack.add_message(dm, "New chat", user=BOT)
    return dm, root


async def test_a_new_agent_thread_gets_prompts_and_its_title_from_the_first_question(
    h: Harness,
) -> None:
    dm, root = agent_thread(h)
    started = h.p.assistant_thread_started(dm, root, ALICE, {"channel_id": GENERAL})
    assert await h.send(started) == 200
    await h.settle()
    prompts = h.slack.prompts[(dm, root)]
    assert 1 <= len(prompts) <= 4
    assert [p["message"] for p in prompts] == list(h.bot.settings.slack_suggested_prompts)
    assert any("viewing" in p["message"] for p in prompts)
    h.cometapi.script(GPT, Reply("Use the VPN guide."))
    first = h.slack.user_message(dm, ALICE, "How do I set up the VPN?", thread_ts=root)
    await h.send(first)
    await h.settle()
    assert h.slack.titles[(dm, root)] == "How do I set up the VPN?"
    h.cometapi.script(GPT, Reply("Sure."))
    await h.send(h.slack.user_message(dm, ALICE, "and on Linux?", thread_ts=root))
    await h.settle()
    assert h.slack.titles[(dm, root)] == "How do I set up the VPN?"  # the first question only
    assert any("Sure." in m.text for m in h.replies(dm, root))
    # the session was `processing` while each answer was written, `active` after
    statuses = [s for c, t, s in h.slack.sessions if (c, t) == (dm, root)]
    assert statuses == ["processing", "active", "processing", "active"]
    h.assert_clean()


async def test_summarize_this_channel_summarizes_the_viewed_channel_if_the_user_may_read_it(
    h: Harness,
) -> None:
    h.cometapi.set_responder(team_model)
    h.slack.add_message(GENERAL, "We decided to ship on Tuesday", user=BOB)
    h.slack.add_message(SECRET, "secret plans for the offsite", user=BOB)
    dm, root = agent_thread(h)
    await h.send(h.p.assistant_thread_started(dm, root, ALICE, {"channel_id": GENERAL}))
    await h.settle()
    await h.send(h.slack.user_message(dm, ALICE, "Summarize this channel", thread_ts=root))
    await h.settle()
    (summary,) = [m for m in h.replies(dm, root) if m.ts != root]
    assert "#general" in summary.text
    assert "ship on Tuesday" in json.dumps(h.cometapi.requests_for(FLASH)[-1].json)
    # Alice moves to #secret, which she is not in: refused, nothing of it is read
    asked = len(h.cometapi.requests_for(FLASH))
    moved = h.p.assistant_thread_context_changed(dm, root, ALICE, {"channel_id": SECRET})
    await h.send(moved)
    await h.settle()
    await h.send(h.slack.user_message(dm, ALICE, "summarize this channel please", thread_ts=root))
    await h.settle()
    refusal = h.replies(dm, root)[-1]
    assert "not a member of #secret" in refusal.text
    assert len(h.cometapi.requests_for(FLASH)) == asked
    assert not any("offsite" in json.dumps(r.json) for r in h.cometapi.requests)
    h.assert_clean()


async def test_a_stopped_answer_leaves_the_processing_state(h: Harness) -> None:
    slow = " ".join(f"word{i}" for i in range(30))
    h.cometapi.script(GPT, Reply(slow, chunks=30, chunk_delay=0.15))
    mention = h.slack.mention(GENERAL, ALICE, "a long one")
    root = mention["event"]["ts"]
    await h.send(mention)
    for _ in range(200):
        if any(s == "processing" for _, t, s in h.slack.sessions if t == root):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    await h.send(h.p.agent_session_stopped(GENERAL, root, ALICE))
    await h.settle()
    statuses = [s for c, t, s in h.slack.sessions if (c, t) == (GENERAL, root)]
    assert statuses == ["processing", "active"]
    h.assert_clean()


# --- per-channel settings and the Home tab --------------------------------------------------------

DAVE = "U0DAVE00001"  # a workspace admin


def add_admin(h: Harness) -> None:
    h.slack.add_user(DAVE, "dave", display_name="Dave", is_admin=True)


async def settings_modal(h: Harness, user: str, text: str = "settings") -> dict[str, Any]:
    opened = len(h.slack.views)
    await h.command("/teambot", text, user=user, channel=GENERAL)
    await h.settle()
    assert len(h.slack.views) == opened + 1
    return h.slack.views[-1]


def filled(instructions: str, *, model: str = "inherit", tools: str = "inherit") -> dict[str, Any]:
    def option(value: str) -> dict[str, Any]:
        return {"selected_option": {"value": value, "text": {"type": "plain_text", "text": value}}}

    return {
        "instructions": {"instructions": {"type": "plain_text_input", "value": instructions}},
        "answer_mode": {"answer_mode": {"type": "static_select", **option("inherit")}},
        "model": {"model": {"type": "static_select", **option(model)}},
        "tools": {"tools": {"type": "static_select", **option(tools)}},
        "summary_language": {"summary_language": {"type": "plain_text_input", "value": ""}},
    }


async def submit(h: Harness, user: str, view: dict[str, Any], values: dict[str, Any]) -> str:
    payload = h.p.view_submission(user=user, view=view, values=values)
    status, body = await h.post(h.slack.signer.form_request(SlackPayloads.shortcut_form(payload)))
    assert status == 200
    return body


async def test_an_admin_sets_channel_instructions_that_apply_in_that_channel_only(
    h: Harness,
) -> None:
    add_admin(h)
    modal = await settings_modal(h, DAVE)
    assert modal.get("submit") and any(b["type"] == "input" for b in modal["blocks"])
    body = await submit(h, DAVE, modal, filled("Answer like a pirate."))
    assert "errors" not in body
    h.cometapi.script(GPT, Reply("Arr."), Reply("Plain."))
    here = h.slack.mention(GENERAL, ALICE, "hello")
    await h.send(here)
    await h.settle()
    there = h.slack.mention(SECRET, BOB, "hello")
    await h.send(there)
    await h.settle()
    first, second = h.cometapi.requests_for(GPT)[-2:]
    assert "Answer like a pirate." in first.system_text
    assert "pirate" not in second.system_text
    # the answer in #general still carries feedback; the admin's change is in the Home tab
    await h.send(h.p.app_home_opened(DAVE))
    await h.settle()
    home = json.dumps(h.slack.homes[DAVE])
    assert f"<#{GENERAL}>" in home and GPT in home and "Usage" in home
    h.assert_clean()


async def test_a_member_sees_the_settings_read_only_and_cannot_change_them(h: Harness) -> None:
    add_admin(h)
    modal = await settings_modal(h, DAVE)
    await submit(h, DAVE, modal, filled("Be terse."))
    # Bob is neither an admin nor the channel's creator
    shown = await settings_modal(h, BOB)
    assert "submit" not in shown
    assert "Be terse." in json.dumps(shown["blocks"])
    body = await submit(h, BOB, modal, filled("Be verbose."))  # a forged submission
    assert json.loads(body)["response_action"] == "errors"
    stored = await h.bot.engine.channels.get(ConversationKey("slack", TEAM, GENERAL, "*"))
    assert stored.instructions == "Be terse."
    # the channel's creator (Alice) may; the workspace's settings are for admins only
    assert (await settings_modal(h, ALICE)).get("submit")
    assert "submit" not in await settings_modal(h, ALICE, "settings workspace")
    assert (await settings_modal(h, DAVE, "settings workspace")).get("submit")
    h.assert_clean()


async def test_the_home_tab_shows_usage_and_feedback_to_admins_and_help_to_members(
    h: Harness,
) -> None:
    add_admin(h)
    h.cometapi.script(GPT, Reply("An answer."))
    mention = h.slack.mention(GENERAL, ALICE, "question")
    await h.send(mention)
    await h.settle()
    (answer,) = h.replies(GENERAL, mention["event"]["ts"])
    await h.form(press(h, answer, ALICE, positive=True))
    await h.settle()
    await h.send(h.p.app_home_opened(DAVE))
    await h.send(h.p.app_home_opened(BOB))
    await h.settle()
    admin = json.dumps(h.slack.homes[DAVE], ensure_ascii=False)
    member = json.dumps(h.slack.homes[BOB], ensure_ascii=False)
    assert "Usage today" in admin and "This week" in admin and f"dialogue · `{GPT}`" in admin
    assert "👍 1 · 👎 0" in admin
    assert "What I can do" in member
    assert "Usage" not in member and GPT not in member
    h.assert_clean()
