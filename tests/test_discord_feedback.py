"""👍/👎 on Discord answers, through the real client and the fake Discord: the buttons
on the final answer, a vote per person (a changed vote counted once), 👎 asking a reason
in a modal, and every reply to a click private."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from bots.discord.history import tenant_key
from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.fakes.discord_server import MessageView
from tests.test_discord_harness import GPT, Harness, running_bot


@pytest.fixture
async def h(redis_url: str, key_prefix: str, cometapi: FakeCometAPI) -> AsyncIterator[Harness]:
    async with running_bot(redis_url, key_prefix, cometapi) as harness:
        yield harness


async def answer(h: Harness, question: str) -> MessageView:
    count = len(h.bot_messages(h.general))
    await h.say(h.general, f"{h.mention()} {question}")
    await h.dc.wait_until(lambda: len(h.bot_messages(h.general)) > count, 10)
    await h.settle()
    return h.bot_messages(h.general)[-1]


def buttons(message: MessageView) -> list[dict[str, Any]]:
    (row,) = message.components
    return cast(list[dict[str, Any]], row["components"])


async def click(h: Harness, message: MessageView, custom_id: str, user: Any) -> Any:
    payload = h.dc.component_interaction(message.id, custom_id, user)
    await h.dc.dispatch("INTERACTION_CREATE", payload)
    state = h.dc.interaction_state(payload)
    await h.dc.wait_until(lambda: state.acknowledged, 5)
    await h.settle()
    return state


async def test_every_answer_carries_feedback_buttons_and_votes_count_once(h: Harness) -> None:
    h.cometapi.script(GPT, Reply("Paris is the capital of France."))
    message = await answer(h, "capital of France?")
    assert message.content == "Paris is the capital of France."
    up, down = buttons(message)
    assert [b["emoji"]["name"] for b in (up, down)] == ["👍", "👎"]
    match = re.fullmatch(r"teambot:fb:up:([0-9a-f]{16})", up["custom_id"])
    assert match is not None and down["custom_id"] == f"teambot:fb:down:{match[1]}"
    answer_id = match[1]
    tenant = tenant_key(h.guild.id)

    thanked = await click(h, message, up["custom_id"], h.bob)
    assert thanked.callback_type == 4 and thanked.ephemeral
    assert (thanked.original_content or "").startswith("Thanks")
    assert await h.engine.feedback.week(tenant) == {("dialogue", GPT): [1, 0]}
    await click(h, message, up["custom_id"], h.bob)  # the same vote again: still one
    assert await h.engine.feedback.week(tenant) == {("dialogue", GPT): [1, 0]}

    # Bob changes his mind: 👎 opens a modal for a reason, and the vote moves at once
    asked = await click(h, message, down["custom_id"], h.bob)
    assert asked.callback_type == 9 and asked.modal is not None
    assert asked.modal["custom_id"] == f"teambot:fbr:{answer_id}"
    assert await h.engine.feedback.week(tenant) == {("dialogue", GPT): [0, 1]}
    submit = h.dc.modal_submit(asked, {"reason": "It missed the point"}, h.bob)
    await h.dc.dispatch("INTERACTION_CREATE", submit)
    done = h.dc.interaction_state(submit)
    await h.dc.wait_until(lambda: done.acknowledged, 5)
    await h.settle()
    assert done.ephemeral and (done.original_content or "").startswith("Thanks")
    assert await h.engine.feedback.week(tenant) == {("dialogue", GPT): [0, 1]}
    stored = await h.engine.store.redis.hgetall(h.engine.store.keys.of("fb", tenant, answer_id))
    assert stored[f"v:{h.bob.id}"] == "down|It missed the point"
    assert stored["model"] == GPT and stored["platform"] == "discord"

    # Alice's 👎 with the modal left empty still counts, without a reason
    asked = await click(h, message, down["custom_id"], h.alice)
    submit = h.dc.modal_submit(asked, {}, h.alice)
    await h.dc.dispatch("INTERACTION_CREATE", submit)
    await h.dc.wait_until(lambda: h.dc.interaction_state(submit).acknowledged, 5)
    await h.settle()
    assert await h.engine.feedback.week(tenant) == {("dialogue", GPT): [0, 2]}
    # the buttons are still there for the next person
    assert len(buttons(h.dc.message_view(message.id) or message)) == 2
    # /usage shows this week's 👍/👎 per model
    usage = await h.answered(await h.command("usage", {}, h.bob))
    assert f"- {GPT}: 👍 0 · 👎 2" in usage


async def test_a_long_answer_has_the_buttons_on_its_last_page_only(h: Harness) -> None:
    words = " ".join(f"word{i}" for i in range(700))  # over one Discord page
    h.cometapi.script(GPT, Reply(words, chunks=20))
    count = len(h.bot_messages(h.general))
    await h.say(h.general, f"{h.mention()} write a lot")
    await h.dc.wait_until(lambda: len(h.bot_messages(h.general)) >= count + 2, 10)
    await h.settle()
    pages = h.bot_messages(h.general)[count:]
    assert len(pages) >= 2
    assert all(not page.components for page in pages[:-1])
    assert len(buttons(pages[-1])) == 2


async def test_an_unknown_answer_is_refused_politely(h: Harness) -> None:
    message = await answer(h, "hello")
    (up, _down) = buttons(message)
    await h.engine.store.redis.delete(
        h.engine.store.keys.of("fb", tenant_key(h.guild.id), up["custom_id"].rsplit(":", 1)[1])
    )
    state = await click(h, message, up["custom_id"], h.bob)
    assert state.ephemeral and "too old" in (state.original_content or "")
    assert await h.engine.feedback.week(tenant_key(h.guild.id)) == {}


async def test_the_fake_refuses_what_discord_refuses() -> None:
    from tests.fakes.discord_server import _ApiError, _check_interactive

    ok_row = {"type": 1, "components": [{"type": 2, "style": 2, "label": "a", "custom_id": "x"}]}
    _check_interactive({"content": "hi", "components": [ok_row]})
    for bad in (
        {"components": [ok_row, ok_row]},  # a custom_id twice
        {"components": [{"type": 1, "components": [{"type": 2, "style": 2, "label": "a"}]}]},
        {"components": [{"type": 1, "components": [{"type": 2, "style": 1, "custom_id": "y"}]}]},
    ):
        with pytest.raises(_ApiError):
            _check_interactive({"content": "hi", **bad})
    text = {"type": 4, "custom_id": "r", "style": 1, "label": "Why"}
    _check_interactive(
        {
            "type": 9,
            "data": {
                "title": "T",
                "custom_id": "m",
                "components": [{"type": 1, "components": [text]}],
            },
        }
    )
    for data in (
        {"title": "T" * 46, "custom_id": "m", "components": [{"type": 1, "components": [text]}]},
        {"title": "T", "custom_id": "m", "components": []},
        {
            "title": "T",
            "custom_id": "m",
            "components": [
                {"type": 1, "components": [{**text, "min_length": 10, "max_length": 5}]}
            ],
        },
    ):
        with pytest.raises(_ApiError):
            _check_interactive({"type": 9, "data": data})
