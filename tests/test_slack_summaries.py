"""Summaries and memory commands end to end: `@bot summarize`, the "Summarize thread" message
shortcut, `/summarize` (ephemeral, with a button to share), permission checks, `/forget`."""

from __future__ import annotations

import json
import time
from typing import Any

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
    TEAM,
    Harness,
)

# Fixtures, re-exported so pytest finds them here.
from tests.test_slack_harness import h as h
from tests.test_slack_harness import slack as slack


def transcript(h: Harness) -> str:
    """What the summary model was given (the last summary request)."""
    return json.dumps(h.cometapi.requests_for(FLASH)[-1].json)


def block_action(h: Harness, share_id: str, *, user: str, channel: str) -> dict[str, Any]:
    """A `block_actions` payload: the user pressed the share button on the ephemeral."""
    return {
        "type": "block_actions",
        "token": h.slack.verification_token,
        "api_app_id": h.slack.api_app_id,
        "team": {"id": TEAM, "domain": h.slack.team_domain},
        "user": {"id": user, "username": "alice", "name": "alice", "team_id": TEAM},
        "container": {
            "type": "message",
            "message_ts": h.p.new_ts(),
            "channel_id": channel,
            "is_ephemeral": True,
        },
        "channel": {"id": channel, "name": "general"},
        "trigger_id": h.p.trigger_id(),
        "response_url": h.slack.response_url(channel, user),
        "actions": [
            {
                "type": "button",
                "action_id": "share_summary",
                "block_id": "share",
                "text": {"type": "plain_text", "text": "Share in channel"},
                "value": share_id,
                "action_ts": h.p.new_ts(),
            }
        ],
    }


async def test_summarize_a_500_message_thread_with_a_mention(h: Harness) -> None:
    h.cometapi.set_responder(team_model)
    h.slack.add_message(GENERAL, "unrelated top-level chatter", user=BOB)
    parent = h.slack.seed_thread(
        GENERAL, 500, [ALICE, BOB, CAROL], text="note {i}", parent_text="Migration plan?"
    )
    h.slack.add_message(GENERAL, "We decided to migrate on May 3", user=BOB, thread_ts=parent)
    h.slack.add_message(GENERAL, "I will write the runbook", user=CAROL, thread_ts=parent)
    request = h.slack.mention(GENERAL, ALICE, "summarize this thread", thread_ts=parent)
    await h.send(request)
    await h.settle()

    reads = h.slack.calls_to("conversations.replies")
    assert len(reads) == 3 and all(c.ok for c in reads)  # 503 messages, 200 per page
    assert all(c.args["ts"] == parent for c in reads)
    summary = h.replies(GENERAL, parent)[-1]
    assert summary.text.startswith("*Thread summary*")
    assert "503 messages" in summary.text
    assert "Bob Baker: We decided to migrate on May 3" in summary.text
    assert "Carol" in summary.text and "I will write the runbook" in summary.text
    assert "unrelated top-level chatter" not in transcript(h)
    assert "summarize this thread" not in transcript(h)
    assert h.cometapi.requests_for(GPT) == []  # the summary route, not dialogue
    assert not summary.streamed
    assert h.slack.statuses[0].status == "is thinking…"
    h.assert_clean()


async def test_the_message_shortcut_summarizes_the_whole_thread(h: Harness) -> None:
    h.cometapi.set_responder(team_model)
    parent = h.slack.seed_thread(GENERAL, 12, [ALICE, BOB], parent_text="Offsite venue?")
    reply = h.slack.thread(GENERAL, parent)[5]
    message = h.p.user_message_object(str(reply.user), reply.text, ts=reply.ts, thread_ts=parent)
    shortcut = h.p.message_shortcut(
        "summarize_thread", user_id=CAROL, channel_id=GENERAL, message=message
    )
    assert await h.form(shortcut) == 200
    await h.settle()
    summary = h.replies(GENERAL, parent)[-1]
    assert summary.thread_ts == parent
    assert "13 messages" in summary.text  # the parent and all 12 replies
    assert h.slack.responses == []  # posted in the thread, not as an ephemeral
    h.assert_clean()


