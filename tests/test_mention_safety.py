"""Whatever the model writes, nobody is pinged but the person answered: checked on the
exact bytes the fake Slack and the fake Discord receive, through the real adapters, for
streamed answers, the edit fallback, summaries and shared summaries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.ping_detector import live_pings
from tests.fakes.cometapi import Reply
from tests.test_discord_harness import Harness as DiscordHarness
from tests.test_slack_harness import ALICE, BOT, GENERAL, Harness
from tests.test_slack_harness import h as h
from tests.test_slack_harness import slack as slack

GPT = "gpt-5.3-chat-latest"
FLASH = "gemini-3.1-flash-lite"
BOB = "U0BOB000001"

PINGS = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<!subteam^S0TEAM|@devs>",
    "&lt;!channel&gt;",
    "&#60;!everyone&#62;",
    "&#x3c;!here&#x3E;",
    "&LT;!subteam^S1&GT;",
    "&amp;lt;!channel&amp;gt;",
    f"&lt;@{BOB}&gt;",
    f"<@{BOB}>",
    "@here",
    "@Everyone",
    "&#64;channel",
    "<@&123456789012345678>",
    "<!channel|" + "x" * 200 + ">",
]


def sent_texts(value: Any) -> Iterator[str]:
    """Every string in a request's arguments (text, markdown_text, chunks, blocks…)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from sent_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from sent_texts(item)


def slack_live_pings(h: Harness, allowed: tuple[str, ...] = (ALICE,)) -> list[str]:
    found: list[str] = []
    for call in h.slack.calls:
        if call.method in ("auth.test", "users.info", "conversations.replies"):
            continue
        args = {k: v for k, v in call.args.items() if k not in ("channel", "ts", "thread_ts")}
        for key in ("blocks", "chunks"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        for text in sent_texts(args):
            found += live_pings(text, allowed)
    for response in h.slack.responses:
        for text in sent_texts(response.body):
            found += live_pings(text, allowed)
    return found


_words = st.sampled_from(["Sure", "deploy", "is", "done", "—", "**bold**", "`code`", "\n\n"])
_output = st.lists(st.one_of(_words, st.sampled_from(PINGS)), min_size=3, max_size=14).map(" ".join)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(output=_output, chunks=st.integers(1, 25), refuse_streaming=st.booleans())
async def test_slack_never_receives_a_live_ping(
    h: Harness, output: str, chunks: int, refuse_streaming: bool
) -> None:
    h.slack.calls.clear()
    if refuse_streaming:
        h.slack.refuse_streaming()
    else:
        h.slack.clear_faults()
    h.cometapi.script(GPT, Reply(output, chunks=chunks, chunk_delay=0.002))
    await h.send(h.slack.mention(GENERAL, ALICE, "say it"))
    await h.settle()
    assert slack_live_pings(h) == []


@pytest.mark.parametrize(
    "ping", ["&lt;!channel&gt;", "&#60;!everyone&#62;", "&lt;!subteam^S1&gt;", f"&lt;@{BOB}&gt;"]
)
async def test_an_entity_encoded_ping_in_a_summary_stays_dead(h: Harness, ping: str) -> None:
    summary = {
        "tldr": f"{ping} urgent: ship it",
        "decisions": [f"{ping} decided"],
        "action_items": [{"owner": ping, "task": "ping people", "due": ""}],
        "open_questions": [],
    }
    h.cometapi.set_responder(lambda _r: Reply(json.dumps(summary)), FLASH)
    parent = h.slack.seed_thread(GENERAL, 3, [ALICE, BOB])
    await h.send(h.slack.mention(GENERAL, ALICE, "summarize", thread_ts=parent))
    await h.settle()
    # /summarize, then sharing it in the channel
    await h.command("/summarize", "", user=ALICE, channel=GENERAL)
    await h.settle()
    blocks = h.slack.responses[-1].body["blocks"]
    button = blocks[-1]["elements"][0]
    from tests.test_slack_summaries import block_action

    await h.form(block_action(h, button["value"], user=ALICE, channel=GENERAL))
    await h.settle()
    assert [m for m in h.slack.messages(GENERAL) if m.user == BOT]  # it was shared
    assert slack_live_pings(h) == []


async def test_the_edit_fallback_and_a_split_long_label_stay_dead(h: Harness) -> None:
    h.slack.refuse_streaming()
    h.cometapi.script(GPT, Reply("Sure: &lt;!here&gt; deploy is done", chunks=5))
    await h.send(h.slack.mention(GENERAL, ALICE, "deploy?"))
    await h.settle()
    h.slack.clear_faults()
    label = "<!channel|" + "a" * 200 + "> ping"
    h.cometapi.script(GPT, Reply(label, chunks=9, chunk_delay=0.01))
    await h.send(h.slack.mention(GENERAL, ALICE, "again"))
    await h.settle()
    assert slack_live_pings(h) == []


async def test_the_asker_may_be_mentioned_and_others_are_named(h: Harness) -> None:
    h.cometapi.script(GPT, Reply(f"<@{ALICE}> asked; <@{BOB}> knows", chunks=3))
    mention = h.slack.mention(GENERAL, ALICE, "who knows?")
    await h.send(mention)
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert f"<@{ALICE}>" in answer.text  # the person answered
    assert f"<@{BOB}>" not in answer.text
    assert "Bob Baker" in answer.text or BOB in answer.text.replace("\u2060", "")


async def test_discord_never_receives_a_live_ping(
    redis_url: str, key_prefix: str, cometapi: Any
) -> None:
    from tests.test_discord_harness import running_bot

    async with running_bot(redis_url, key_prefix, cometapi) as dh:
        for ping in PINGS:
            cometapi.script(GPT, Reply(f"Hi {ping} and <@{dh.bob.id}>!", chunks=4))
            await dh.say(dh.general, f"<@{dh.dc.bot_user.id}> hello", dh.alice)
        await dh.dc.wait_until(lambda: len(dh.bot_messages(dh.general)) >= len(PINGS), 20)
        await dh.settle()
        assert discord_live_pings(dh, allowed=(str(dh.alice.id),)) == []


def discord_live_pings(dh: DiscordHarness, allowed: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for call in dh.dc.calls:
        if call.method in ("POST", "PATCH") and isinstance(call.json, dict):
            body = call.json.get("data") if "callback" in call.path else call.json
            if isinstance(body, dict) and isinstance(body.get("content"), str):
                found += live_pings(body["content"], allowed)
    return found
