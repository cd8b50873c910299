"""/summarize end to end: paginated history, permissions checked before anything is read,
the private summary and its Share button, cached summaries dropped on edits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.types import ConversationKey
from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.discord_server import Perm
from tests.support import team_model
from tests.test_discord_harness import FLASH, GPT, Harness, running_bot

HISTORY = "/channels/{channel_id}/messages"


@pytest.fixture
async def h(redis_url: str, key_prefix: str, cometapi: FakeCometAPI) -> AsyncIterator[Harness]:
    cometapi.set_responder(team_model)
    async with running_bot(redis_url, key_prefix, cometapi) as harness:
        yield harness


def _line(i: int) -> str:
    if i == 120:
        return "We decided to roll back the release."
    if i == 200:
        return "I will write the postmortem by Friday."
    if i == 299:
        return "Who tells the customer?"
    return f"log line {i}"


def _share_id(h: Harness, message_id: int) -> str:
    (row,) = h.dc.message_payload(message_id)["components"]
    (button,) = row["components"]
    assert button["label"] == "Share in channel"
    return str(button["custom_id"])


async def test_a_300_message_thread_is_read_page_by_page_and_summarized(h: Harness) -> None:
    carol = h.dc.add_member(h.guild, "carol")
    thread = await h.add_thread(h.general, "incident review", h.bob)
    h.dc.seed_messages(thread, 300, authors=[h.alice, h.bob, carol], content=_line)
    state = await h.command("summarize", user=h.alice, channel=thread)
    text = await h.answered(state)

    assert state.ephemeral  # only the asker sees it
    assert text.startswith("### 📋 Summary of this thread (whole thread, 300 messages)")
    assert "**TL;DR:** 300 messages; speakers: Alice, Bob, Carol." in text
    assert "Alice: We decided to roll back the release." in text
    assert "**Carol**: I will write the postmortem by Friday." in text
    assert "Carol asked: Who tells the customer?" in text
    reads = [c for c in h.dc.calls_to("GET", HISTORY) if c.path.endswith(f"{thread.id}/messages")]
    assert len(reads) == 4  # 100 + 100 + 100 + an empty last page
    assert all(c.query["limit"] == "100" for c in reads)
    assert "before" not in reads[0].query
    assert [c.query["before"] for c in reads[1:]] == [
        c.response[-1]["id"] for c in reads[:-1]
    ]  # each page continues where the last one ended
    assert len(h.cometapi.requests_for(FLASH)) >= 1
    assert h.cometapi.requests_for(GPT) == []  # the summary route, not dialogue
    assert _share_id(h, state.original_message_id or 0).startswith("teambot:share:")
    assert [m for m in h.bot_messages(thread) if not m.ephemeral] == []


async def test_share_posts_the_summary_in_the_channel_once(h: Harness) -> None:
    h.dc.seed_messages(h.general, 5, authors=[h.alice, h.bob], content="status is green {i}")
    state = await h.command("summarize", user=h.bob)
    text = await h.answered(state)
    custom_id = _share_id(h, state.original_message_id or 0)

    click = h.dc.component_interaction(state.original_message_id or 0, custom_id, h.bob)
    await h.dc.dispatch("INTERACTION_CREATE", click)
    shared = h.dc.interaction_state(click)
    await h.dc.wait_until(lambda: shared.original is not None)
    assert shared.callback_type == 4 and not shared.ephemeral
    assert shared.original_content == f"{text}\n\n-# Shared by Bob"
    public = [m for m in h.bot_messages(h.general) if not m.ephemeral]
    assert [m.content for m in public] == [shared.original_content]

    again = h.dc.component_interaction(state.original_message_id or 0, custom_id, h.bob)
    await h.dc.dispatch("INTERACTION_CREATE", again)
    repeat = h.dc.interaction_state(again)
    await h.dc.wait_until(lambda: repeat.original is not None)
    assert repeat.ephemeral
    assert repeat.original_content == "This summary is already shared in the channel."
    assert len([m for m in h.bot_messages(h.general) if not m.ephemeral]) == 1


async def test_a_channel_the_user_cannot_read_is_refused_before_reading(h: Harness) -> None:
    bot_role = h.guild.roles[h.guild.bot_role_id or 0]
    announcements = h.dc.add_channel(
        h.guild,
        "announcements",
        overwrites=[
            h.dc.overwrite(h.guild, deny=Perm.READ_MESSAGE_HISTORY),
            h.dc.overwrite(bot_role, allow=Perm.READ_MESSAGE_HISTORY),
        ],
    )
    h.dc.seed_messages(announcements, 10, authors=[h.alice])
    state = await h.command("summarize", user=h.bob, channel=announcements)
    text = await h.answered(state)
    assert state.ephemeral
    assert text == (
        f"You can't read the message history of <#{announcements.id}>, so I can't "
        "summarize it for you."
    )
    assert h.dc.calls_to("GET", HISTORY) == []  # nothing was read
    assert h.cometapi.requests == []


async def test_a_channel_the_bot_cannot_read_gets_instructions(h: Harness) -> None:
    bot_role = h.guild.roles[h.guild.bot_role_id or 0]
    private = h.dc.add_channel(
        h.guild,
        "private",
        overwrites=[h.dc.overwrite(bot_role, deny=Perm.READ_MESSAGE_HISTORY)],
    )
    state = await h.command("summarize", user=h.alice, channel=private)
    text = await h.answered(state)
    assert state.ephemeral
    assert "give me View Channel and Read Message History there" in text
    assert h.dc.calls_to("GET", HISTORY) == []


async def test_channel_scope_reads_only_the_recent_hours(h: Harness) -> None:
    ids = h.dc.seed_messages(h.general, 30, authors=[h.alice, h.bob], spacing=3600)
    state = await h.command("summarize", {"scope": "channel", "hours": 5}, h.alice)
    text = await h.answered(state)
    cutoff = h.dc.now() - 5 * 3600
    recent = [i for i in ids if h.dc.message_view(i) and h.dc.message_view(i).created_at > cutoff]  # type: ignore[union-attr]
    assert text.startswith(f"### 📋 Summary of #general (last 5 hours, {len(recent)} messages)")
    (read,) = h.dc.calls_to("GET", HISTORY)
    assert int(read.query["limit"]) == 100


async def test_thread_scope_outside_a_thread_says_how_to_use_it(h: Harness) -> None:
    state = await h.command("summarize", {"scope": "thread"}, h.alice)
    text = await h.answered(state)
    assert state.ephemeral
    assert text == "Use `scope: thread` inside a thread, or `scope: channel` here."


async def test_cached_summary_is_reused_and_dropped_when_a_message_changes(h: Harness) -> None:
    ids = h.dc.seed_messages(h.general, 6, authors=[h.alice, h.bob], content="fact {i}")
    first = await h.command("summarize", user=h.alice)
    text = await h.answered(first)
    calls = len(h.cometapi.requests_for(FLASH))
    again = await h.command("summarize", user=h.bob)
    assert await h.answered(again) == text
    assert len(h.cometapi.requests_for(FLASH)) == calls  # nothing new: the cache answers

    scope = ConversationKey("discord", str(h.guild.id), str(h.general.id), "summary:24")
    assert await h.engine.memory.cached_summary(scope) is not None
    edited = h.dc.message_payload(ids[2], gateway=True)
    edited["content"] = "fact 2, corrected"
    await h.dc.dispatch("MESSAGE_UPDATE", edited)
    for _ in range(100):
        if await h.engine.memory.cached_summary(scope) is None:
            break
        await asyncio.sleep(0.02)
    assert await h.engine.memory.cached_summary(scope) is None


async def test_channel_scope_from_inside_a_thread_summarizes_the_parent(h: Harness) -> None:
    h.dc.seed_messages(h.general, 4, authors=[h.alice], content="parent message {i}")
    thread = await h.add_thread(h.general, "side talk", h.bob)
    h.dc.seed_messages(thread, 2, authors=[h.bob], content="thread message {i}")
    state = await h.command("summarize", {"scope": "channel"}, h.bob, thread)
    text = await h.answered(state)
    assert text.startswith("### 📋 Summary of #general (last 24 hours, 4 messages)")
    assert "speakers: Alice." in text