async def test_the_shortcut_where_the_bot_cannot_read_says_so_privately(h: Harness) -> None:
    h.slack.add_channel("C0NOBOT0001", "nobot", members=[ALICE], bot_is_member=False)
    ts = h.slack.add_message("C0NOBOT0001", "a message", user=ALICE)
    message = h.p.user_message_object(ALICE, "a message", ts=ts)
    shortcut = h.p.message_shortcut(
        "summarize_thread", user_id=ALICE, channel_id="C0NOBOT0001", message=message
    )
    assert await h.form(shortcut) == 200
    await h.settle()
    [response] = h.slack.responses
    assert response.response_type == "ephemeral"
    assert "I'm not a member of it" in response.text
    assert h.cometapi.requests == []
    h.assert_clean(allowed={"conversations.replies": {"not_in_channel"}})


async def test_slash_summarize_is_private_until_shared(h: Harness) -> None:
    h.cometapi.set_responder(team_model)
    old = f"{time.time() - 3 * 24 * 3600:.6f}"
    h.slack.add_message(GENERAL, "ancient history we decided long ago", user=BOB, ts=old)
    top = h.slack.add_message(GENERAL, "Who owns the launch?", user=ALICE)
    h.slack.add_message(GENERAL, "I will own the launch", user=BOB, thread_ts=top)
    h.slack.add_message(GENERAL, "We decided on Tuesday", user=CAROL)

    ack = await h.command("/summarize", "", user=ALICE, channel=GENERAL)
    assert "Reading this conversation (last 24 hours)" in ack
    await h.settle()
    [private] = h.slack.responses
    assert private.response_type == "ephemeral"
    assert private.replace_original
    assert "*#general — last 24 hours*" in private.text
    text = transcript(h)
    assert "I will own the launch" in text  # thread replies are included
    assert "ancient history" not in text  # older than the window
    blocks = private.body["blocks"]
    assert blocks[0]["type"] == "header" and blocks[1]["type"] == "section"
    button = blocks[-1]["elements"][0]
    assert (button["action_id"], button["text"]["text"]) == ("share_summary", "Share in channel")
    assert [m.text for m in h.slack.messages(GENERAL) if m.user == BOT] == []  # not shared yet

    # Nobody but the asker can publish it (the button was only ever shown to them).
    assert await h.form(block_action(h, button["value"], user=BOB, channel=GENERAL)) == 200
    await h.settle()
    assert h.slack.responses[-1].text == "Only the person who asked for this summary can share it."
    assert [m.text for m in h.slack.messages(GENERAL) if m.user == BOT] == []

    share = block_action(h, button["value"], user=ALICE, channel=GENERAL)
    assert await h.form(share) == 200
    await h.settle()
    [shared] = [m for m in h.slack.messages(GENERAL) if m.user == BOT]
    assert shared.text.startswith("*#general — last 24 hours*")
    assert f"Shared by <@{ALICE}> with /summarize" in shared.text
    assert h.slack.responses[-1].delete_original  # the private copy is gone

    # Asked again: the shared summary is not itself summarized, and nothing new was said,
    # so the cached summary answers without a model call.
    calls = len(h.cometapi.requests_for(FLASH))
    await h.command("/summarize", "", user=BOB, channel=GENERAL)
    await h.settle()
    assert len(h.cometapi.requests_for(FLASH)) == calls
    assert h.slack.responses[-1].text == private.text
    h.assert_clean()


async def test_slash_summarize_another_channel_and_a_time_window(h: Harness) -> None:
    h.cometapi.set_responder(team_model)
    h.slack.add_message(SECRET, "budget is decided", user=BOB)
    ack = await h.command("/summarize", f"<#{SECRET}|secret> 48h", user=BOB, channel=GENERAL)
    assert f"Reading <#{SECRET}> (last 48 hours)" in ack
    await h.settle()
    [private] = h.slack.responses
    assert "*#secret — last 48 hours*" in private.text
    assert "budget is decided" in transcript(h)
    history = h.slack.calls_to("conversations.history")[0]
    assert abs(float(history.args["oldest"]) - (time.time() - 48 * 3600)) < 60
    h.assert_clean()


async def test_nobody_can_summarize_a_conversation_they_cannot_read(h: Harness) -> None:
    h.slack.add_message(SECRET, "the acquisition target is ACME", user=BOB)
    await h.command("/summarize", f"<#{SECRET}|secret>", user=ALICE, channel=GENERAL)
    await h.settle()
    [refusal] = h.slack.responses
    assert refusal.response_type == "ephemeral"
    assert refusal.text == "You're not a member of #secret, so I can't summarize it for you."
    assert h.slack.calls_to("conversations.history") == []  # checked before reading
    assert h.slack.calls_to("conversations.replies") == []
    assert h.cometapi.requests == []
    h.assert_clean()


