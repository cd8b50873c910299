"""/settings on Discord, through the real client and the fake Discord: everyone sees a
channel's settings privately, only members with Manage Channels change them, and a change
applies in that channel only (its instructions reach that channel's requests alone)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bots.discord.history import channel_key
from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.discord_server import Perm
from tests.test_discord_harness import FLASH, GPT, Harness, running_bot

PIRATE = "Answer like a pirate."


@pytest.fixture
async def h(redis_url: str, key_prefix: str, cometapi: FakeCometAPI) -> AsyncIterator[Harness]:
    settings = {"dialogue_model_choices": [f"gemini:{FLASH}"]}
    async with running_bot(redis_url, key_prefix, cometapi, settings=settings) as harness:
        yield harness


async def shown(h: Harness, options: dict[str, object], user: object) -> tuple[str, bool]:
    state = await h.command("settings", options, user)  # type: ignore[arg-type]
    text = await h.answered(state)
    return text, state.ephemeral


async def test_settings_is_registered_with_its_options(h: Harness) -> None:
    (command,) = [c for c in h.dc.commands(h.guild) or h.dc.commands() if c["name"] == "settings"]
    names = [o["name"] for o in command["options"]]
    assert names == [
        "instructions",
        "answer_mode",
        "model",
        "tools",
        "summary_language",
        "reset",
    ]
    model = next(o for o in command["options"] if o["name"] == "model")
    assert [c["value"] for c in model["choices"]] == [GPT, FLASH]


async def test_a_member_sees_the_settings_but_cannot_change_them(h: Harness) -> None:
    text, private = await shown(h, {}, h.alice)
    assert private
    assert f"Settings for <#{h.general.id}>" in text
    assert "Answer mode: follow threads" in text and f"Dialogue model: {GPT}" in text
    text, private = await shown(h, {"instructions": PIRATE}, h.alice)
    assert private and "needs the Manage Channels permission" in text
    stored = await h.engine.channels.get(channel_key(h.guild.id, h.general.id).channel_key())
    assert stored.is_empty()


async def test_an_admin_changes_them_for_that_channel_only(h: Harness) -> None:
    mods = h.dc.add_role(h.guild, "mods", permissions=int(Perm.MANAGE_CHANNELS))
    carol = h.dc.add_member(h.guild, "carol", roles=[mods])
    other = h.dc.add_channel(h.guild, "random")
    text, private = await shown(h, {"instructions": PIRATE, "model": FLASH, "tools": False}, carol)
    assert private and text.startswith("✅ Saved.")
    assert f"Extra instructions: {PIRATE} _(set here)_" in text
    assert f"Dialogue model: {FLASH} _(set here)_" in text
    assert "built-in off" in text

    await h.say(h.general, f"{h.mention()} ahoy?")
    await h.dc.wait_until(lambda: len(h.bot_messages(h.general)) == 1, 10)
    await h.say(other, f"{h.mention()} hello?")
    await h.dc.wait_until(lambda: len(h.bot_messages(other)) == 1, 10)
    await h.settle()
    (here,) = h.cometapi.requests_for(FLASH)  # the channel's model
    assert PIRATE in here.system_text
    assert here.json.get("tools") in (None, [])  # tools off here
    (there,) = h.cometapi.requests_for(GPT)
    assert PIRATE not in there.system_text

    # "mentions only": a follow-up reply without a mention is no longer answered
    text, _ = await shown(h, {"answer_mode": "mentions"}, carol)
    assert "Answer mode: mentions only _(set here)_" in text
    text, _ = await shown(h, {"reset": "all"}, carol)
    assert "Extra instructions: none" in text and "_(set here)_" not in text
    key = channel_key(h.guild.id, h.general.id).channel_key()
    assert (await h.engine.channels.get(key)).is_empty()


async def test_instructions_up_to_the_limit_are_saved(h: Harness) -> None:
    mods = h.dc.add_role(h.guild, "mods", permissions=int(Perm.MANAGE_CHANNELS))
    carol = h.dc.add_member(h.guild, "carol", roles=[mods])
    await shown(h, {"summary_language": "French"}, carol)
    text, _ = await shown(h, {"instructions": "x" * 2000, "summary_language": "German"}, carol)
    assert "Saved" in text and "Summary language: German" in text
