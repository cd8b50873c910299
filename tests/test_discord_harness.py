"""The harness of the Discord tests (it holds no tests itself; the name keeps it with
them): the real discord.py client of `bots.discord` against the fake Discord REST API and
gateway on 127.0.0.1, real Redis and the fake CometAPI.

    async with running_bot(redis_url, key_prefix, cometapi) as h:
        state = await h.command("ask", {"prompt": "hi"}, h.alice)
        ...

On the way out it checks, for every test, what must always hold: every request the bot
sent matched Discord's OpenAPI spec, every write carried allowed_mentions that can ping
nobody but the asker, no route was unknown, and no background task was left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bots.discord.app import discord_endpoints
from bots.discord.bot import TeamBot
from core.engine import Engine
from core.settings import Settings
from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.discord_server import (
    CallRecord,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    InteractionState,
    MessageView,
)
from tests.support import make_settings

TOKEN = "discord-test-token-0123456789"
GPT = "gpt-5.3-chat-latest"
FLASH = "gemini-3.1-flash-lite"
#: Discord's per-channel buckets are loosened where they are not what a test is about.
LOOSE_BUCKETS = {
    "POST /channels/{channel_id}/messages": (50, 1.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": (50, 1.0),
    "POST /channels/{channel_id}/typing": (50, 1.0),
}


class QuickBot(TeamBot):
    """The production client, minus discord.py's 5 s pause between shard IDENTIFYs."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


@dataclass
class Harness:
    dc: FakeDiscord
    bot: TeamBot
    engine: Engine
    cometapi: FakeCometAPI
    settings: Settings
    guild: FakeGuild
    general: FakeChannel
    alice: FakeMember
    bob: FakeMember

    async def command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        user: FakeMember | None = None,
        channel: FakeChannel | None = None,
        **extra: Any,
    ) -> InteractionState:
        """Run a slash command the way Discord delivers it; returns its live state."""
        payload = self.dc.interaction(
            name, options or {}, user or self.alice, channel or self.general, **extra
        )
        await self.dc.dispatch("INTERACTION_CREATE", payload)
        return self.dc.interaction_state(payload)

    async def say(
        self, channel: FakeChannel, text: str, user: FakeMember | None = None, **extra: Any
    ) -> int:
        """A user's message arrives; returns its id."""
        payload = self.dc.message(channel, text, user or self.alice, **extra)
        await self.dc.dispatch("MESSAGE_CREATE", payload)
        return int(payload["id"])

    def mention(self) -> str:
        return f"<@{self.dc.bot_user.id}>"

    def bot_messages(self, channel: FakeChannel | int) -> list[MessageView]:
        """What the bot posted in a channel (ephemeral messages included)."""
        return [m for m in self.dc.messages(channel) if m.author_id == self.dc.bot_user.id]

    async def add_thread(
        self, parent: FakeChannel, name: str, owner: FakeMember, *, announce: bool = True
    ) -> FakeChannel:
        """A thread someone opened; `announce` sends THREAD_CREATE as Discord does."""
        thread = self.dc.add_thread(parent, name, owner=owner)
        if announce:
            data = self.dc.channel_payload(thread)
            data["newly_created"] = True
            await self.dc.dispatch("THREAD_CREATE", data)
        return thread

    async def settle(self, within: float = 10.0) -> None:
        """Wait until the bot has no work in flight."""
        deadline = time.monotonic() + within
        while self.bot.busy:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.bot.busy} background task(s) still running")
            await asyncio.sleep(0.01)

    async def answered(self, state: InteractionState, within: float = 10.0) -> str:
        """The final content of an interaction's response, once the bot is done."""

        def shown() -> bool:
            original = state.original
            return original is not None and not original.loading

        await self.dc.wait_until(shown, within, "no response shown")
        await self.settle(within)
        content = state.original_content
        assert content is not None
        return content