async def test_guests_need_to_be_in_a_public_channel_too(h: Harness) -> None:
    guest = h.slack.add_user("U0GUEST0001", "guest", display_name="Guest")
    guest["is_restricted"] = True
    h.slack.add_channel("C0PUBLIC001", "public", members=[ALICE])
    h.slack.add_channel("C0GUESTS001", "guests", members=["U0GUEST0001"])
    await h.command(
        "/summarize", "<#C0PUBLIC001|public>", user="U0GUEST0001", channel="C0GUESTS001"
    )
    await h.settle()
    [refusal] = h.slack.responses
    assert "not a member of #public" in refusal.text
    assert h.slack.calls_to("conversations.history") == []


async def test_people_of_another_workspace_need_to_be_in_a_public_channel(h: Harness) -> None:
    """Slack Connect (or another organization of an Enterprise Grid): a full member of
    their own workspace, but not of the one that installed the bot."""
    h.slack.add_user("U0FOREIGN01", "dana", display_name="Dana", team_id="T0OTHERTEAM")
    h.slack.add_channel("C0PUBLIC001", "public", members=[ALICE])
    h.slack.add_channel("C0SHARED001", "shared", members=["U0FOREIGN01", ALICE])
    h.slack.add_message("C0PUBLIC001", "the roadmap is decided", user=ALICE)
    await h.command(
        "/summarize", "<#C0PUBLIC001|public>", user="U0FOREIGN01", channel="C0SHARED001"
    )
    await h.settle()
    [refusal] = h.slack.responses
    assert refusal.text == "You're not a member of #public, so I can't summarize it for you."
    assert h.slack.calls_to("conversations.history") == []
    assert h.cometapi.requests == []
    # A full member of the installing workspace may, without being in the channel.
    h.cometapi.set_responder(team_model)
    await h.command("/summarize", "<#C0PUBLIC001|public>", user=CAROL, channel=GENERAL)
    await h.settle()
    assert "*#public — last 24 hours*" in h.slack.responses[-1].text
    h.assert_clean()


async def test_slash_summarize_explains_its_arguments(h: Harness) -> None:
    ack = await h.command("/summarize", "banana", user=ALICE, channel=GENERAL)
    assert "Usage: `/summarize [#channel] [hours]`" in ack
    ack = await h.command("/summarize", "#nowhere", user=ALICE, channel=GENERAL)
    assert "I couldn't find the channel #nowhere" in ack
    ack = await h.command("/summarize", "900", user=ALICE, channel=GENERAL)
    assert "up to 168 hours" in ack
    await h.settle()
    assert h.slack.responses == []
    assert [c.method for c in h.slack.calls] == ["auth.test"]


async def test_an_empty_window_says_so(h: Harness) -> None:
    await h.command("/summarize", "1", user=ALICE, channel=GENERAL)
    await h.settle()
    [response] = h.slack.responses
    assert response.text == "Nothing was said in <#C0GENERAL01> in the last 1 hour."
    assert h.cometapi.requests == []


async def test_slash_forget_erases_every_conversation_in_the_channel(h: Harness) -> None:
    first = h.slack.mention(GENERAL, ALICE, "remember MANGO")
    second = h.slack.mention(GENERAL, BOB, "remember KIWI")
    for mention in (first, second):
        await h.send(mention)
    await h.settle()
    await h.command("/forget", "", user=ALICE, channel=GENERAL)  # Alice created #general
    await h.settle()
    [response] = h.slack.responses
    assert response.response_type == "ephemeral"
    assert "all my conversations in this channel (2 conversations" in response.text
    h.cometapi.clear_requests()
    # The threads are no longer followed...
    thread = first["event"]["ts"]
    await h.send(h.slack.user_message(GENERAL, ALICE, "still here?", thread_ts=thread))
    await h.settle()
    assert h.cometapi.requests == []
    # ...and a new mention there starts from nothing (and does not re-read Slack).
    await h.send(h.slack.mention(GENERAL, ALICE, "what did I ask?", thread_ts=thread))
    await h.settle()
    users = [m["content"] for m in h.cometapi.requests[-1].messages if m["role"] == "user"]
    assert users == ["[Alice] what did I ask?"]
    assert h.slack.calls_to("conversations.replies") == []
    h.assert_clean()


