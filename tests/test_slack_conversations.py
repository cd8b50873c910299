"""Conversations end to end: signed events into the real Bolt HTTP endpoint, answers observed
in the fake Slack's threads as a person in the channel would see them."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time

from tests.fakes.cometapi import (
    FakeCometAPI,
    Reply,
    ServerError,
    StreamCut,
    ToolCall,
    Unauthorized,
)
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
    TEAM,
    Harness,
    running,
    slack_settings,
)

# Fixtures, re-exported so pytest finds them here.
from tests.test_slack_harness import h as h
from tests.test_slack_harness import slack as slack


def user_texts(h: Harness, index: int = -1) -> list[str]:
    request = h.cometapi.requests_for(GPT)[index]
    return [str(m["content"]) for m in request.messages if m["role"] == "user"]


# --- mentions, threads, memory -------------------------------------------------------------------


async def test_a_mention_is_answered_in_a_new_thread_with_a_streamed_reply(h: Harness) -> None:
    h.cometapi.script(GPT, Reply("Hello **Alice**! Here is a list:\n- one\n- two", chunks=6))
    mention = h.slack.mention(GENERAL, ALICE, "hi there")
    parent = mention["event"]["ts"]
    assert await h.send(mention) == 200
    await h.settle()

    thread = h.thread(GENERAL, parent)
    assert [m.user for m in thread] == [ALICE, BOT]
    answer = thread[1]
    assert answer.thread_ts == parent  # in the thread, under the mention
    assert answer.streamed and not answer.streaming
    assert answer.text == "Hello **Alice**! Here is a list:\n- one\n- two"
    methods = [c.method for c in h.slack.calls]
    assert methods.index("assistant.threads.setStatus") < methods.index("chat.startStream")
    assert h.slack.statuses[0].status == "is thinking…"
    start = h.slack.calls_to("chat.startStream")[0].args
    assert (start["recipient_user_id"], start["recipient_team_id"]) == (ALICE, TEAM)
    assert h.slack.calls_to("chat.stopStream")
    assert "chat.postMessage" not in methods
    assert user_texts(h) == ["[Alice] hi there"]
    h.assert_clean()


async def test_follow_ups_in_the_thread_need_no_mention_and_use_memory(h: Harness) -> None:
    mention = h.slack.mention(GENERAL, ALICE, "My code name is BLUEFIN.")
    parent = mention["event"]["ts"]
    await h.send(mention)
    await h.settle()
    follow_up = h.slack.user_message(GENERAL, BOB, "What is Alice's code name?", thread_ts=parent)
    await h.send(follow_up)
    await h.settle()

    assert [m.user for m in h.thread(GENERAL, parent)] == [ALICE, BOT, BOB, BOT]
    assert user_texts(h) == [
        "[Alice] My code name is BLUEFIN.",
        "[Bob Baker] What is Alice's code name?",
    ]
    assistant = [m["content"] for m in h.cometapi.requests[-1].messages if m["role"] == "assistant"]
    assert assistant == ["Echo: [Alice] My code name is BLUEFIN."]
    # Memory is the source now: Slack's thread was not read back.
    assert h.slack.calls_to("conversations.replies") == []
    # Names were asked of Slack once per person.
    assert sorted(c.args["user"] for c in h.slack.calls_to("users.info")) == [ALICE, BOB]
    h.assert_clean()


async def test_channel_messages_outside_the_bots_threads_are_left_alone(h: Harness) -> None:
    top = h.slack.user_message(GENERAL, ALICE, "lunch anyone?")
    await h.send(top)
    other_thread = h.slack.user_message(GENERAL, BOB, "me!", thread_ts=top["event"]["ts"])
    await h.send(other_thread)
    await h.settle()
    assert h.cometapi.requests == []
    assert [c.method for c in h.slack.calls if c.method != "auth.test"] == []


async def test_first_contact_imports_the_existing_thread_once(h: Harness) -> None:
    parent = h.slack.add_message(GENERAL, "Release plan for v2?", user=ALICE)
    h.slack.add_message(GENERAL, "Freeze on Friday, ship Monday.", user=BOB, thread_ts=parent)
    h.slack.add_message(GENERAL, "Earlier bot answer.", user=BOT, thread_ts=parent)
    h.slack.add_message(GENERAL, "<@U0ALICE0001> agreed", user=CAROL, thread_ts=parent)
    mention = h.slack.mention(GENERAL, ALICE, "so when do we ship?", thread_ts=parent)
    await h.send(mention)
    await h.settle()
    request = h.cometapi.requests_for(GPT)[-1]
    turns = [(m["role"], m["content"]) for m in request.messages if m["role"] != "system"]
    assert turns == [
        ("user", "[Alice] Release plan for v2?"),
        ("user", "[Bob Baker] Freeze on Friday, ship Monday."),
        ("assistant", "Earlier bot answer."),
        ("user", "[Carol] @Alice agreed"),
        ("user", "[Alice] so when do we ship?"),
    ]
    [read] = h.slack.calls_to("conversations.replies")
    assert read.args["ts"] == parent

    later = h.slack.user_message(GENERAL, BOB, "and the changelog?", thread_ts=parent)
    await h.send(later)
    await h.settle()
    assert len(h.slack.calls_to("conversations.replies")) == 1  # read once
    assert user_texts(h)[-2:] == ["[Alice] so when do we ship?", "[Bob Baker] and the changelog?"]
    h.assert_clean()


async def test_a_long_thread_is_imported_page_by_page_and_honours_rate_limits(
    h: Harness,
) -> None:
    h.slack.add_user("U0DAVE00001", "dave", display_name="Dave")
    parent = h.slack.seed_thread(GENERAL, 450, [ALICE, BOB, "U0DAVE00001"])
    h.slack.rate_limit("conversations.replies", times=1, retry_after=1)
    mention = h.slack.mention(GENERAL, CAROL, "what did we decide?", thread_ts=parent)
    await h.send(mention)
    await h.settle()
    reads = h.slack.calls_to("conversations.replies")
    assert [c.status for c in reads][:2] == [429, 200]
    assert reads[1].time - reads[0].time >= 1.0  # waited Retry-After
    assert len([c for c in reads if c.ok]) == 3  # 451 messages, 200 per page
    request = h.cometapi.requests_for(GPT)[-1]
    assert len([m for m in request.messages if m["role"] == "user"]) >= 2
    [answer] = h.replies(GENERAL, parent)
    assert answer.text.startswith("Echo: [Carol] what did we decide?")
    h.assert_clean(allowed={"conversations.replies": {"ratelimited"}})


async def test_each_message_is_answered_once_whatever_arrives(h: Harness) -> None:
    mention = h.slack.mention(GENERAL, ALICE, "once please")
    event = mention["event"]
    parent = event["ts"]
    # The same mention also arrives as a `message` event, and Slack retries the mention.
    as_message = h.p.message(GENERAL, ALICE, event["text"], ts=parent)
    statuses = await asyncio.gather(
        h.send(mention),
        h.send(as_message),
        h.send(mention, retry_num=1),
    )
    assert statuses == [200, 200, 200]
    await h.settle()
    await h.send(mention, retry_num=2)  # a retry after the answer
    await h.settle()
    assert [m.user for m in h.thread(GENERAL, parent)] == [ALICE, BOT]
    assert len(h.cometapi.requests) == 1
    assert len(h.slack.calls_to("chat.startStream")) == 1
    assert h.slack.thread_status(GENERAL, parent) == ""
    h.assert_clean()


async def test_messages_sent_while_answering_are_queued_in_order(h: Harness) -> None:
    h.cometapi.script(GPT, Reply("first answer", chunk_delay=0.1, chunks=4))
    mention = h.slack.mention(GENERAL, ALICE, "one")
    parent = mention["event"]["ts"]
    await h.send(mention)
    await asyncio.sleep(0.15)
    for text in ("two", "three"):
        await h.send(h.slack.user_message(GENERAL, ALICE, text, thread_ts=parent))
    await h.settle()
    texts = [m.text for m in h.thread(GENERAL, parent) if m.user == BOT]
    assert texts == ["first answer", "Echo: [Alice] two", "Echo: [Alice] three"]
    h.assert_clean()


async def test_direct_messages_are_answered_in_their_own_thread(h: Harness) -> None:
    dm = h.slack.add_im(ALICE)
    first = h.slack.user_message(dm, ALICE, "hello bot")
    await h.send(first)
    await h.settle()
    ts = first["event"]["ts"]
    [answer] = h.replies(dm, ts)
    assert answer.text == "Echo: [Alice] hello bot"
    assert answer.thread_ts == ts and answer.streamed
    start = h.slack.calls_to("chat.startStream")[0].args
    assert "recipient_user_id" not in start  # implied in a DM
    follow = h.slack.user_message(dm, ALICE, "and again", thread_ts=ts)
    await h.send(follow)
    await h.settle()
    assert user_texts(h) == ["[Alice] hello bot", "[Alice] and again"]
    h.assert_clean()


async def test_own_and_other_bots_messages_are_ignored(h: Harness) -> None:
    mention = h.slack.mention(GENERAL, ALICE, "start")
    parent = mention["event"]["ts"]
    await h.send(mention)
    await h.settle()
    h.cometapi.clear_requests()
    own = h.p.bot_message(GENERAL, "my own reply", thread_ts=parent)
    other = h.p.bot_message(
        GENERAL, "beep", bot_id="B0OTHERAPP1", user="U0OTHERBOT1", thread_ts=parent
    )
    other_mention = h.p.app_mention(GENERAL, "U0OTHERBOT1", f"<@{BOT}> beep boop")
    other_mention["event"]["bot_id"] = "B0OTHERAPP1"
    for envelope in (own, other, other_mention):
        assert await h.send(envelope) == 200
    await h.settle()
    assert h.cometapi.requests == []


async def test_other_bots_can_be_answered_when_configured(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack, slack_answer_bots=True)
    slack.add_user("U0OTHERBOT1", "helper", display_name="Helper", is_bot=True)
    async with running(settings, slack, cometapi) as h:
        ts = slack.add_message(GENERAL, f"<@{BOT}> status report?", user="U0OTHERBOT1")
        mention = h.p.app_mention(GENERAL, "U0OTHERBOT1", f"<@{BOT}> status report?", ts=ts)
        mention["event"]["bot_id"] = "B0OTHERAPP1"
        await h.send(mention)
        await h.settle()
        # ...but not its un-addressed messages in threads the bot follows (no bot loops).
        chatter = h.p.bot_message(
            GENERAL, "more chatter", bot_id="B0OTHERAPP1", user="U0OTHERBOT1", thread_ts=ts
        )
        await h.send(chatter)
        await h.settle()
        assert [m.text for m in h.replies(GENERAL, ts)] == ["Echo: [Helper] status report?"]
        h.assert_clean()


# --- files ---------------------------------------------------------------------------------------


async def test_an_attached_image_reaches_the_model(h: Harness) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    file = h.slack.add_file("chart.png", "image/png", png, user=ALICE, channels=[GENERAL])
    mention = h.slack.mention(GENERAL, ALICE, "what is in this chart?", files=[file])
    await h.send(mention)
    await h.settle()
    content = h.cometapi.requests_for(GPT)[-1].messages[-1]["content"]
    assert content[0] == {"type": "text", "text": "[Alice] what is in this chart?"}
    url = content[1]["image_url"]["url"]
    assert url == "data:image/png;base64," + base64.b64encode(png).decode()
    assert [d.authorized for d in h.slack.file_downloads] == [True]
    h.assert_clean()


async def test_a_voice_memo_goes_to_flash_lite(h: Harness) -> None:
    ogg = b"OggS" + bytes(64)
    memo = h.slack.add_file("memo.ogg", "audio/ogg", ogg, user=ALICE, channels=[GENERAL])
    event = h.slack.user_message(h.slack.add_im(ALICE), ALICE, "transcribe this", files=[memo])
    await h.send(event)
    await h.settle()
    [request] = h.cometapi.requests
    assert request.model == FLASH
    parts = request.contents[-1]["parts"]
    assert parts[1]["inlineData"]["mimeType"] == "audio/ogg"
    h.assert_clean()


async def test_unsupported_oversized_or_unreadable_files_get_a_short_note(h: Harness) -> None:
    exe = h.slack.add_file("setup.exe", "application/x-msdownload", b"MZ" * 10, user=ALICE)
    huge = h.slack.add_file("huge.png", "image/png", b"\x89PNG", user=ALICE)
    huge["size"] = 300 * 1024 * 1024
    gone = h.slack.add_file("old.png", "image/png", b"\x89PNG", user=ALICE)
    gone["url_private_download"] = gone["url_private"] = gone["url_private"].replace(
        gone["id"], "F0MISSING01"
    )
    mention = h.slack.mention(GENERAL, ALICE, "look", files=[exe, huge, gone])
    await h.send(mention)
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert "I can't read setup.exe" in answer.text
    assert "I skipped huge.png" in answer.text
    assert "I couldn't download old.png" in answer.text
    assert len(h.slack.file_downloads) == 1  # neither the .exe nor the huge file was fetched
    h.assert_clean()


async def test_a_stalled_file_download_is_given_up_by_the_total_timeout(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack, total_timeout=2.0)
    async with running(settings, slack, cometapi) as h:
        notes = h.slack.add_file("notes.txt", "text/plain", b"x" * 4000, user=ALICE)
        h.slack.stall_file(notes["id"], stall=60, sent=100)
        mention = h.slack.mention(GENERAL, ALICE, "read this", files=[notes])
        parent = mention["event"]["ts"]
        started = time.monotonic()
        await h.send(mention)
        async with asyncio.timeout(8):
            await h.settle()
        assert time.monotonic() - started < 3.5  # TOTAL_TIMEOUT and a small margin
        [answer] = h.replies(GENERAL, parent)
        assert "I couldn't read notes.txt: it did not download within 2 seconds." in answer.text
        follow_up = h.slack.user_message(GENERAL, ALICE, "still there?", thread_ts=parent)
        await h.send(follow_up)
        async with asyncio.timeout(8):
            await h.settle()
        assert h.replies(GENERAL, parent)[-1].text == "Echo: [Alice] still there?"
        h.assert_clean()


# --- failures and fallbacks ----------------------------------------------------------------------


async def test_a_model_failure_ends_in_a_message_in_the_thread(h: Harness) -> None:
    h.cometapi.script(None, ServerError(503), times=20)
    mention = h.slack.mention(GENERAL, ALICE, "are you there?")
    await h.send(mention)
    await h.settle()
    [message] = h.replies(GENERAL, mention["event"]["ts"])
    assert message.text == (
        ":warning: The AI service isn't answering right now. Please try again in a minute."
    )
    assert h.slack.thread_status(GENERAL, mention["event"]["ts"]) == ""
    h.assert_clean()


async def test_a_refused_api_key_is_explained(h: Harness) -> None:
    h.cometapi.script(GPT, Unauthorized())
    mention = h.slack.mention(GENERAL, ALICE, "hello")
    await h.send(mention)
    await h.settle()
    [message] = h.replies(GENERAL, mention["event"]["ts"])
    assert "refused my API key" in message.text and "COMETAPI_API_KEY" in message.text


async def test_slack_rate_limits_are_honoured(h: Harness) -> None:
    h.slack.rate_limit("chat.startStream", times=1, retry_after=1)
    mention = h.slack.mention(GENERAL, ALICE, "patience")
    await h.send(mention)
    await h.settle()
    first, second = h.slack.calls_to("chat.startStream")
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert answer.text == "Echo: [Alice] patience"
    h.assert_clean(allowed={"chat.startStream": {"ratelimited"}})


async def test_refused_streaming_falls_back_to_a_throttled_edited_message(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack)
    async with running(settings, slack, cometapi, update_interval=1.0) as h:
        slack.refuse_streaming()
        words = [f"word{i} " for i in range(30)]
        cometapi.script(GPT, Reply("".join(words).strip(), chunks=30, chunk_delay=0.05))
        mention = slack.mention(GENERAL, ALICE, "stream please")
        await h.send(mention)
        await h.settle()
        [answer] = h.replies(GENERAL, mention["event"]["ts"])
        assert answer.text == "".join(words).strip()
        assert not answer.streamed
        assert len(slack.calls_to("chat.postMessage")) == 1  # posted once...
        updates = slack.calls_to("chat.update")
        assert 1 <= len(updates) <= 4  # ...then edited about once a second (~1.5 s answer)
        gaps = [b.time - a.time for a, b in itertools.pairwise(updates)]
        assert all(gap >= 0.9 for gap in gaps)
        h.assert_clean(allowed={"chat.startStream": {"channel_type_not_supported"}})


async def test_a_stream_that_dies_is_finished_by_editing_the_same_message(h: Harness) -> None:
    h.slack.break_stream_after(1)
    text = " ".join(f"part{i}" for i in range(30))
    h.cometapi.script(GPT, Reply(text, chunks=30, chunk_delay=0.03))
    mention = h.slack.mention(GENERAL, ALICE, "long one")
    await h.send(mention)
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert answer.text == text
    assert answer.streamed and answer.edited  # the streamed message, completed by chat.update
    assert h.slack.calls_to("chat.postMessage") == []
    h.assert_clean(
        allowed={
            "chat.appendStream": {"message_not_in_streaming_state"},
            "chat.stopStream": {"message_not_in_streaming_state"},
        }
    )


async def test_a_retried_model_answer_replaces_what_was_streamed(h: Harness) -> None:
    h.cometapi.script(GPT, StreamCut(after=3, reply=Reply("a first try that breaks", chunks=6)))
    h.cometapi.script(GPT, Reply("the second, complete answer", chunks=3))
    mention = h.slack.mention(GENERAL, ALICE, "try twice")
    await h.send(mention)
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert answer.text == "the second, complete answer"
    h.assert_clean()


# --- what the answer looks like ------------------------------------------------------------------


async def test_long_answers_are_split_without_breaking_code_blocks(h: Harness) -> None:
    code = "\n".join(f"    print('line {i}')  # explain {i}" for i in range(150))
    text = "Here is the script:\n\n```python\ndef main():\n" + code + "\n```\n\nDone."
    h.cometapi.script(GPT, Reply(text, chunks=25))
    mention = h.slack.mention(GENERAL, ALICE, "write a long script")
    await h.send(mention)
    await h.settle()
    parts = [m.text for m in h.replies(GENERAL, mention["event"]["ts"])]
    assert len(parts) >= 2
    for part in parts:
        assert len(part) <= 4000
        assert part.count("```") % 2 == 0  # every part has its code block closed
    assert parts[1].startswith("```\n")  # reopened (mrkdwn code blocks carry no language)
    joined = "".join(parts)
    for i in range(150):
        assert f"print('line {i}')" in joined
    assert parts[-1].endswith("Done.")
    h.assert_clean()


async def test_the_bot_cannot_ping_everyone(h: Harness) -> None:
    h.cometapi.script(
        GPT, Reply("Sure: <!channel> @here @everyone <!subteam^S0TEAM|@devs>", chunks=7)
    )
    mention = h.slack.mention(GENERAL, ALICE, "say hello to everyone")
    await h.send(mention)
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert "<!channel>" not in answer.text and "<!subteam" not in answer.text
    for word in ("@here", "@everyone"):
        assert word not in answer.text
    assert "here" in answer.text and "everyone" in answer.text


async def test_fallback_text_is_slack_mrkdwn(h: Harness) -> None:
    h.slack.refuse_streaming()
    h.cometapi.script(
        GPT, Reply("**Bold**, a [link](https://example.com/a_(b)) and\n\n```js\nx < 1\n```")
    )
    mention = h.slack.mention(GENERAL, ALICE, "format")
    await h.send(mention)
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert answer.text.startswith("*Bold*, a <https://example.com/a_(b)|link> and")
    assert "```\nx &lt; 1\n```" in answer.text


async def test_tool_use_is_visible(h: Harness) -> None:
    h.cometapi.script(
        GPT,
        Reply("Let me check the time.", tool_calls=[ToolCall("current_time", {"timezone": "UTC"})]),
    )
    mention = h.slack.mention(GENERAL, ALICE, "what time is it?")
    await h.send(mention)
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    tasks = [c for c in answer.chunks if c["type"] == "task_update"]
    assert tasks[0]["title"] == "Using current_time…"
    assert tasks[0]["status"] == "in_progress"
    assert tasks[-1]["status"] == "complete"
    assert answer.text.startswith("Let me check the time.\n\nTool result:")
    h.assert_clean()


async def test_tool_use_before_any_text_shows_as_a_status(h: Harness) -> None:
    h.cometapi.script(GPT, Reply(tool_calls=[ToolCall("current_time", {"timezone": "UTC"})]))
    mention = h.slack.mention(GENERAL, ALICE, "time?")
    await h.send(mention)
    await h.settle()
    loading = [s.loading_messages for s in h.slack.statuses]
    assert ["Using current_time…"] in loading
    h.assert_clean()


# --- forgetting and edits ------------------------------------------------------------------------


async def test_forget_in_a_thread_erases_memory_and_stops_following(h: Harness) -> None:
    mention = h.slack.mention(GENERAL, ALICE, "secret is PINEAPPLE")
    parent = mention["event"]["ts"]
    await h.send(mention)
    await h.settle()
    await h.send(h.slack.mention(GENERAL, ALICE, "forget", thread_ts=parent))
    await h.settle()
    assert h.replies(GENERAL, parent)[-1].text.startswith("Done: I erased my memory")
    h.cometapi.clear_requests()
    await h.send(h.slack.user_message(GENERAL, BOB, "still there?", thread_ts=parent))
    await h.settle()
    assert h.cometapi.requests == []  # no longer following
    await h.send(h.slack.mention(GENERAL, BOB, "what is the secret?", thread_ts=parent))
    await h.settle()
    assert user_texts(h) == ["[Bob Baker] what is the secret?"]  # nothing remembered
    assert h.slack.calls_to("conversations.replies") == []  # and not read back from Slack
    h.assert_clean()


async def test_help(h: Harness) -> None:
    mention = h.slack.mention(GENERAL, ALICE, "help")
    await h.send(mention)
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert "/summarize" in answer.text
    assert h.cometapi.requests == []


async def test_edits_and_deletions_invalidate_cached_summaries(h: Harness) -> None:
    h.cometapi.set_responder(team_model)
    parent = h.slack.seed_thread(GENERAL, 5, [ALICE, BOB])
    await h.send(h.slack.mention(GENERAL, CAROL, "summarize", thread_ts=parent))
    await h.settle()
    summaries = len(h.cometapi.requests_for(FLASH))
    assert summaries == 1
    await h.send(h.slack.mention(GENERAL, CAROL, "summarize", thread_ts=parent))
    await h.settle()
    assert len(h.cometapi.requests_for(FLASH)) == 1  # cached
    edited = h.slack.thread(GENERAL, parent)[2]
    change = h.p.message_changed(
        GENERAL, user=BOB, ts=edited.ts, new_text="changed", old_text=edited.text, thread_ts=parent
    )
    assert await h.send(change) == 200
    await h.settle()
    await h.send(h.slack.mention(GENERAL, CAROL, "summarize", thread_ts=parent))
    await h.settle()
    assert len(h.cometapi.requests_for(FLASH)) == 2  # summarized again
    h.assert_clean()


async def test_many_threads_at_once(h: Harness) -> None:
    mentions = [h.slack.mention(GENERAL, ALICE, f"question {i}") for i in range(12)]
    started = time.monotonic()
    statuses = await asyncio.gather(*(h.send(m) for m in mentions))
    assert statuses == [200] * 12
    assert time.monotonic() - started < 2.0
    await h.settle()
    for i, mention in enumerate(mentions):
        [answer] = h.replies(GENERAL, mention["event"]["ts"])
        assert answer.text == f"Echo: [Alice] question {i}"
    h.assert_clean()


async def test_bursts_are_worked_on_a_bounded_number_at_a_time(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack, slack_concurrency=2)
    async with running(settings, slack, cometapi) as h:
        for i in range(6):
            cometapi.script(GPT, Reply(f"answer {i}", delay=0.2))
        mentions = [slack.mention(GENERAL, ALICE, f"q{i}") for i in range(6)]
        started = time.monotonic()
        assert await asyncio.gather(*(h.send(m) for m in mentions)) == [200] * 6
        assert time.monotonic() - started < 1.0  # all acknowledged at once
        await asyncio.sleep(0.1)
        in_flight = [r for r in cometapi.requests if r.outcome is None]
        assert len(in_flight) <= 2
        await h.settle()
        assert all(len(h.replies(GENERAL, m["event"]["ts"])) == 1 for m in mentions)


async def test_deleted_and_edited_messages_leave_memory(h: Harness) -> None:
    mention = h.slack.mention(GENERAL, ALICE, "the password is hunter2")
    parent = mention["event"]["ts"]
    await h.send(mention)
    await h.settle()
    note = h.slack.user_message(GENERAL, BOB, "deploy at 10", thread_ts=parent)
    await h.send(note)
    await h.settle()
    deleted = h.p.message_deleted(
        GENERAL,
        user=ALICE,
        deleted_ts=parent,
        old_text=mention["event"]["text"],
        thread_ts=parent,
    )
    assert await h.send(deleted) == 200
    change = h.p.message_changed(
        GENERAL,
        user=BOB,
        ts=note["event"]["ts"],
        new_text="deploy at 11",
        old_text="deploy at 10",
        thread_ts=parent,
    )
    assert await h.send(change) == 200
    await h.settle()
    await h.send(h.slack.user_message(GENERAL, CAROL, "what is planned?", thread_ts=parent))
    await h.settle()
    last = h.cometapi.requests[-1]
    assert "hunter2" not in json.dumps(last.json)
    assert user_texts(h)[-2:] == ["[Bob Baker] deploy at 11", "[Carol] what is planned?"]