def unsafe_writes(dc: FakeDiscord) -> list[CallRecord]:
    """Writes whose allowed_mentions could ping @everyone, a role, or anyone at all
    (user pings are only ever allowed for the asker, whose id the test checks)."""
    bad = []
    for call in dc.calls:
        if call.method not in ("POST", "PATCH") or not isinstance(call.json, dict):
            continue
        body = call.json.get("data") if "callback" in call.path else call.json
        if not isinstance(body, dict) or "content" not in body:
            continue
        allowed = body.get("allowed_mentions")
        if (
            not isinstance(allowed, dict)
            or allowed.get("parse") != []
            or allowed.get("roles")
            or len(allowed.get("users") or []) > 1
        ):
            bad.append(call)
    return bad


def world(dc: FakeDiscord) -> tuple[FakeGuild, FakeChannel, FakeMember, FakeMember]:
    guild = dc.add_guild("Team")
    general = dc.add_channel(guild, "general")
    alice = dc.add_member(guild, "alice")
    bob = dc.add_member(guild, "bob")
    return guild, general, alice, bob


def bot_settings(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, dc: FakeDiscord, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_key_prefix": key_prefix,
        "cometapi_base_url": cometapi.base_url,
        "discord_bot_token": TOKEN,
        "discord_api_url": dc.api_url,
        "discord_gateway_url": dc.gateway_url,
        "discord_edit_interval": 0.05,
        "discord_command_cooldown": 0,
    }
    values.update(overrides)
    return make_settings(**values)


@contextlib.asynccontextmanager
async def client(
    config: Settings, *, bot_class: type[TeamBot] = QuickBot, **bot_options: Any
) -> AsyncIterator[TeamBot]:
    """One bot process: its own engine (HTTP client, Redis pool) and discord.py client,
    connected and ready; closed, with nothing left running, on the way out."""
    engine = await Engine.start(config)
    bot_options.setdefault("guild_ready_timeout", 0.05)
    bot = bot_class(config, engine, **bot_options)
    try:
        with discord_endpoints(config):
            async with bot:
                runner = asyncio.create_task(bot.start(TOKEN), name="test-discord-client")
                ready = asyncio.create_task(bot.wait_until_ready())
                done, _ = await asyncio.wait(
                    {runner, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED
                )
                if runner in done:
                    ready.cancel()
                    runner.result()
                    raise AssertionError("the client stopped before it was ready")
                assert ready in done, "the client was not ready within 10 s"
                try:
                    yield bot
                finally:
                    await bot.close()
                    with contextlib.suppress(asyncio.CancelledError):
                        await runner
    finally:
        await engine.close()
    assert bot.busy == 0


def check_contract(dc: FakeDiscord) -> None:
    """What every test must leave true of what the bot sent to Discord."""
    assert dc.spec_errors == []
    assert dc.unhandled_calls == []
    assert unsafe_writes(dc) == []


@contextlib.asynccontextmanager
async def running_bot(
    redis_url: str,
    key_prefix: str,
    cometapi: FakeCometAPI,
    *,
    fake: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    bot_class: type[TeamBot] = QuickBot,
    **bot_options: Any,
) -> AsyncIterator[Harness]:
    """Start the fake Discord and the bot; stop both and check the invariants after."""
    options: dict[str, Any] = {"token": TOKEN, "bucket_limits": LOOSE_BUCKETS}
    options.update(fake or {})
    async with FakeDiscord(**options) as dc:
        guild, general, alice, bob = world(dc)
        config = bot_settings(redis_url, key_prefix, cometapi, dc, **(settings or {}))
        async with client(config, bot_class=bot_class, **bot_options) as bot:
            yield Harness(dc, bot, bot.engine, cometapi, config, guild, general, alice, bob)
        check_contract(dc)
    await no_tasks_left()


async def no_tasks_left() -> None:
    """Nothing the bot started outlives it (give cancelled tasks a moment to unwind)."""
    current = asyncio.current_task()
    for _ in range(100):
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.01)
    names = sorted(t.get_name() for t in left)
    raise AssertionError(f"tasks left running: {names}")
