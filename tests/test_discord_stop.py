"""Stop on Discord, through the real client and the fake Discord: a `stop` message in the
thread (or the Stop button on the message being written) cancels the model call within a
second (the fake CometAPI sees the connection closed), the message ends with "(stopped)",
and the next message in the thread is answered."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.fakes.discord_server import FakeChannel
from tests.test_discord_harness import GPT, Harness, running_bot

SLOW = "Alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima"


@pytest.fixture
async def h(redis_url: str, key_prefix: str, cometapi: FakeCometAPI) -> AsyncIterator[Harness]:
    async with running_bot(redis_url, key_prefix, cometapi) as harness:
        yield harness


async def a_thread(h: Harness) -> FakeChannel:
    """A thread the bot follows (the one /ask opens)."""
    state = await h.command("ask", {"prompt": "Let's talk in a thread."})
    await h.answered(state)
    (thread,) = h.dc.threads
    return thread


async def streaming(h: Harness, thread: FakeChannel, question: str) -> int:
    """Ask a slow answer in `thread`; returns once part of it is on screen."""
    h.cometapi.script(GPT, Reply(SLOW, chunks=12, chunk_delay=0.4))
    before = len(h.cometapi.requests_for(GPT))
    await h.say(thread, question, h.bob)
    await h.dc.wait_until(
        lambda: any("bravo" in m.content for m in h.bot_messages(thread)), 10, "no text streamed"
    )
    return before


async def test_a_stop_message_cancels_the_model_call_within_a_second(h: Harness) -> None:
    thread = await a_thread(h)
    index = await streaming(h, thread, "Tell me a long story.")
    request = h.cometapi.requests_for(GPT)[index]
    asked = time.monotonic()
    await h.say(thread, "stop", h.bob)
    await h.dc.wait_until(lambda: request.client_closed_at is not None, 2, "stream not closed")
    assert request.client_closed_at is not None
    assert request.client_closed_at - asked < 1.0
    await h.dc.wait_until(
        lambda: h.bot_messages(thread)[-1].content.endswith("_(stopped)_"), 2, "not marked"
    )
    stopped = h.bot_messages(thread)[-1]
    assert stopped.content.startswith("Alpha bravo")
    assert "lima" not in stopped.content  # nothing more was appended
    assert not stopped.components  # no Stop button left, and no 👍/👎 on a stopped answer
    await h.settle()
    assert len(h.bot_messages(thread)) == 1  # `stop` itself got no answer of its own

    # the next message proceeds, and the stopped answer is remembered as stopped
    await h.say(thread, "And now?", h.bob)
    await h.dc.wait_until(lambda: len(h.bot_messages(thread)) == 2, 10, "no next answer")
    await h.settle()
    assert h.bot_messages(thread)[-1].content.startswith("Echo: [Bob] And now?")
    sent = h.cometapi.requests_for(GPT)[-1].messages
    assert any("stopped by the user" in str(m.get("content")) for m in sent)


async def test_the_stop_button_stops_and_leaves_with_the_answer(h: Harness) -> None:
    thread = await a_thread(h)
    index = await streaming(h, thread, "Tell me another long story.")
    request = h.cometapi.requests_for(GPT)[index]
    (message,) = h.bot_messages(thread)
    (row,) = message.components
    (button,) = row["components"]
    assert button["label"] == "Stop"
    assert button["custom_id"] == f"teambot:stop:discord:{h.guild.id}:{h.general.id}:{thread.id}"
    clicked = time.monotonic()
    payload = h.dc.component_interaction(message.id, button["custom_id"], h.alice)
    await h.dc.dispatch("INTERACTION_CREATE", payload)
    await h.dc.wait_until(lambda: request.client_closed_at is not None, 2, "stream not closed")
    assert request.client_closed_at is not None and request.client_closed_at - clicked < 1.0
    state = h.dc.interaction_state(payload)
    assert state.callback_type == 6  # acknowledged without a message of its own
    await h.dc.wait_until(
        lambda: h.bot_messages(thread)[-1].content.endswith("_(stopped)_"), 2, "not marked"
    )
    await h.settle()
    assert not h.bot_messages(thread)[-1].components  # the button left with the stream


async def test_a_finished_answer_swaps_stop_for_feedback(h: Harness) -> None:
    thread = await a_thread(h)
    h.cometapi.script(GPT, Reply(SLOW, chunks=6, chunk_delay=0.1))
    await h.say(thread, "A short one.", h.bob)
    await h.dc.wait_until(lambda: any(m.components for m in h.bot_messages(thread)), 10)
    (row,) = h.bot_messages(thread)[0].components
    assert [b.get("label") for b in row["components"]] == ["Stop"]
    await h.dc.wait_until(lambda: "lima" in h.bot_messages(thread)[0].content, 10)
    await h.settle()
    (row,) = h.bot_messages(thread)[0].components
    assert [b["emoji"]["name"] for b in row["components"]] == ["👍", "👎"]
