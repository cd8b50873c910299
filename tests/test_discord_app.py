"""Running the Discord bot: command sync, invite URL, health checks, sharding across
processes, the Message Content intent, configuration of endpoints, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import discord
import pytest
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.discord.app import DEFAULT_API_URL, discord_endpoints, run_discord, shard_problems
from bots.discord.bot import BOT_PERMISSIONS, TeamBot, invite_url
from bots.health import HealthServer
from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.discord_server import FakeDiscord, FakeGuild, Intent
from tests.support import make_settings
from tests.test_discord_harness import (
    GPT,
    LOOSE_BUCKETS,
    TOKEN,
    bot_settings,
    check_contract,
    client,
    no_tasks_left,
    running_bot,
    world,
)

NAMES = ["ask", "summarize", "recap", "forget", "settings", "usage"]


# --------------------------------------------------------------------------- commands


async def test_global_commands_sync_once_then_only_when_they_change(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    async with FakeDiscord(token=TOKEN) as dc:
        world(dc)
        config = bot_settings(redis_url, key_prefix, cometapi, dc)
        async with client(config) as bot:
            assert [(s.guild_id, s.names) for s in dc.command_syncs] == [(None, NAMES)]
            digest = bot.command_digest()
        async with client(config):  # a restart, or a second process: nothing to do
            pass
        assert len(dc.command_syncs) == 1
        app = dc.application_id
        await _set_cache(config, f"{app}:global", "an older command set")
        async with client(config):
            pass
        assert len(dc.command_syncs) == 2  # the command set changed: synced again
        async with client(config, sync=True):  # `teambot discord --sync`
            pass
        assert len(dc.command_syncs) == 3
        (ask,) = [c for c in dc.commands() if c["name"] == "ask"]
        assert ask["contexts"] == [0] and ask["dm_permission"] is False
        assert [o["name"] for o in ask["options"]] == ["prompt", "image"]
        assert len(digest) == 24
        check_contract(dc)
    await no_tasks_left()


async def _set_cache(config: Any, ident: str, value: str) -> None:
    from core.engine import Engine

    async with await Engine.start(config) as engine:
        await engine.cache_set("discord-commands", ident, value)


async def test_guild_ids_sync_there_instantly_and_sync_clears_global_copies(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    async with FakeDiscord(token=TOKEN) as dc:
        guild, *_ = world(dc)
        config = bot_settings(redis_url, key_prefix, cometapi, dc, discord_guild_ids=str(guild.id))
        async with client(config):
            assert [(s.guild_id, s.names) for s in dc.command_syncs] == [(guild.id, NAMES)]
        async with client(config):
            pass
        assert len(dc.command_syncs) == 1
        async with client(config, sync=True):
            pass
        assert [(s.guild_id, s.names) for s in dc.command_syncs[1:]] == [
            (guild.id, NAMES),
            (None, []),  # commands registered globally before would show twice
        ]
        check_contract(dc)
    await no_tasks_left()


async def test_guild_commands_answer_like_global_ones(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    async with FakeDiscord(token=TOKEN, bucket_limits=LOOSE_BUCKETS) as dc:
        guild, general, alice, _bob = world(dc)
        config = bot_settings(redis_url, key_prefix, cometapi, dc, discord_guild_ids=str(guild.id))
        async with client(config):
            payload = dc.interaction("ask", {"prompt": "hi"}, alice, general)
            assert payload["data"].get("guild_id") == str(guild.id)
            await dc.dispatch("INTERACTION_CREATE", payload)
            state = dc.interaction_state(payload)
            await dc.wait_until(lambda: (state.original_content or "").endswith("[Alice] hi"))
        check_contract(dc)
    await no_tasks_left()


def test_invite_url_has_exactly_the_scopes_and_permissions_needed() -> None:
    url = urlparse(invite_url(1234567890))
    query = parse_qs(url.query)
    assert url.netloc == "discord.com" and url.path == "/oauth2/authorize"
    assert query["client_id"] == ["1234567890"]
    assert query["scope"] == ["bot applications.commands"]
    wanted = discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        read_message_history=True,
    )
    assert query["permissions"] == [str(wanted.value)] == ["309237713920"]
    assert wanted == BOT_PERMISSIONS
    assert not BOT_PERMISSIONS.mention_everyone
    assert not BOT_PERMISSIONS.administrator


async def test_the_invite_url_is_printed_on_start(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_bot(redis_url, key_prefix, cometapi) as h:
        out = capsys.readouterr().out
        assert f"client_id={h.dc.application_id}" in out
        assert "scope=bot+applications.commands&permissions=309237713920" in out


# --------------------------------------------------------------------------- health


async def test_health_and_readiness(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    async with running_bot(redis_url, key_prefix, cometapi) as h:
        health = HealthServer(h.engine, checks=lambda: shard_problems(h.bot))
        port = await health.start("127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"status": "ok"}
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    assert resp.status == 200
                    body = await resp.json()
                    assert body["status"] == "ready"
                    assert body["problems"] == []
                await h.bot.close()
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    assert resp.status == 503
                    assert (await resp.json())["problems"] == ["discord: not running"]
        finally:
            await health.stop()


# --------------------------------------------------------------------------- sharding


def _guild_on_shard(dc: FakeDiscord, name: str, shard: int, shards: int) -> FakeGuild:
    ms = int(time.time() * 1000) - 1_420_070_400_000 - 10**9
    base = (ms - ms % shards) << 22
    return dc.add_guild(name, id=base + (shard << 22) + len(dc.calls))


async def test_two_processes_with_their_own_shards_share_conversations(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    async with FakeDiscord(token=TOKEN, recommended_shards=2, bucket_limits=LOOSE_BUCKETS) as dc:
        even = _guild_on_shard(dc, "even", 0, 2)
        odd = _guild_on_shard(dc, "odd", 1, 2)
        even_chat = dc.add_channel(even, "general")
        odd_chat = dc.add_channel(odd, "general")
        ana = dc.add_member(even, "ana")
        ben = dc.add_member(odd, "ben")
        common = {"discord_shard_count": 2}
        first = bot_settings(redis_url, key_prefix, cometapi, dc, **common, discord_shard_ids="0")
        second = bot_settings(redis_url, key_prefix, cometapi, dc, **common, discord_shard_ids="1")
        async with client(first) as zero, client(second) as one:
            await dc.wait_ready(shards=2)
            assert {tuple(s["shard"]) for s in dc.sessions()} == {(0, 2), (1, 2)}
            assert [g.id for g in zero.guilds] == [even.id]
            assert [g.id for g in one.guilds] == [odd.id]
            asks = []
            for user, channel in ((ana, even_chat), (ben, odd_chat)):
                payload = dc.interaction(
                    "ask", {"prompt": f"I am {user.user.username}"}, user, channel
                )
                assert await dc.dispatch("INTERACTION_CREATE", payload) == 1  # one process
                asks.append(dc.interaction_state(payload))
            for state in asks:
                await dc.wait_until(lambda s=state: (s.original_content or "").startswith("> "))
            await dc.wait_until(lambda: len(dc.threads) == 2)
        # Shard 0's process goes away; its replacement continues the conversation from
        # Redis: memory, not the process, holds it.
        (thread,) = [t for t in dc.threads if t.guild_id == even.id]
        async with client(first):
            await dc.wait_ready()
            await dc.dispatch("MESSAGE_CREATE", dc.message(thread, "who am I?", ana))
            await dc.wait_until(lambda: len([m for m in dc.messages(thread)]) >= 2, 10)
        request = cometapi.requests_for(GPT)[-1]
        assert [m["content"] for m in request.messages[1:]] == [
            "[Ana] I am ana",
            "Echo: [Ana] I am ana",
            "[Ana] who am I?",
        ]
        check_contract(dc)
    await no_tasks_left()


# --------------------------------------------------------------------------- run_discord


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_run_discord_without_the_message_content_intent_falls_back(
    redis_url: str,
    key_prefix: str,
    cometapi: FakeCometAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with FakeDiscord(token=TOKEN, allowed_intents=0, bucket_limits=LOOSE_BUCKETS) as dc:
        _guild, general, alice, _bob = world(dc)
        config = bot_settings(redis_url, key_prefix, cometapi, dc)
        bots: list[TeamBot] = []
        port = _free_port()
        runner = asyncio.create_task(
            run_discord(
                config, port=port, host="127.0.0.1", started=bots.append, guild_ready_timeout=0.05
            )
        )
        try:
            await dc.wait_until(lambda: len(bots) == 2 and bots[-1].is_ready(), 10)
            first, second = dc.identifies
            assert first["intents"] & Intent.MESSAGE_CONTENT
            assert not second["intents"] & Intent.MESSAGE_CONTENT
            assert second["intents"] == (
                Intent.GUILDS | Intent.GUILD_MESSAGES | Intent.DIRECT_MESSAGES
            )
            # Mentions still work without the intent: Discord sends their text.
            mention = f"<@{dc.bot_user.id}> still there?"
            await dc.dispatch("MESSAGE_CREATE", dc.message(general, mention, alice))
            await dc.wait_until(lambda: any(m.author_is_bot for m in dc.messages(general)), 10)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/readyz") as resp,
            ):
                assert resp.status == 200
        finally:
            await bots[-1].close()
            assert await asyncio.wait_for(runner, 10) == 0
        assert [m.content for m in dc.messages(general) if m.author_is_bot] == [
            "Echo: [Alice] still there?"
        ]
        assert "running without it" in caplog.text
        assert TOKEN not in caplog.text
        assert len(dc.command_syncs) == 1  # not synced again by the second client
        check_contract(dc)
    await no_tasks_left()


async def test_run_discord_with_a_refused_token_exits_2(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeDiscord(token="the-real-token") as dc:
        config = bot_settings(redis_url, key_prefix, cometapi, dc)
        assert await run_discord(config) == 2
    err = capsys.readouterr().err
    assert err.startswith("teambot: Discord refused DISCORD_BOT_TOKEN")
    assert TOKEN not in err


async def test_run_discord_needs_a_token(cometapi: FakeCometAPI) -> None:
    from core.settings import ConfigError

    config = make_settings(cometapi_base_url=cometapi.base_url)
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN is not set"):
        await run_discord(config)


def test_endpoints_are_set_only_when_they_differ_and_restored() -> None:
    base, gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    defaults = make_settings(discord_api_url=DEFAULT_API_URL + "/")
    with discord_endpoints(defaults):
        assert base == Route.BASE and gateway == DiscordWebSocket.DEFAULT_GATEWAY
    proxied = make_settings(
        discord_api_url="http://proxy.internal/api/v10/",
        discord_gateway_url="wss://gateway.proxy.internal/",
    )
    with discord_endpoints(proxied):
        assert Route.BASE == "http://proxy.internal/api/v10"
        assert yarl.URL("wss://gateway.proxy.internal/") == DiscordWebSocket.DEFAULT_GATEWAY
    assert base == Route.BASE and gateway == DiscordWebSocket.DEFAULT_GATEWAY


async def test_the_token_is_never_in_a_repr(h_repr: str) -> None:
    assert TOKEN not in h_repr


@pytest.fixture
async def h_repr(redis_url: str, key_prefix: str, cometapi: FakeCometAPI) -> AsyncIterator[str]:
    async with running_bot(redis_url, key_prefix, cometapi) as h:
        yield repr(h.bot) + repr(h.settings) + repr(h.bot.settings.discord_bot_token)


async def test_shutdown_lets_answers_finish(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    from tests.fakes.cometapi import Reply

    async with running_bot(redis_url, key_prefix, cometapi) as h:
        h.cometapi.script(GPT, Reply("Almost done.", chunks=3, chunk_delay=0.2))
        state = await h.command("ask", {"prompt": "slow one"})
        await h.dc.wait_until(lambda: h.bot.busy > 0)
        closing = asyncio.create_task(h.bot.close())
        late = await h.command("ask", {"prompt": "too late"}, h.bob)
        await closing
        assert (state.original_content or "").endswith("Almost done.")
        with contextlib.suppress(TimeoutError):
            await h.dc.wait_until(lambda: late.acknowledged, 1)
        if late.acknowledged:
            assert late.ephemeral and (late.original_content or "").startswith("I'm restarting")


async def test_without_message_content_threads_need_a_mention_and_say_so(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    async with running_bot(
        redis_url,
        key_prefix,
        cometapi,
        fake={"allowed_intents": 0},
        settings={"discord_message_content": False},
    ) as h:
        state = await h.command("ask", {"prompt": "start"})
        await h.answered(state)
        (thread,) = h.dc.threads
        await h.say(thread, "a follow-up without a mention", h.bob)
        await h.dc.wait_until(lambda: len(h.bot_messages(thread)) == 1)
        await h.say(thread, "another one", h.bob)
        await h.say(thread, f"{h.mention()} now with a mention", h.bob)
        await h.dc.wait_until(lambda: len(h.bot_messages(thread)) == 2)
        await h.settle()
        hint, answer = (m.content for m in h.bot_messages(thread))
        assert hint.startswith("I can't read messages here unless you mention me")
        assert answer == "Echo: [Bob] now with a mention"


def test_shard_settings_are_checked_with_a_plain_sentence() -> None:
    from bots.discord.bot import check_sharding
    from core.settings import ConfigError

    with pytest.raises(ConfigError, match="DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"):
        check_sharding(make_settings(discord_shard_ids="0,1"))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        check_sharding(make_settings(discord_shard_count=2, discord_shard_ids="2"))
    check_sharding(make_settings(discord_shard_count=4, discord_shard_ids="2,3"))


async def test_interaction_tokens_stay_out_of_debug_logs(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="discord")
    async with running_bot(redis_url, key_prefix, cometapi) as h:
        payload = h.dc.interaction("ask", {"prompt": "secret?"}, h.alice, h.general)
        await h.dc.dispatch("INTERACTION_CREATE", payload)
        state = h.dc.interaction_state(payload)
        await h.answered(state)
        token = payload["token"]
    assert "/webhooks/" in caplog.text  # the requests are logged ...
    assert token not in caplog.text  # ... without their token
    assert TOKEN not in caplog.text