async def remembered_threads(h: Harness) -> list[str]:
    """Two conversations in #general (Alice created it); their threads."""
    threads = []
    for user, text in ((ALICE, "remember MANGO"), (BOB, "remember KIWI")):
        mention = h.slack.mention(GENERAL, user, text)
        await h.send(mention)
        threads.append(mention["event"]["ts"])
    await h.settle()
    return threads


def remembered(h: Harness) -> bool:
    """Did the bot's last model call carry the first thread's memory?"""
    return bool(h.cometapi.requests) and "MANGO" in json.dumps(h.cometapi.requests[-1].json)


async def test_slash_forget_of_a_channel_is_refused_to_a_plain_member(h: Harness) -> None:
    [first, _] = await remembered_threads(h)
    await h.command("/forget", "", user=BOB, channel=GENERAL)
    await h.settle()
    [refusal] = h.slack.responses
    assert refusal.response_type == "ephemeral"
    assert refusal.text.startswith(
        "Only workspace admins and owners, and the channel's creator, can make me forget"
    )
    # Nothing was erased: the thread is still followed and remembered.
    h.cometapi.clear_requests()
    await h.send(h.slack.user_message(GENERAL, ALICE, "what was it?", thread_ts=first))
    await h.settle()
    assert remembered(h)
    # Anyone in a thread may still erase that thread.
    await h.send(h.slack.mention(GENERAL, BOB, "forget", thread_ts=first))
    await h.settle()
    h.cometapi.clear_requests()
    await h.send(h.slack.mention(GENERAL, BOB, "what was it?", thread_ts=first))
    await h.settle()
    assert not remembered(h)
    h.assert_clean()


async def test_slash_forget_of_a_channel_by_an_admin(h: Harness) -> None:
    h.slack.add_user("U0ADMIN0001", "ada", display_name="Ada", is_admin=True)
    [first, _] = await remembered_threads(h)
    await h.command("/forget", "", user="U0ADMIN0001", channel=GENERAL)
    await h.settle()
    [response] = h.slack.responses
    assert "all my conversations in this channel (2 conversations" in response.text
    h.cometapi.clear_requests()
    await h.send(h.slack.user_message(GENERAL, ALICE, "still here?", thread_ts=first))
    await h.settle()
    assert h.cometapi.requests == []  # erased: no longer followed
    h.assert_clean()


async def test_slash_forget_in_a_direct_message(h: Harness) -> None:
    dm = h.slack.add_im(ALICE)
    await h.send(h.slack.user_message(dm, ALICE, "my PIN hint is OWL"))
    await h.settle()
    await h.command("/forget", "", user=ALICE, channel=dm)
    await h.settle()
    assert "all my conversations in this conversation (1 conversation" in h.slack.responses[0].text


async def test_slash_summarize_where_the_bot_is_not_a_member(h: Harness) -> None:
    h.slack.add_channel("C0RANDOM001", "random", members=[ALICE], bot_is_member=False)
    await h.command("/summarize", "", user=ALICE, channel="C0RANDOM001")
    await h.settle()
    [response] = h.slack.responses
    assert "Invite me with `/invite @teambot`" in response.text
    assert h.cometapi.requests == []
    h.assert_clean(allowed={"conversations.history": {"not_in_channel"}})


async def test_earlier_summary_requests_are_left_out_of_the_transcript_but_questions_stay(
    h: Harness,
) -> None:
    """A mention that was a summary request (core's `raw_command`, filler words and all) is
    not summarized again; a mention that only starts with "summarize" is a question."""
    h.cometapi.set_responder(team_model)
    h.slack.add_message(GENERAL, f"<@{BOT}> tl;dr please", user=ALICE)
    h.slack.add_message(GENERAL, f"<@{BOT}> Summarize this thread", user=CAROL)
    question = f"<@{BOT}> summarize the design doc and the budget"
    h.slack.add_message(GENERAL, question, user=BOB)
    h.slack.add_message(GENERAL, "We decided on Tuesday", user=CAROL)
    await h.command("/summarize", "", user=ALICE, channel=GENERAL)
    await h.settle()
    text = transcript(h)
    assert "We decided on Tuesday" in text
    assert "summarize the design doc and the budget" in text
    assert "tl;dr" not in text and "Summarize this thread" not in text
    h.assert_clean()
