"""`/recap` and `search_history` on Discord, end to end against the fake Discord server and
the fake CometAPI: Manage Channels to set a recap, a due recap posted in the channel once,
a decision found among 2,000 messages with its jump URL, a channel the asker cannot read
refused without a read or a model call."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest

from core.types import ConversationKey
from tests.fakes.cometapi import FakeCometAPI, RecordedRequest, Reply
from tests.fakes.cometapi import ToolCall as ScriptedCall
from tests.fakes.discord_server import Perm
from tests.support import team_model
from tests.test_discord_harness import FLASH, GPT, Harness, running_bot

HISTORY = "/channels/{channel_id}/messages"
DECISION = "Decision: the offsite venue is the Old Mill in Bath"


@pytest.fixture
async def h(redis_url: str, key_prefix: str, cometapi: FakeCometAPI) -> AsyncIterator[Harness]:
    async with running_bot(
        redis_url, key_prefix, cometapi, settings={"recap_min_interval_minutes": 1}
    ) as harness:
        yield harness


async def test_recap_needs_manage_channels_and_a_due_recap_is_posted_once(h: Harness) -> None:
    h.cometapi.set_responder(team_model)
    state = await h.command("recap", {"schedule": "daily 09:00"}, user=h.bob)
    assert await h.answered(state) == (
        "Only people who can manage this channel can set or remove its recap."
    )
    assert state.ephemeral
    state = await h.command("recap", user=h.bob)
    assert (await h.answered(state)).startswith("This channel has no scheduled recap.")

    managers = h.dc.add_role(h.guild, "mods", permissions=Perm.MANAGE_CHANNELS)
    mod = h.dc.add_member(h.guild, "mod", roles=[managers])
    state = await h.command("recap", {"schedule": "every 1m"}, user=mod)
    assert (await h.answered(state)).startswith("This channel will get a recap every minute")

    h.dc.advance_time(65)  # messages after the schedule was set (Discord's clock moves)
    h.dc.seed_messages(
        h.general, 2, authors=[h.alice, h.bob], content="we ship on {i} May", spacing=1
    )
    knowledge = h.engine.knowledge
    key = ConversationKey("discord", str(h.guild.id), str(h.general.id), "-")
    recap = await knowledge.recaps.get(key)
    assert recap is not None
    due = recap.next_due
    knowledge.recaps.clock = lambda: due + 1  # the due time comes; nothing else is changed
    knowledge.recaps.changed.set()
    await h.dc.wait_until(lambda: any(not m.ephemeral for m in h.bot_messages(h.general)))
    await asyncio.sleep(0.3)
    posts = [m for m in h.bot_messages(h.general) if not m.ephemeral]
    assert len(posts) == 1 and posts[0].content.startswith("**Recap: 2 messages since ")
    [request] = h.cometapi.requests_for(FLASH)
    assert "we ship on 0 May" in request.last_user_text
    assert "we ship on 1 May" in request.last_user_text


def flash_answer(request: RecordedRequest) -> Reply:
    cited = [
        int(n) for n in re.findall(r"^\[(\d+)\] [^\n]*venue", request.last_user_text, re.MULTILINE)
    ]
    answer = "Alice wrote that the offsite venue is the Old Mill in Bath."
    return Reply(json.dumps({"answer": answer, "sources": cited, "found": bool(cited)}))


async def test_search_history_finds_a_decision_among_2000_messages_with_its_jump_url(
    h: Harness,
) -> None:
    # 2,000 messages five minutes apart (about 7 days); the decision about 5 days back
    ids = h.dc.seed_messages(
        h.general,
        2000,
        authors=[h.alice, h.bob],
        content=lambda i: DECISION if i == 560 else f"status {i}: ticket T-{i} in review",
        spacing=300,
    )
    link = f"https://discord.com/channels/{h.guild.id}/{h.general.id}/{ids[560]}"
    h.cometapi.set_responder(flash_answer, FLASH)
    question = {"question": "What did we decide about the offsite venue?", "days": 7}
    h.cometapi.script(GPT, Reply(tool_calls=[ScriptedCall("search_history", question)]))
    await h.say(h.general, f"{h.mention()} what did we decide about the venue?")
    await h.dc.wait_until(lambda: len(h.cometapi.requests_for(GPT)) >= 2, 30)
    await h.settle()
    [search] = h.cometapi.requests_for(FLASH)
    assert DECISION in search.last_user_text
    # the 2,000, the question and the bot's "Using search_history…" line: all of the window
    assert "(2,002, oldest first)" in search.last_user_text
    [(_, result)] = h.cometapi.requests_for(GPT)[-1].tool_results
    assert json.loads(result)["sources"][0]["link"] == link
    answers = [m.content for ch in list(h.dc._channels) for m in h.bot_messages(ch)]
    assert any(link in text for text in answers)  # the fake model echoes the tool result

    # a channel Bob cannot read: refused, not read, no model call
    private = h.dc.add_channel(
        h.guild,
        "leadership",
        overwrites=[h.dc.overwrite(h.guild, deny=Perm.VIEW_CHANNEL)],
    )
    h.dc.seed_messages(private, 5, authors=[h.alice], content="budget is secret {i}")
    h.cometapi.clear_requests()
    reads = len(h.dc.calls_to("GET", HISTORY))
    ask = {"question": "What is the budget?", "channel": f"<#{private.id}>"}
    h.cometapi.script(GPT, Reply(tool_calls=[ScriptedCall("search_history", ask)]))
    await h.say(h.general, f"{h.mention()} what is the budget in leadership?", h.bob)
    await h.dc.wait_until(lambda: len(h.cometapi.requests_for(GPT)) >= 2, 30)
    await h.settle()
    assert h.cometapi.requests_for(FLASH) == []
    assert len(h.dc.calls_to("GET", HISTORY)) == reads
    [(_, refused)] = h.cometapi.requests_for(GPT)[-1].tool_results
    assert "can't" in refused or "can't see" in refused, refused
