"""`teambot discord`: run the Discord bot, with `/healthz`, `/readyz` and `/metrics` on
`--port` (or `HEALTH_PORT`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.discord.bot import BOT_PERMISSIONS, SCOPES, TeamBot, check_sharding, invite_url
from bots.health import HealthServer
from core import Engine, Settings

__all__ = [
    "BOT_PERMISSIONS",
    "DEFAULT_API_URL",
    "SCOPES",
    "HealthServer",
    "TeamBot",
    "discord_endpoints",
    "invite_url",
    "run_discord",
]

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://discord.com/api/v10"


@contextlib.contextmanager
def discord_endpoints(settings: Settings) -> Iterator[None]:
    """Point discord.py at DISCORD_API_URL / DISCORD_GATEWAY_URL (a proxy, or a fake in
    tests) for the duration, when they differ from Discord's own."""
    base, gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    api_url = settings.discord_api_url.rstrip("/")
    try:
        if api_url != DEFAULT_API_URL:
            Route.BASE = api_url
        if settings.discord_gateway_url:
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
        yield
    finally:
        Route.BASE = base
        DiscordWebSocket.DEFAULT_GATEWAY = gateway


def shard_problems(bot: TeamBot | None) -> list[str]:
    """What keeps the Discord side from being ready: not running, not connected yet,
    or shards disconnected."""
    if bot is None or bot.is_closed():
        return ["discord: not running"]
    if not bot.is_ready():
        return ["discord: not connected yet"]
    closed = [sid for sid, shard in bot.shards.items() if shard.is_closed()]
    return [f"discord: shard(s) {closed} disconnected"] if closed else []


def _explain_intents() -> str:
    return (
        "teambot: Discord refused the Message Content intent. Enable it in the Developer "
        "Portal (your application → Bot → Privileged Gateway Intents → Message Content), "
        "or set DISCORD_MESSAGE_CONTENT=false to run without it."
    )


async def run_discord(
    settings: Settings,
    *,
    sync: bool = False,
    port: int | None = None,
    host: str = "0.0.0.0",
    started: Callable[[TeamBot], None] | None = None,
    **client_options: Any,
) -> int:
    """Run until SIGINT/SIGTERM (answers in flight get time to finish). Returns the
    process exit code. `started` is called with each client before it connects (for
    embedding and tests); `client_options` go to the client."""
    settings.require("discord_bot_token")
    check_sharding(settings)
    assert settings.discord_bot_token is not None
    token = settings.discord_bot_token.get_secret_value()
    engine = await Engine.start(settings)
    current: list[TeamBot] = []
    health: HealthServer | None = None
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    stopping: set[asyncio.Task[None]] = set()

    def stop() -> None:
        if current:
            task = loop.create_task(current[-1].close(), name="discord-shutdown")
            stopping.add(task)
            task.add_done_callback(stopping.discard)

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop)
            handled.append(signum)
    try:
        with discord_endpoints(settings):
            port = port or settings.health_port
            if port is not None:
                health = HealthServer(
                    engine, checks=lambda: shard_problems(current[-1] if current else None)
                )
                bound = await health.start(host, port)
                log.info("/healthz, /readyz and /metrics on http://%s:%d", host, bound)
            message_content = settings.discord_message_content
            force_sync = sync
            while True:
                bot = TeamBot(
                    settings,
                    engine,
                    sync=force_sync,
                    message_content=message_content,
                    **client_options,
                )
                current.append(bot)
                if started is not None:
                    started(bot)
                try:
                    async with bot:
                        await bot.start(token)
                    return 0
                except discord.PrivilegedIntentsRequired:
                    if not message_content:
                        print(_explain_intents(), file=sys.stderr)
                        return 2
                    log.warning(
                        "Discord refused the Message Content intent (enable it in the "
                        "Developer Portal); running without it: slash commands and "
                        "@mentions work, thread follow-ups need an @mention and "
                        "/summarize sees only messages that mention the bot"
                    )
                    message_content = False
                    force_sync = False  # the commands were just synced
                except discord.LoginFailure:
                    print(
                        "teambot: Discord refused DISCORD_BOT_TOKEN (reset it in the "
                        "Developer Portal under Bot → Token and put the new one in .env).",
                        file=sys.stderr,
                    )
                    return 2
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        if health is not None:
            await health.stop()
        await engine.close()
