"""The Discord client: events and commands in, `Incoming` / `ChatMessage` to the engine,
replies out through core's `PagedReply` on a Discord surface.

This module builds `TeamBot` and runs its lifecycle (intents, shards, log scrubbing,
slash-command sync, shutdown). Its handlers are mixins on `base.ClientBase`:
`messages` (messages, edits, deletions), `interactions` (/ask, /summarize),
`quick_commands` (/forget, /recap, /usage, /settings) and `buttons` (Approve / Deny,
Stop, 👍 / 👎).

Every handler answers Discord at once (an interaction is deferred within a few
milliseconds) and runs the model work in a tracked background task, so the gateway
heartbeat keeps beating and shutdown can wait for answers in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from typing import Any

import discord

from bots.discord.base import NO_MENTIONS
from bots.discord.buttons import AnswerButtons
from bots.discord.commands import (
    ApprovalButton,
    FeedbackButton,
    ShareButton,
    StopButton,
    build_tree,
)
from bots.discord.interactions import Interactions
from bots.discord.knowledge import DiscordKnowledge
from bots.discord.messages import MessageEvents
from bots.discord.quick_commands import QuickCommands
from bots.discord.sink import discord_pacer, pacing_trace
from core import ConfigError, Engine, Intake, KeyedLocks, Settings, SummaryShares

__all__ = [
    "BOT_PERMISSIONS",
    "SCOPES",
    "TeamBot",
    "check_sharding",
    "intents_for",
    "invite_url",
]

log = logging.getLogger(__name__)

#: What the bot needs in a channel, and nothing more (the README explains each).
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
)
SCOPES = ("bot", "applications.commands")

#: Cache namespace (the engine's small shared cache in Redis): the synced command set.
NS_COMMANDS = "discord-commands"
_ANNOUNCED: set[int] = set()  # invite URL printed once per process
HELP = (
    "Mention me or use /ask and I answer; reply to my answer to continue, or talk in the "
    "thread /ask opens. `/summarize` sums up a thread or channel, `/forget` erases my memory "
    "of this conversation, `/usage` shows today's cost, `/settings` how I behave in this "
    "channel. Say `stop` (or press Stop) to stop an answer; 👍/👎 under an answer tell "
    "the team how I did."
)


def intents_for(message_content: bool) -> discord.Intents:
    """Only what the bot uses: guilds (channels, threads, permissions), messages in
    servers and DMs, and (privileged) their content."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = message_content
    return intents


class _TokenScrubber(logging.Filter):
    """discord.py logs request URLs and gateway payloads at DEBUG; an interaction's
    token (a credential for 15 minutes) is in both. Keep it out of the logs."""

    _URL = re.compile(r"(/(?:webhooks|interactions)/\d+/)[\w.-]+")
    _FIELD = re.compile(r"""(['"]token['"]\s*:\s*['"])[^'"]+""")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self._FIELD.sub(r"\1<token>", self._URL.sub(r"\1<token>", message))
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_SCRUBBER = _TokenScrubber()


def _scrub_discord_logs() -> None:
    for name in ("discord.http", "discord.webhook.async_", "discord.client", "discord.gateway"):
        logger = logging.getLogger(name)
        if _SCRUBBER not in logger.filters:
            logger.addFilter(_SCRUBBER)


def check_sharding(settings: Settings) -> None:
    """DISCORD_SHARD_IDS only make sense with DISCORD_SHARD_COUNT, and below it."""
    count, ids = settings.discord_shard_count, settings.discord_shard_ids
    if ids and count is None:
        raise ConfigError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total) as well.")
    if count is not None and any(not 0 <= i < count for i in ids):
        raise ConfigError(
            f"DISCORD_SHARD_IDS must be between 0 and {count - 1} (DISCORD_SHARD_COUNT={count})."
        )


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=BOT_PERMISSIONS, scopes=SCOPES)


