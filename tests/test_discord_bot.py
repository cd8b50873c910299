"""The Discord adapter end to end: discord.py against the fake Discord, real Redis, the
fake CometAPI. Everything is asserted as a user in the server would see it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from bots.discord.format import MESSAGE_LIMIT, open_fence
from core.types import ConversationKey
from tests.fakes.cometapi import FakeCometAPI, Reply, ServerError, ToolCall
from tests.fakes.discord_server import MF_EPHEMERAL, MF_LOADING, FakeChannel, Perm
from tests.test_discord_harness import FLASH, GPT, Harness, running_bot

WEBHOOK_ORIGINAL = "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
CHANNEL_MESSAGES = "/channels/{channel_id}/messages"


@pytest.fixture
async def h(redis_url: str, key_prefix: str, cometapi: FakeCometAPI) -> AsyncIterator[Harness]:
    async with running_bot(redis_url, key_prefix, cometapi) as harness:
        yield harness


def _texts(h: Harness, route: str, method: str = "PATCH") -> list[str]:
    return [
        c.json["content"]
        for c in h.dc.calls_to(method, route)
        if isinstance(c.json, dict) and "content" in c.json and c.status == 200
    ]


async def _reply_in(h: Harness, channel: FakeChannel, count: int = 1) -> list[str]:
    await h.dc.wait_until(lambda: len(h.bot_messages(channel)) >= count, 10)
    await h.settle()
    return [m.content for m in h.bot_messages(channel)]


# --------------------------------------------------------------------------- /ask


async def test_ask_is_deferred_then_streamed_then_opens_a_thread(h: Harness) -> None:
    h.cometapi.script(GPT, Reply("The capital of France is Paris.", chunks=8, chunk_delay=0.05))
    state = await h.command("ask", {"prompt": "What is the capital of France?"})
    final = await h.answered(state)

    assert state.callback_type == 5  # deferred: "teambot is thinking…"
    assert state.callback_at is not None and state.dispatched_at is not None
    assert state.callback_at - state.dispatched_at < 0.5
    assert final == "> **Alice:** What is the capital of France?\n\nThe capital of France is Paris."
    streamed = _texts(h, WEBHOOK_ORIGINAL)
    assert len(streamed) >= 3  # shown while it was written, not in one block
    bodies = [s.split("\n\n", 1)[1] for s in streamed if "\n\n" in s]
    assert all(b == bodies[-1] or bodies[-1].startswith(b) for b in bodies)
    original = state.original
    assert original is not None and not original.loading and not original.ephemeral
    (thread,) = h.dc.threads
    assert thread.id == original.id  # the thread is opened from the answer
    assert thread.name == "What is the capital of France?"
    assert thread.parent_id == h.general.id
    assert original.allowed_mentions == {"parse": [], "users": [h.alice.id]}


async def test_follow_up_in_the_thread_is_answered_with_memory(h: Harness) -> None:
    state = await h.command("ask", {"prompt": "My project's code name is BLUEFIN."})
    await h.answered(state)
    (thread,) = h.dc.threads
    asked = await h.say(thread, "What is the code name?", h.bob)  # no mention needed
    (reply,) = await _reply_in(h, thread)
    assert reply == "Echo: [Bob] What is the code name?"
    (view,) = h.bot_messages(thread)
    assert view.reference_id == asked  # a reply to the question, in the thread
    request = h.cometapi.requests_for(GPT)[-1]
    turns = [(m["role"], m["content"]) for m in request.messages[1:]]
    assert turns == [
        ("user", "[Alice] My project's code name is BLUEFIN."),
        ("assistant", "Echo: [Alice] My project's code name is BLUEFIN."),
        ("user", "[Bob] What is the code name?"),
    ]


async def test_ask_inside_an_existing_thread_reads_it_once_and_stays(h: Harness) -> None:
    # Discord did not tell the bot about this thread: it looks it up when needed.
    thread = await h.add_thread(h.general, "launch plan", h.bob, announce=False)
    h.dc.seed_messages(
        thread, 3, authors=[h.bob, h.alice], content=lambda i: f"plan step {i} is TANGO-{i}"
    )
    state = await h.command("ask", {"prompt": "What was step 1?"}, channel=thread)
    await h.answered(state)
    assert h.dc.threads == []  # no new thread: the current one continues
    request = h.cometapi.requests_for(GPT)[-1]
    contents = [m["content"] for m in request.messages[1:]]
    assert contents[:3] == [
        "[Bob] plan step 0 is TANGO-0",
        "[Alice] plan step 1 is TANGO-1",
        "[Bob] plan step 2 is TANGO-2",
    ]
    assert contents[-1] == "[Alice] What was step 1?"
    # From now on the bot answers in that thread without a mention, and reads it only once.
    reads = len(h.dc.calls_to("GET", CHANNEL_MESSAGES))
    await h.say(thread, "and step 2?", h.bob)
    replies = await _reply_in(h, thread, 2)
    assert replies[-1] == "Echo: [Bob] and step 2?"
    assert len(h.dc.calls_to("GET", CHANNEL_MESSAGES)) == reads


async def test_image_goes_to_the_model_as_image_input(h: Harness) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    state = await h.command(
        "ask",
        {"prompt": "What is in this picture?"},
        attachments=[("cat.png", png, "image/png")],
    )
    final = await h.answered(state)
    assert "📎 cat.png" in final
    request = h.cometapi.requests_for(GPT)[-1]
    parts = request.messages[-1]["content"]
    assert isinstance(parts, list)
    assert {"type": "text", "text": "[Alice] What is in this picture?"} in parts
    images = [p for p in parts if p["type"] == "image_url"]
    assert images and images[0]["image_url"]["url"].startswith("data:image/png;base64,")


# --------------------------------------------------------------------------- @mentions


async def test_mention_in_a_channel_is_answered_as_a_reply_in_channel_memory(h: Harness) -> None:
    first = await h.say(h.general, f"{h.mention()} remember the word PELICAN")
    (reply,) = await _reply_in(h, h.general)
    assert reply == "Echo: [Alice] remember the word PELICAN"  # the mention is not in it
    assert h.bot_messages(h.general)[0].reference_id == first
    assert h.dc.threads == []  # a mention is answered in place
    # A reply to the bot's answer, without a mention, continues the same conversation.
    answer = h.bot_messages(h.general)[0]
    await h.say(h.general, "which word?", h.bob, message_reference=answer)
    await _reply_in(h, h.general, 2)
    request = h.cometapi.requests_for(GPT)[-1]
    assert [m["content"] for m in request.messages[1:]] == [
        "[Alice] remember the word PELICAN",
        "Echo: [Alice] remember the word PELICAN",
        "[Bob] which word?",
    ]


async def test_a_member_who_cannot_read_the_history_gets_no_channel_memory(h: Harness) -> None:
    """A reply to an answer in a channel continues its conversation only for members with
    Read Message History there; anyone else starts afresh (they see nothing of it)."""
    await h.say(h.general, f"{h.mention()} remember the word PELICAN")
    await _reply_in(h, h.general)
    answer = h.bot_messages(h.general)[0]
    h.dc.set_overwrite(h.general, h.bob, deny=Perm.READ_MESSAGE_HISTORY)
    await h.dc.dispatch("CHANNEL_UPDATE", h.dc.channel_payload(h.general))
    await h.say(h.general, f"{h.mention()} which word?", h.bob, message_reference=answer)
    await _reply_in(h, h.general, 2)
    request = h.cometapi.requests_for(GPT)[-1]
    assert [m["content"] for m in request.messages[1:]] == ["[Bob] which word?"]
    assert "PELICAN" not in str(request.json)


async def test_messages_not_for_the_bot_are_left_alone(h: Harness) -> None:
    other_bot = h.dc.add_member(h.guild, "otherbot", bot=True)
    await h.say(h.general, "just chatting", h.bob)
    await h.say(h.general, f"{h.mention()} loop?", other_bot)
    human_thread = await h.add_thread(h.general, "people only", h.bob)
    await h.say(human_thread, "no bot here", h.alice)
    await asyncio.sleep(0.2)
    await h.settle()
    assert h.bot_messages(h.general) == []
    assert h.bot_messages(human_thread) == []
    assert h.cometapi.requests == []


async def test_a_mention_of_the_bots_role_counts(h: Harness) -> None:
    role = h.guild.roles[h.guild.bot_role_id or 0]
    await h.say(h.general, f"<@&{role.id}> hello", h.bob, mention_roles=[role])
    (reply,) = await _reply_in(h, h.general)
    assert reply == "Echo: [Bob] hello"


async def test_messages_in_a_thread_are_answered_in_arrival_order(h: Harness) -> None:
    state = await h.command("ask", {"prompt": "count with me"})
    await h.answered(state)
    (thread,) = h.dc.threads
    h.cometapi.set_responder(
        lambda r: Reply(f"ok {r.last_user_text.split()[-1]}", chunks=2, delay=0.1), GPT
    )
    ids = [await h.say(thread, f"number {n}", h.bob) for n in range(1, 4)]
    replies = await _reply_in(h, thread, 3)
    assert replies == ["ok 1", "ok 2", "ok 3"]
    assert [m.reference_id for m in h.bot_messages(thread)] == ids


# --------------------------------------------------------------------------- replies


async def test_a_long_answer_is_split_before_2000_characters(h: Harness) -> None:
    code = "\n".join(f"    step_{i} = compute({i})  # keep going" for i in range(120))
    prose = " ".join(f"word{i}" for i in range(700))
    answer = f"Here is the plan.\n\n```python\n{code}\n```\n\n{prose}"
    h.cometapi.script(GPT, Reply(answer, chunks=40, chunk_delay=0.005))
    state = await h.command("ask", {"prompt": "long please"})
    await h.answered(state)
    pages = [state.original_content or ""] + [m.content for m in state.followups]
    assert len(pages) >= 4
    assert all(len(p) <= MESSAGE_LIMIT for p in pages)
    assert all(open_fence(p) is None for p in pages)  # every page renders its code
    words = " ".join(pages).split()
    assert [w for w in words if w.startswith("word")] == [f"word{i}" for i in range(700)]
    steps = re.findall(r"step_(\d+) =", "\n".join(pages))
    assert steps == [str(i) for i in range(120)]
    assert [m.reference_id for m in state.followups] == [state.original_message_id] * len(
        state.followups
    )
    # The same for an answer to a mention: channel messages, the first one a reply.
    h.cometapi.script(GPT, Reply(answer, chunks=40, chunk_delay=0.005))
    await h.say(h.general, f"{h.mention()} again")
    await h.dc.wait_until(lambda: len(h.cometapi.requests_for(GPT)) == 2)
    await h.settle()
    replies = [m for m in h.bot_messages(h.general) if m.interaction_id is None]
    assert len(replies) >= 4
    assert all(len(m.content) <= MESSAGE_LIMIT for m in replies)
    assert "".join(m.content for m in replies).count("word699") == 1


async def test_no_mention_in_the_output_can_ping(h: Harness) -> None:
    role = h.dc.add_role(h.guild, "oncall", mentionable=True)
    text = f"@everyone @here <@&{role.id}> <@{h.bob.id}> and you <@{h.alice.id}>"
    h.cometapi.script(GPT, Reply(text))
    state = await h.command("ask", {"prompt": "ping everyone"})
    await h.answered(state)
    h.cometapi.script(GPT, Reply(text))
    await h.say(h.general, f"{h.mention()} ping them", h.bob)
    await _reply_in(h, h.general, 2)
    for view in h.bot_messages(h.general):
        payload = h.dc.message_payload(view.id)
        assert payload["mention_everyone"] is False
        assert payload["mention_roles"] == []
        asker = h.alice.id if view.interaction_id else h.bob.id
        assert {int(u["id"]) for u in payload["mentions"]} <= {asker}


async def test_writes_per_channel_spend_the_budget_discord_announces(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    """Discord announces each channel's message budget in rate-limit headers (here a strict
    2 creates and 2 edits per second); three answers streaming at once into one channel
    learn it and never get a 429, and every final text lands."""
    strict = {
        "POST /channels/{channel_id}/messages": (2, 1.0),
        "PATCH /channels/{channel_id}/messages/{message_id}": (2, 1.0),
    }
    async with running_bot(redis_url, key_prefix, cometapi, fake={"bucket_limits": strict}) as h:
        h.cometapi.set_responder(
            lambda r: Reply("streaming words " * 60, chunks=30, chunk_delay=0.03), GPT
        )
        for person in (h.alice, h.bob, h.dc.add_member(h.guild, "carol")):
            await h.say(h.general, f"{h.mention()} tell me something", person)
        await h.dc.wait_until(
            lambda: (
                sum(m.content.endswith("streaming words") for m in h.bot_messages(h.general)) == 3
            ),
            20,
        )
        await h.settle()
        refused = [c for c in h.dc.calls if c.status == 429]
        assert refused == []  # the announced budget kept the bot below the limit
        edits = h.dc.write_times(h.general, "edit")
        windows = [sum(1 for t in edits if start <= t < start + 1.0) for start in edits]
        assert max(windows) <= 2


async def test_tool_use_is_visible_while_it_runs(h: Harness) -> None:
    h.cometapi.script(
        GPT,
        Reply("Let me check.", tool_calls=[ToolCall("current_time", {"timezone": "UTC"})]),
        Reply("It is noon.", delay=0.4),
    )
    state = await h.command("ask", {"prompt": "what time is it?"})
    final = await h.answered(state)
    assert final.endswith("Let me check.\n\nIt is noon.")
    shown = _texts(h, WEBHOOK_ORIGINAL)
    assert any(s.endswith("-# Using current_time…") for s in shown)
    assert "Using current_time" not in final


async def test_a_429_with_via_is_waited_out_and_the_answer_lands(h: Harness) -> None:
    h.dc.rate_limit(f"PATCH {WEBHOOK_ORIGINAL.replace('{webhook_id}', '*')}", retry_after=0.3)
    h.dc.rate_limit("POST /channels/*/messages", retry_after=0.3)
    state = await h.command("ask", {"prompt": "hello"})
    final = await h.answered(state)
    assert final.endswith("Echo: [Alice] hello")
    first, second = h.dc.calls_to("PATCH", WEBHOOK_ORIGINAL)[:2]
    assert first.status == 429 and first.response_headers["Via"] == "1.1 google"
    assert second.status == 200 and second.time - first.time >= 0.3
    await h.say(h.general, f"{h.mention()} and here?")
    replies = await _reply_in(h, h.general, 2)
    assert replies[-1] == "Echo: [Alice] and here?"
    posts = h.dc.calls_to("POST", CHANNEL_MESSAGES)
    assert [c.status for c in posts][:2] == [429, 200]


async def test_model_failure_ends_in_a_message_not_silence(h: Harness) -> None:
    h.cometapi.script(None, ServerError(503), times=12)
    state = await h.command("ask", {"prompt": "are you there?"})
    final = await h.answered(state, within=20)
    assert final.startswith("> **Alice:** are you there?\n\n⚠️ ")
    assert "isn't answering right now" in final
    assert h.dc.threads == []  # nothing to continue
    await h.say(h.general, f"{h.mention()} hello?")
    reply = (await _reply_in(h, h.general, 2))[-1]
    assert reply.startswith("⚠️ ") and "isn't answering right now" in reply


async def test_an_expired_interaction_token_moves_the_answer_to_the_channel(
    h: Harness,
) -> None:
    h.cometapi.script(GPT, Reply("A slow but complete answer.", chunks=4, chunk_delay=0.3))
    state = await h.command("ask", {"prompt": "take your time"})
    await h.dc.wait_until(lambda: bool(_texts(h, WEBHOOK_ORIGINAL)), 5)
    h.dc.advance_time(15 * 60 + 1)  # the interaction token is now dead
    await h.settle()
    posted = [m for m in h.bot_messages(h.general) if m.interaction_id is None]
    assert [m.content.split("\n\n")[-1] for m in posted] == ["A slow but complete answer."]
    assert posted[0].reference_id == state.original_message_id


# --------------------------------------------------------------------------- commands


async def test_cooldown_is_per_user_and_polite(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    async with running_bot(
        redis_url, key_prefix, cometapi, settings={"discord_command_cooldown": 30}
    ) as h:
        first = await h.command("ask", {"prompt": "one"}, h.alice)
        await h.answered(first)
        second = await h.command("ask", {"prompt": "two"}, h.alice)
        third = await h.command("ask", {"prompt": "three"}, h.bob)
        await h.answered(third)
        assert second.callback_type == 4 and second.ephemeral
        content = second.original_content or ""
        assert content.startswith("You're going a little fast. Please wait ")
        assert "before using /ask again" in content
        assert third.deferred
        assert len(h.cometapi.requests_for(GPT)) == 2


async def test_forget_erases_this_conversation(h: Harness) -> None:
    state = await h.command("ask", {"prompt": "The password is SWORDFISH."})
    await h.answered(state)
    (thread,) = h.dc.threads
    forget = await h.command("forget", channel=thread, user=h.bob)
    await h.answered(forget)
    assert (forget.original_content or "").startswith("🧹 Forgotten")
    assert not forget.ephemeral  # everyone in the thread sees the memory is gone
    await h.say(thread, "what is the password?")
    await _reply_in(h, thread, 2)
    request = h.cometapi.requests_for(GPT)[-1]
    assert [m["content"] for m in request.messages[1:]] == ["[Alice] what is the password?"]


async def test_forget_whole_channel_needs_manage_messages(h: Harness) -> None:
    refused = await h.command("forget", {"whole_channel": True}, user=h.bob)
    await h.answered(refused)
    assert refused.ephemeral
    assert "Manage Messages" in (refused.original_content or "")
    mod = h.dc.add_role(h.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
    carol = h.dc.add_member(h.guild, "carol", roles=[mod])
    state = await h.command("ask", {"prompt": "remember"})
    await h.answered(state)
    done = await h.command("forget", {"whole_channel": True}, user=carol)
    await h.answered(done)
    assert "(1 conversation)" in (done.original_content or "")


async def test_usage_is_private_and_counts_this_server(h: Harness) -> None:
    state = await h.command("ask", {"prompt": "hello"})
    await h.answered(state)
    usage = await h.command("usage", user=h.bob)
    text = await h.answered(usage)
    assert usage.ephemeral
    assert text.startswith("**Usage today (")
    dialogue = re.search(r"Dialogue: ([\d,]+) in / ([\d,]+) out", text)
    assert dialogue is not None and int(dialogue.group(1).replace(",", "")) > 0


# --------------------------------------------------------------------------- the rest


async def test_attachments_on_messages_audio_to_flash_lite_and_unsupported_noted(
    h: Harness,
) -> None:
    await h.say(
        h.general,
        f"{h.mention()} transcribe this",
        attachments=[("memo.mp3", b"ID3" + b"\x00" * 200, "audio/mpeg")],
    )
    (reply,) = await _reply_in(h, h.general)
    audio = h.cometapi.requests_for(FLASH)
    assert audio, "audio goes to Flash-Lite"
    assert reply.startswith("Echo: [Alice] transcribe this")
    await h.say(
        h.general,
        f"{h.mention()} and this?",
        attachments=[("tools.zip", b"PK\x03\x04" + b"\x00" * 50, "application/zip")],
    )
    replies = await _reply_in(h, h.general, 2)
    assert (
        "_I can't read tools.zip: I don't read archives; attach the files inside._" in replies[-1]
    )


async def test_direct_messages_get_one_polite_pointer(h: Harness) -> None:
    dm = h.dc.add_dm_channel(h.bob)
    await h.say(dm, "hi bot", h.bob)
    await h.say(dm, "hello?", h.bob)
    await asyncio.sleep(0.2)
    await h.settle()
    (pointer,) = h.bot_messages(dm)
    assert pointer.content.startswith("I only work in servers")
    assert h.cometapi.requests == []


async def test_deleting_a_thread_forgets_its_conversation(h: Harness) -> None:
    state = await h.command("ask", {"prompt": "remember RAVEN"})
    await h.answered(state)
    (thread,) = h.dc.threads
    key = ConversationKey("discord", str(h.guild.id), str(h.general.id), str(thread.id))
    assert await h.engine.memory.history(key)
    await h.dc.dispatch(
        "THREAD_DELETE",
        {
            "id": str(thread.id),
            "guild_id": str(h.guild.id),
            "parent_id": str(h.general.id),
            "type": thread.type,
        },
    )
    for _ in range(100):
        if not await h.engine.memory.history(key):
            break
        await asyncio.sleep(0.02)
    assert await h.engine.memory.history(key) == []


async def test_ephemeral_loading_flags_are_never_left_behind(h: Harness) -> None:
    states = [await h.command("ask", {"prompt": f"q{i}"}) for i in range(3)]
    states.append(await h.command("usage"))
    for state in states:
        await h.answered(state)
        original = state.original
        assert original is not None
        assert not original.flags & MF_LOADING
    assert states[-1].original is not None and states[-1].original.flags & MF_EPHEMERAL


async def test_without_thread_permission_a_reply_to_the_answer_continues_it(h: Harness) -> None:
    bot_role = h.guild.roles[h.guild.bot_role_id or 0]
    h.dc.set_overwrite(h.general, bot_role, deny=Perm.CREATE_PUBLIC_THREADS)
    state = await h.command("ask", {"prompt": "The launch code is ORCA."})
    await h.answered(state)
    assert h.dc.threads == []
    answer = state.original
    assert answer is not None
    await h.say(h.general, "what was the code?", h.bob, message_reference=answer)
    await _reply_in(h, h.general, 2)
    request = h.cometapi.requests_for(GPT)[-1]
    assert [m["content"] for m in request.messages[1:]] == [
        "[Alice] The launch code is ORCA.",
        "Echo: [Alice] The launch code is ORCA.",
        "[Bob] what was the code?",
    ]


async def test_an_answer_near_the_token_deadline_hands_over_with_a_note(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bots.discord.sink

    monkeypatch.setattr(bots.discord.sink, "TOKEN_MARGIN", 15 * 60 - 0.4)
    h.cometapi.script(GPT, Reply("Slow and steady wins.", chunks=6, chunk_delay=0.15))
    state = await h.command("ask", {"prompt": "slowly"})
    await h.dc.wait_until(lambda: state.acknowledged)
    await h.settle()
    original = state.original_content or ""
    assert original.endswith(
        "\n-# This took longer than Discord lets me edit this message: the answer continues below."
    )
    posted = [m for m in h.bot_messages(h.general) if m.interaction_id is None]
    assert [m.content for m in posted] == ["> **Alice:** slowly\n\nSlow and steady wins."]
    assert posted[0].reference_id == state.original_message_id


async def test_a_retried_stream_is_shown_once_and_extra_pages_go(h: Harness) -> None:
    from tests.fakes.cometapi import StreamCut

    long = " ".join(f"draft{i}" for i in range(600))
    h.cometapi.script(
        GPT,
        StreamCut(after=30, reply=Reply(long, chunks=40, chunk_delay=0.01)),
        Reply("The short, final answer.", delay=0.3),
    )
    state = await h.command("ask", {"prompt": "retry me"})
    final = await h.answered(state)
    assert final == "> **Alice:** retry me\n\nThe short, final answer."
    assert state.followups == []  # the page the first attempt had filled is gone
    shown = _texts(h, WEBHOOK_ORIGINAL)
    assert any("draft" in s for s in shown)  # the first attempt was streamed...
    assert "draft" not in final  # ... and replaced, not appended to


async def test_a_message_delivered_twice_is_answered_once(h: Harness) -> None:
    payload = h.dc.message(h.general, f"{h.mention()} once please", h.alice)
    await h.dc.dispatch("MESSAGE_CREATE", payload)
    await h.dc.dispatch("MESSAGE_CREATE", payload)  # a replay (RESUME, a second process)
    await _reply_in(h, h.general)
    await asyncio.sleep(0.2)
    await h.settle()
    assert [m.content for m in h.bot_messages(h.general)] == ["Echo: [Alice] once please"]
    assert len(h.cometapi.requests_for(GPT)) == 1


async def test_a_deferred_interaction_claimed_elsewhere_still_ends_in_text(h: Harness) -> None:
    thread = await h.add_thread(h.general, "plans", h.alice)
    payload = h.dc.interaction("ask", {"prompt": "hello"}, h.alice, thread)
    key = ConversationKey("discord", str(h.guild.id), str(h.general.id), str(thread.id))
    claim = h.engine.line.claim_key(key, f"interaction:{payload['id']}")
    await h.engine.store.redis.set(claim, "elsewhere", px=60_000)
    await h.dc.dispatch("INTERACTION_CREATE", payload)
    state = h.dc.interaction_state(payload)
    final = await h.answered(state)
    assert final.endswith("⚠️ This question is already being answered elsewhere.")
    assert h.cometapi.requests == []


async def test_deleted_and_edited_messages_leave_memory(h: Harness) -> None:
    state = await h.command("ask", {"prompt": "let us plan"})
    await h.answered(state)
    (thread,) = h.dc.threads
    secret = h.dc.message(thread, "the password is hunter2", h.bob)
    await h.dc.dispatch("MESSAGE_CREATE", secret)
    await _reply_in(h, thread, 1)
    plan = h.dc.message(thread, "deploy at 10", h.bob)
    await h.dc.dispatch("MESSAGE_CREATE", plan)
    await _reply_in(h, thread, 2)
    await h.dc.dispatch(
        "MESSAGE_DELETE",
        {"id": secret["id"], "channel_id": str(thread.id), "guild_id": str(h.guild.id)},
    )
    edited = dict(plan, content="deploy at 11", edited_timestamp=plan["timestamp"])
    await h.dc.dispatch("MESSAGE_UPDATE", edited)
    await asyncio.sleep(0.2)
    await h.settle()
    await h.say(thread, "what is planned?", h.alice)
    await _reply_in(h, thread, 3)
    last = h.cometapi.requests_for(GPT)[-1]
    users = [str(m["content"]) for m in last.messages if m["role"] == "user"]
    assert "hunter2" not in str(last.json)
    assert users[-2:] == ["[Bob] deploy at 11", "[Alice] what is planned?"]


async def test_twenty_people_asking_at_once_in_a_channel_do_not_wait_on_each_other(
    h: Harness,
) -> None:
    h.cometapi.set_responder(lambda r: Reply(f"for {r.last_user_text}", chunks=4, delay=0.25), GPT)
    people = [h.dc.add_member(h.guild, f"person{i}") for i in range(20)]
    await asyncio.gather(
        *(h.say(h.general, f"{h.mention()} question {i}", p) for i, p in enumerate(people))
    )
    await h.dc.wait_until(lambda: len(h.cometapi.requests_for(GPT)) == 20, 10)
    requests = h.cometapi.requests_for(GPT)
    started = [r.received_at for r in requests]
    assert max(started) - min(started) < 1.0  # side by side, not one after another
    for request in requests:
        users = [m["content"] for m in request.messages if m["role"] == "user"]
        assert len(users) == 1  # nobody else's question in anyone's request
    await h.dc.wait_until(lambda: len(h.bot_messages(h.general)) >= 20, 30)
    await h.settle()


# --------------------------------------------------------------------------- rate limits


async def test_a_person_over_the_rate_limit_is_told_once_and_others_are_answered(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    cometapi.set_responder(lambda r: Reply(f"re {r.last_user_text}"))
    settings = {"user_rate_limit": "3/minute"}
    async with running_bot(redis_url, key_prefix, cometapi, settings=settings) as h:
        for n in range(5):
            await h.say(h.general, f"{h.mention()} question {n}")
        await h.say(h.general, f"{h.mention()} mine?", h.bob)
        await h.dc.wait_until(lambda: len(h.bot_messages(h.general)) >= 5, 10)
        await h.settle()
        texts = [m.content for m in h.bot_messages(h.general)]
        answers = [t for t in texts if t.startswith("re ")]
        notes = [t for t in texts if "answer you again in about" in t]
        assert len(answers) == 4 and "re [Bob] mine?" in answers  # Alice's 3 and Bob's
        assert len(notes) == 1  # once per window, not once per message
        assert len(h.cometapi.requests_for(GPT)) == 4
        # /summarize counts against the same limit, answered privately
        state = await h.command("summarize", {})
        await h.dc.wait_until(lambda: state.callback_type is not None, 5)
        assert state.callback_type == 4 and state.ephemeral
        assert "answer you again in about" in (state.original_content or "")
        assert h.cometapi.requests_for(FLASH) == []


async def test_a_stalled_attachment_download_is_given_up_by_the_total_timeout(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    """Discord's CDN sends the head of a file and then nothing: the answer comes by
    TOTAL_TIMEOUT saying the file couldn't be read, and the channel goes on."""
    import time

    async with running_bot(redis_url, key_prefix, cometapi, settings={"total_timeout": 2.0}) as h:
        payload = h.dc.message(
            h.general,
            f"{h.mention()} read this",
            h.alice,
            attachments=[("notes.txt", b"x" * 4000, "text/plain")],
        )
        h.dc.stall_attachment(int(payload["attachments"][0]["id"]), stall=60, sent=100)
        started = time.monotonic()
        await h.dc.dispatch("MESSAGE_CREATE", payload)
        await h.dc.wait_until(lambda: len(h.bot_messages(h.general)) >= 1, 8)
        await h.settle()
        assert time.monotonic() - started < 3.5  # TOTAL_TIMEOUT and a small margin
        [answer] = [m.content for m in h.bot_messages(h.general)]
        assert "I couldn't read notes.txt: it did not download within 2 seconds." in answer
        await h.say(h.general, f"{h.mention()} still there?")
        await h.dc.wait_until(lambda: len(h.bot_messages(h.general)) >= 2, 8)
        await h.settle()
        assert h.bot_messages(h.general)[-1].content == "Echo: [Alice] still there?"


async def test_a_file_larger_than_its_stated_size_is_cut_off_and_noted_as_too_large(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    """The gateway under-states a file's size: the download stops just past the limit and
    the answer says the file was skipped as too large (the note Slack gives too)."""
    limit = {"max_attachment_bytes": 200_000}
    async with running_bot(redis_url, key_prefix, cometapi, settings=limit) as h:
        payload = h.dc.message(
            h.general,
            f"{h.mention()} read this",
            h.alice,
            attachments=[("notes.txt", b"x" * 2_000_000, "text/plain")],
        )
        payload["attachments"][0]["size"] = 100
        await h.dc.dispatch("MESSAGE_CREATE", payload)
        await h.dc.wait_until(lambda: len(h.bot_messages(h.general)) >= 1, 8)
        await h.settle()
        [answer] = [m.content for m in h.bot_messages(h.general)]
        assert "I skipped notes.txt: it is 0." in answer
        assert "MB, over my 0.2 MB limit." in answer
