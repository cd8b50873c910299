"""Approval cards on Discord, through the real client and the fake gateway: the asker
approves with the button, someone else is told privately, a deny stops the tool."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tests import approval_tools
from tests.fakes.cometapi import FakeCometAPI, Reply, ToolCall
from tests.test_discord_harness import Harness, running_bot

GPT = "gpt-5.3-chat-latest"


async def the_card(h: Harness) -> Any:
    """The open card (one still carrying its buttons)."""
    for _ in range(300):
        cards = [m for m in h.bot_messages(h.general) if "teambot:approve" in str(m.components)]
        if cards:
            return cards[-1]
        await asyncio.sleep(0.02)
    raise AssertionError("no approval card")


def custom_id(card: Any, verb: str) -> str:
    found = re.search(rf"teambot:{verb}:[A-Za-z0-9_-]+", str(card.components))
    assert found is not None, card.components
    return found.group(0)


async def test_approve_and_deny_with_the_buttons(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    approval_tools.CREATED.clear()
    settings = {"tool_modules": "tests.approval_tools", "approval_timeout_seconds": 20}
    async with running_bot(redis_url, key_prefix, cometapi, settings=settings) as h:
        for approve in (True, False):
            cometapi.script(
                GPT,
                Reply("Filing.", tool_calls=[ToolCall("create_ticket", {"title": "Door"})]),
                Reply("All set."),
            )
            await h.say(h.general, f"<@{h.dc.bot_user.id}> file a ticket", h.alice)
            card = await the_card(h)
            assert "create_ticket" in card.content and "Door" in card.content
            # Bob did not ask: told privately, nothing runs
            stranger = h.dc.component_interaction(card.id, custom_id(card, "approve"), h.bob)
            await h.dc.dispatch("INTERACTION_CREATE", stranger)
            state = h.dc.interaction_state(stranger)
            await h.dc.wait_until(lambda state=state: state.acknowledged, 5)
            assert state.ephemeral and "only alice" in (state.original_content or "").lower()
            verb = "approve" if approve else "deny"
            click = h.dc.component_interaction(card.id, custom_id(card, verb), h.alice)
            await h.dc.dispatch("INTERACTION_CREATE", click)
            answers = 1 if approve else 2

            def answered(answers: int = answers) -> bool:
                done = [m for m in h.bot_messages(h.general) if "All set." in m.content]
                return len(done) == answers

            await h.dc.wait_until(answered, 10)
            await h.settle()
            settled = next(m for m in h.bot_messages(h.general) if m.id == card.id)
            assert (
                "approved by alice" if approve else "denied by alice"
            ) in settled.content.lower()
            assert "teambot:approve" not in str(settled.components)
    assert approval_tools.CREATED == ["Door"]