class TeamBot(MessageEvents, Interactions, QuickCommands, AnswerButtons, discord.AutoShardedClient):
    """teambot on Discord. `shard_count`/`shard_ids` come from the settings; with
    neither, Discord's recommended shard count is used."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        sync: bool = False,
        message_content: bool | None = None,
        **options: Any,
    ) -> None:
        check_sharding(settings)
        _scrub_discord_logs()
        # teambot never joins voice: discord.py's warnings about voice libraries are noise.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        self.message_content = (
            settings.discord_message_content if message_content is None else message_content
        )
        pacer = discord_pacer(settings.discord_edit_interval)
        options.setdefault("http_trace", pacing_trace(pacer))
        options.setdefault("shard_count", settings.discord_shard_count)
        if settings.discord_shard_ids:
            options.setdefault("shard_ids", list(settings.discord_shard_ids))
        super().__init__(
            intents=intents_for(self.message_content),
            allowed_mentions=NO_MENTIONS,
            chunk_guilds_at_startup=False,
            **options,
        )
        self.settings = settings
        self.engine = engine
        self.intake = Intake(engine, help_text=HELP, reopen=self._reopen)
        self.shares = SummaryShares(engine, "discord")
        self.knowledge = DiscordKnowledge(self)
        engine.knowledge.attach("discord", history=self.knowledge, recaps=self.knowledge)
        self.force_sync = sync
        self.pacer = pacer
        self.tree = build_tree(self)
        self.synced: list[str] = []
        self._gates = KeyedLocks()
        self._stopping = False
        self._drained: asyncio.Future[None] | None = None
        self._gateway_override = bool(settings.discord_gateway_url)

    def __repr__(self) -> str:
        return f"<TeamBot application_id={self.application_id} shards={self.shard_ids}>"

    # --- lifecycle ----------------------------------------------------------------------

    async def setup_hook(self) -> None:
        self.add_dynamic_items(ShareButton, ApprovalButton, FeedbackButton, StopButton)
        await self.sync_commands(force=self.force_sync)
        if self.application_id is not None and self.application_id not in _ANNOUNCED:
            _ANNOUNCED.add(self.application_id)
            url = invite_url(self.application_id)
            print(f"teambot: invite me to a server with {url}", flush=True)
            log.info("invite URL: %s", url)
        if self.message_content and not self._content_intent_enabled():
            log.warning(
                "the Message Content intent is not enabled for this application in the "
                "Developer Portal; Discord will refuse to connect with it"
            )

    def _content_intent_enabled(self) -> bool:
        flags = self.application_flags
        return bool(flags.gateway_message_content or flags.gateway_message_content_limited)

    async def launch_shards(self) -> None:
        # With DISCORD_GATEWAY_URL set, ask Discord only for the shard count: the
        # gateway URL it returns would bypass the configured one.
        if self._gateway_override and self.shard_count is None:
            self.shard_count, _url, _limits = await self.http.get_bot_gateway()
        await super().launch_shards()

    async def on_ready(self) -> None:
        log.info(
            "connected to Discord as %s: %d server(s), shard(s) %s of %s, message content %s",
            self.user,
            len(self.guilds),
            ",".join(map(str, self.shard_ids)) if self.shard_ids else "all",
            self.shard_count,
            "on" if self.message_content else "off",
        )

    @property
    def busy(self) -> int:
        """Background tasks still running."""
        return self.engine.in_flight

    async def close(self) -> None:
        """Stop taking work, let answers in flight finish, then disconnect."""
        if self._drained is None:
            self._stopping = True
            self._drained = asyncio.ensure_future(self.drain(self.settings.shutdown_grace_seconds))
        await self._drained
        await super().close()
        await self.pacer.close()

    async def drain(self, grace: float) -> None:
        """Let answers in flight finish for up to `grace` seconds, then cancel them (each
        tells its user it was interrupted). The engine keeps accepting work: after a
        reconnect without the Message Content intent, a new client uses it."""
        await self.engine.drain(grace, stop_accepting=False)

    # --- command sync ---------------------------------------------------------------------

    def command_digest(self) -> str:
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]

    async def sync_commands(self, *, force: bool = False) -> list[str]:
        """Register the slash commands: to DISCORD_GUILD_IDS (instant) or globally.
        A scope is synced only when the command set changed since it was last synced
        (a digest remembered in Redis, shared by all processes) or when forced."""
        if self.application_id is None:
            return []
        digest = self.command_digest()
        app = self.application_id
        synced: list[str] = []
        guild_ids = list(self.settings.discord_guild_ids)
        scopes: list[tuple[str, discord.Object | None]] = [
            (f"guild:{gid}", discord.Object(gid)) for gid in guild_ids
        ] or [("global", None)]
        for gid in guild_ids:
            self.tree.copy_global_to(guild=discord.Object(gid))
        for name, guild in scopes:
            remembered = await self._cached(NS_COMMANDS, f"{app}:{name}")
            if not force and remembered == digest:
                continue
            try:
                await self.tree.sync(guild=guild)
            except discord.HTTPException as error:
                log.error(
                    "could not register the slash commands (%s): %s; is the bot in that "
                    "server, invited with the applications.commands scope?",
                    name,
                    error,
                )
                continue
            synced.append(name)
            try:
                await self.engine.cache_set(NS_COMMANDS, f"{app}:{name}", digest, ttl=400 * 86_400)
            except Exception as error:  # next start simply syncs again
                log.warning("could not remember the synced command set: %s", error)
        if force and guild_ids:
            # Commands registered globally earlier would show twice next to the guild ones.
            try:
                await self.http.bulk_upsert_global_commands(app, payload=[])
                synced.append("global-cleared")
            except discord.HTTPException as error:
                log.warning("could not remove global commands: %s", error)
        if synced:
            log.info("slash commands synced: %s", ", ".join(synced))
        self.synced.extend(synced)
        return synced
