"""The Discord client: events and commands in, `Incoming` / `ChatMessage` to the engine,
replies out through `DiscordSink`.

Every handler answers Discord at once (an interaction is deferred within a few
milliseconds) and runs the model work in a tracked background task, so the gateway
heartbeat keeps beating and shutdown can wait for answers in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import re
import secrets
from collections.abc import Coroutine
from typing import Any, Literal

import discord

from bots.discord.commands import ShareButton, build_tree, share_view
from bots.discord.format import MESSAGE_LIMIT, quote_prompt, split_message, status_line, thread_name
from bots.discord.history import (
    answer_key,
    channel_key,
    chat_message,
    message_text,
    read_messages,
    tenant_key,
    thread_key,
    thread_starter,
    to_attachment,
)
from bots.discord.sink import (
    ChannelSurface,
    DiscordSink,
    EditPacer,
    InteractionSurface,
    safe_mentions,
)
from core.engine import Engine, Outcome, Reservation
from core.logs import bind
from core.memory import KeyedLocks
from core.settings import ConfigError, Settings
from core.types import Attachment, Author, ChatMessage, ConversationKey, Incoming

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

#: Messages of an existing thread read once, as context, when the bot joins it.
IMPORT_LIMIT = 200
#: How long in-flight answers may finish when the bot is asked to stop.
#: Cache namespaces (the engine's small shared cache in Redis).
NS_COMMANDS = "discord-commands"
NS_THREAD = "discord-thread"
NS_ANSWER = "discord-answer"
NS_SHARE = "discord-share"
NO_MENTIONS = discord.AllowedMentions.none()
_ANNOUNCED: set[int] = set()  # invite URL printed once per process
RESTARTED = "I was restarted while answering. Please ask again."
DM_POINTER = (
    "I only work in servers: my memory, budget and usage belong to a server's team. "
    "Use /ask or mention me in a channel of a server we share."
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


def _author(user: discord.User | discord.Member) -> Author:
    return Author(id=str(user.id), name=user.display_name, is_bot=user.bot)


def _error_text() -> tuple[str, str]:
    error_id = secrets.token_hex(3)
    return error_id, f"Something went wrong on my side (error {error_id}). Please try again."


class TeamBot(discord.AutoShardedClient):
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
        self.force_sync = sync
        self.pacer = EditPacer(settings.discord_edit_interval)
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
        self.add_dynamic_items(ShareButton)
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

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Run `work` in the background, tracked by the engine until it ends (shutdown
        waits for it; an exception it raises is logged)."""
        return self.engine.spawn(work, name=name)

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

    async def _cached(self, namespace: str, ident: str) -> str | None:
        try:
            return await self.engine.cache_get(namespace, ident)
        except Exception as error:  # the store is down: behave as if nothing was cached
            log.warning("cache read failed: %s", error)
            return None

    # --- ordering -------------------------------------------------------------------------

    def _in_order(self, channel_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        """Messages of one channel are looked at one at a time, in arrival order, until
        each has its place in its conversation's line."""
        return self._gates.hold(str(channel_id))

    # --- replies ------------------------------------------------------------------------

    async def run_reply(
        self,
        incoming: Incoming,
        sink: DiscordSink,
        *,
        duplicate: str | None = None,
        reservation: Reservation | None = None,
    ) -> Outcome | None:
        """engine.reply with the guarantees the user sees: a crash or a shutdown still
        ends in a message. A duplicate event is silent (the process that claimed it
        answers) unless `duplicate` says what to show instead (a deferred interaction
        must not stay "thinking")."""
        bind(platform="discord", conversation=str(incoming.key), event_id=incoming.event_id)
        await sink.begin()
        try:
            outcome = await self.engine.reply(incoming, sink, reservation=reservation)
            if outcome is Outcome.DUPLICATE and duplicate is not None and not sink.done:
                await sink.fail(duplicate)
            return outcome
        except asyncio.CancelledError:
            if not sink.done:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sink.fail(RESTARTED), 5.0)
            raise
        except Exception:
            error_id, text = _error_text()
            log.exception("reply to %s failed (error id %s)", incoming.event_id, error_id)
            if not sink.done:
                with contextlib.suppress(Exception):
                    await sink.fail(text)
            return None
        finally:
            await sink.close()

    async def _remember_answer(self, key: ConversationKey, message_ids: list[int]) -> None:
        """Replying to an answer posted in a channel continues its conversation."""
        ttl = self.settings.memory_ttl_seconds
        for message_id in message_ids:
            with contextlib.suppress(Exception):
                await self.engine.cache_set(NS_ANSWER, str(message_id), str(key), ttl=ttl)

    async def _import_thread(
        self, thread: discord.Thread, key: ConversationKey, before: discord.abc.Snowflake
    ) -> None:
        """The first time the bot speaks in a thread it did not start, it reads the
        thread once (up to IMPORT_LIMIT messages) so it knows what was said."""
        if self.user is None:
            return
        try:
            if not await self.engine.needs_import(key):
                return
            messages, _truncated = await read_messages(thread, limit=IMPORT_LIMIT, before=before)
            starter = await thread_starter(thread)
            if starter is not None and all(m.id != starter.id for m in messages):
                messages.insert(0, starter)
            entries = [c for m in messages if (c := chat_message(m, self.user.id)) is not None]
            if await self.engine.import_history(key, entries):
                log.info("read %d message(s) of thread %s as context", len(entries), thread.id)
        except discord.HTTPException as error:
            log.info("could not read thread %s for context: %s", thread.id, error)
        except Exception as error:  # the memory store; the reply will say so
            log.warning("could not import thread %s: %s", thread.id, error)

    # --- messages -------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        if self._stopping or self.user is None:
            return
        if message.author.bot or message.webhook_id is not None:
            return  # never answer bots (or ourselves): no loops
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        if message.guild is None:
            self.spawn(self._point_to_servers(message), name=f"discord-dm-{message.id}")
            return
        self.spawn(self._on_guild_message(message), name=f"discord-message-{message.id}")

    def _addressed(self, message: discord.Message) -> bool:
        """Mentioned (or its role mentioned), or a reply to one of the bot's messages."""
        me = self.user
        if me is None:
            return False
        if any(user.id == me.id for user in message.mentions):
            return True
        role = message.guild.self_role if message.guild else None
        if role is not None and any(r.id == role.id for r in message.role_mentions):
            return True
        reference = message.reference
        resolved = reference.resolved if reference else None
        return isinstance(resolved, discord.Message) and resolved.author.id == me.id

    async def _bot_thread(self, thread: discord.Thread) -> bool:
        """A thread the bot converses in without being mentioned: one it opened, or one
        where someone used /ask."""
        if self.user is not None and thread.owner_id == self.user.id:
            return True
        return await self._cached(NS_THREAD, str(thread.id)) is not None

    async def _on_guild_message(self, message: discord.Message) -> None:
        assert message.guild is not None
        # Messages of a channel are looked at one at a time, in arrival order, up to the
        # moment each has its place in its conversation's line (engine.reserve); the slow
        # part (reading a thread, downloading files, the answer) runs after, in parallel
        # across conversations and in order within each.
        async with self._in_order(message.channel.id):
            channel = await self._resolve(message)
            if channel is None:
                return
            addressed = self._addressed(message)
            if isinstance(channel, discord.Thread):
                if not addressed and not await self._bot_thread(channel):
                    return
                key = thread_key(message.guild.id, channel)
            elif addressed:
                key = await self._reply_chain_key(message) or channel_key(
                    message.guild.id, channel.id
                )
            else:
                return
            incoming = self._incoming(message, key)
            if incoming is None:
                if isinstance(channel, discord.Thread) and not self.message_content:
                    await self._explain_blank(message, channel)
                return
            perms = channel.permissions_for(message.guild.me)
            in_thread = isinstance(channel, discord.Thread)
            if not (perms.send_messages_in_threads if in_thread else perms.send_messages):
                log.warning("asked in #%s but not allowed to send messages there", channel)
                return
            reservation = await self.engine.reserve(key, incoming.event_id)
        if reservation is None:
            return  # another process (or an earlier delivery) has it
        try:
            # The answer's message is created only when it is this message's turn, so
            # answers appear in the order the questions were asked.
            await self.engine.wait_turn(reservation)
            if isinstance(channel, discord.Thread):
                await self._import_thread(channel, key, before=message)
            reference = (
                message.to_reference(fail_if_not_exists=False)
                if perms.read_message_history
                else None
            )
            surface = ChannelSurface(
                channel, channel.id, mentions=safe_mentions(message.author), reply_to=reference
            )
            sink = DiscordSink(surface, self.pacer)
            await self._answer_message(incoming, sink, in_thread=in_thread, reservation=reservation)
        finally:
            if not reservation.ticket.released:
                await self.engine.abandon(reservation)

    async def _explain_blank(self, message: discord.Message, thread: discord.Thread) -> None:
        """Without the Message Content intent Discord hides what was written; say so
        once a day per thread instead of ignoring people."""
        try:
            if await self.engine.cooldown("discord-blank", str(thread.id), 86_400):
                return
            await message.reply(
                "I can't read messages here unless you mention me (this bot runs without "
                "Discord's Message Content intent). Start with "
                f"{self.user.mention if self.user else '@teambot'} to talk to me.",
                allowed_mentions=NO_MENTIONS,
                mention_author=False,
            )
        except Exception as error:
            log.info("could not explain a blank message: %s", error)

    async def _resolve(
        self, message: discord.Message
    ) -> discord.TextChannel | discord.Thread | discord.VoiceChannel | discord.StageChannel | None:
        """The message's channel; one missing from the cache (a thread the gateway has
        not told us about) is fetched once."""
        channel: Any = message.channel
        if isinstance(channel, discord.PartialMessageable):
            try:
                channel = await self.fetch_channel(channel.id)
            except discord.HTTPException as error:
                log.info("could not look up channel %s: %s", message.channel.id, error)
                return None
        if isinstance(
            channel,
            discord.TextChannel | discord.Thread | discord.VoiceChannel | discord.StageChannel,
        ):
            return channel
        return None

    async def _reply_chain_key(self, message: discord.Message) -> ConversationKey | None:
        reference = message.reference
        if reference is None or reference.message_id is None:
            return None
        stored = await self._cached(NS_ANSWER, str(reference.message_id))
        if stored is None:
            return None
        try:
            key = ConversationKey.parse(stored)
        except ValueError:
            return None
        guild_id = message.guild.id if message.guild else 0
        same_place = key.workspace == str(guild_id) and key.channel == str(message.channel.id)
        if key.platform != "discord" or not same_place:
            return None  # never cross into another server's or channel's memory
        return key

    def _incoming(self, message: discord.Message, key: ConversationKey) -> Incoming | None:
        me = self.user
        assert me is not None and message.guild is not None
        role = message.guild.self_role
        text = message_text(
            message, drop_users={me.id}, drop_roles={role.id} if role is not None else set()
        )
        attachments = tuple(
            to_attachment(a, self.engine.http, self.settings.max_attachment_bytes)
            for a in message.attachments
        )
        if not text and not attachments and not message.content:
            return None  # nothing to read (without the Message Content intent, say)
        return Incoming(
            key=key,
            event_id=f"message:{message.id}",
            author=_author(message.author),
            text=text,
            attachments=attachments,
            message_id=str(message.id),
            ts=message.created_at.timestamp(),
        )

    async def _answer_message(
        self,
        incoming: Incoming,
        sink: DiscordSink,
        *,
        in_thread: bool,
        reservation: Reservation | None = None,
    ) -> None:
        outcome = await self.run_reply(incoming, sink, reservation=reservation)
        if outcome is Outcome.ANSWERED and not in_thread:
            await self._remember_answer(incoming.key, sink.message_ids())

    async def _point_to_servers(self, message: discord.Message) -> None:
        """DMs are declined, politely and at most once an hour per person."""
        try:
            if await self.engine.cooldown("discord-dm", str(message.author.id), 3600):
                return
            await message.channel.send(DM_POINTER, allowed_mentions=NO_MENTIONS)
        except Exception as error:
            log.info("could not answer a DM: %s", error)

    # --- edits and deletions -----------------------------------------------------------------

    async def _invalidate(self, guild_id: int | None, channel_id: int) -> None:
        if guild_id is None:
            return
        try:
            await self.engine.invalidate_summaries(channel_key(guild_id, channel_id))
        except Exception as error:
            log.warning("could not drop cached summaries of %s: %s", channel_id, error)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        if self.user is not None and payload.message.author.id == self.user.id:
            return  # our own streaming edits
        cached = payload.cached_message
        if cached is not None and cached.content == payload.message.content:
            return  # an embed unfurled; the text is the same
        await self._invalidate(payload.guild_id, payload.channel_id)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._invalidate(payload.guild_id, payload.channel_id)

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._invalidate(payload.guild_id, payload.channel_id)

    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        key = ConversationKey(
            "discord", str(payload.guild_id), str(payload.parent_id), str(payload.thread_id)
        )
        with contextlib.suppress(Exception):
            await self.engine.forget(key)

    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        with contextlib.suppress(Exception):
            await self.engine.forget_channel(channel_key(channel.guild.id, channel.id))

    # --- commands ---------------------------------------------------------------------------

    async def _admit(self, interaction: discord.Interaction[TeamBot], name: str) -> bool:
        """Refuse politely while stopping or when the user is within the cooldown."""
        if self._stopping:
            await interaction.response.send_message(
                "I'm restarting. Please try again in a minute.",
                ephemeral=True,
                allowed_mentions=NO_MENTIONS,
            )
            return False
        seconds = self.settings.discord_command_cooldown
        try:
            wait = await asyncio.wait_for(
                self.engine.cooldown("discord-model", str(interaction.user.id), seconds), 1.0
            )
        except Exception as error:  # do not hold the interaction for the cache
            log.warning("cooldown check failed: %s", error)
            wait = 0.0
        if wait > 0:
            left = max(1, math.ceil(wait))
            await interaction.response.send_message(
                f"You're going a little fast. Please wait {left} second{'s' if left != 1 else ''} "
                f"before using /{name} again.",
                ephemeral=True,
                allowed_mentions=NO_MENTIONS,
            )
            return False
        return True

    async def command_ask(
        self,
        interaction: discord.Interaction[TeamBot],
        prompt: str,
        image: discord.Attachment | None,
    ) -> None:
        if interaction.guild_id is None or not await self._admit(interaction, "ask"):
            return
        try:
            response = await interaction.response.defer(thinking=True)
        except discord.HTTPException as error:
            # 40060: another process of ours acknowledged it; 10062: too late.
            log.info("could not defer interaction %s: %s", interaction.id, error)
            return
        message_id = response.message_id if response is not None else None
        self.spawn(
            self._answer_ask(interaction, prompt, image, message_id),
            name=f"discord-ask-{interaction.id}",
        )

    async def _answer_ask(
        self,
        interaction: discord.Interaction[TeamBot],
        prompt: str,
        image: discord.Attachment | None,
        message_id: int | None,
    ) -> None:
        guild_id = interaction.guild_id
        channel = interaction.channel
        channel_id = interaction.channel_id
        assert guild_id is not None and channel_id is not None
        author = interaction.user
        surface = InteractionSurface(interaction, mentions=safe_mentions(author))
        header = quote_prompt(
            prompt, author.display_name, image.filename if image is not None else None
        )
        sink = DiscordSink(surface, self.pacer, header=header)
        in_thread = isinstance(channel, discord.Thread)
        try:
            if isinstance(channel, discord.Thread):
                key = thread_key(guild_id, channel)
                with contextlib.suppress(Exception):  # the reply reports a store outage
                    await self.engine.cache_set(
                        NS_THREAD, str(channel.id), "ask", ttl=self.settings.memory_ttl_seconds
                    )
                await self._import_thread(channel, key, before=interaction)
            else:
                if message_id is None:
                    message_id = (await interaction.original_response()).id
                key = answer_key(guild_id, channel_id, message_id)
        except Exception:
            error_id, text = _error_text()
            log.exception("could not prepare /ask %s (error id %s)", interaction.id, error_id)
            await sink.fail(text)
            return
        attachments: tuple[Attachment, ...] = ()
        if image is not None:
            attachments = (
                to_attachment(image, self.engine.http, self.settings.max_attachment_bytes),
            )
        incoming = Incoming(
            key=key,
            event_id=f"interaction:{interaction.id}",
            author=_author(author),
            text=prompt,
            attachments=attachments,
            message_id=str(interaction.id),
            ts=interaction.created_at.timestamp(),
        )
        outcome = await self.run_reply(
            incoming, sink, duplicate="This question is already being answered elsewhere."
        )
        if outcome is not Outcome.ANSWERED or in_thread:
            return
        if not await self._open_thread(interaction, key, prompt):
            await self._remember_answer(key, sink.message_ids())

    async def _open_thread(
        self, interaction: discord.Interaction[TeamBot], key: ConversationKey, prompt: str
    ) -> bool:
        """Open a thread from the answer: its id is the answer's, so the thread's
        conversation is the one the answer started."""
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            return False  # voice-channel chats and the like have no threads
        if not interaction.app_permissions.create_public_threads:
            log.info(
                "no Create Public Threads permission in #%s; answering without a thread", channel
            )
            return False
        starter = channel.get_partial_message(int(key.thread))
        try:
            await starter.create_thread(name=thread_name(prompt), auto_archive_duration=1440)
        except discord.HTTPException as error:
            log.warning("could not open a thread for /ask %s: %s", interaction.id, error)
            return False
        return True

    async def command_summarize(
        self,
        interaction: discord.Interaction[TeamBot],
        scope: Literal["thread", "channel"] | None,
        hours: int | None,
    ) -> None:
        guild = interaction.guild
        channel = interaction.channel
        if guild is None or channel is None:
            return
        in_thread = isinstance(channel, discord.Thread)
        if scope == "thread" and not in_thread:
            await self._tell(
                interaction, "Use `scope: thread` inside a thread, or `scope: channel` here."
            )
            return
        scope = scope or ("thread" if in_thread else "channel")
        target: discord.abc.GuildChannel | discord.Thread | None
        if scope == "channel" and isinstance(channel, discord.Thread):
            target = channel.parent
        else:
            target = (
                channel if isinstance(channel, discord.abc.GuildChannel | discord.Thread) else None
            )
        if target is None or not isinstance(target, discord.abc.Messageable):
            await self._tell(interaction, "I can't summarize this kind of channel.")
            return
        # The asker's own permissions, before anything is read: nobody gets a summary
        # of messages they could not read themselves.
        user = interaction.user
        if target.id == interaction.channel_id:
            user_perms = interaction.permissions
        elif isinstance(user, discord.Member):
            user_perms = target.permissions_for(user)
        else:
            user_perms = discord.Permissions.none()
        if not (user_perms.view_channel and user_perms.read_message_history):
            await self._tell(
                interaction,
                f"You can't read the message history of {target.mention}, so I can't "
                "summarize it for you.",
            )
            return
        bot_perms = (
            interaction.app_permissions
            if target.id == interaction.channel_id
            else target.permissions_for(guild.me)
        )
        if not (bot_perms.view_channel and bot_perms.read_message_history):
            await self._tell(
                interaction,
                f"I can't read the message history of {target.mention}: give me View "
                "Channel and Read Message History there.",
            )
            return
        if not await self._admit(interaction, "summarize"):
            return
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as error:
            log.info("could not defer interaction %s: %s", interaction.id, error)
            return
        self.spawn(
            self._summarize(interaction, target, scope, hours),
            name=f"discord-summarize-{interaction.id}",
        )

    async def _summarize(
        self,
        interaction: discord.Interaction[TeamBot],
        target: discord.abc.GuildChannel | discord.Thread,
        scope: str,
        hours: int | None,
    ) -> None:
        assert interaction.guild_id is not None and self.user is not None
        token = secrets.token_hex(16)
        surface = InteractionSurface(interaction, mentions=NO_MENTIONS, ephemeral=True)
        sink = _SummarySink(self, surface, token, interaction.user.id)
        try:
            await sink.begin()
            if scope == "channel" and hours is None:
                hours = 24
            after = discord.utils.utcnow() - dt.timedelta(hours=hours) if hours else None
            await sink.status("Reading the messages…")
            limit = self.settings.discord_summary_max_messages
            assert isinstance(target, discord.abc.Messageable)
            messages, truncated = await read_messages(target, limit=limit, after=after)
            if isinstance(target, discord.Thread) and not truncated:
                starter = await thread_starter(target)
                if (
                    starter is not None
                    and (after is None or starter.created_at > after)
                    and all(m.id != starter.id for m in messages)
                ):
                    messages.insert(0, starter)
            entries: list[ChatMessage] = [
                c for m in messages if (c := chat_message(m, self.user.id)) is not None
            ]
            where = "this thread" if isinstance(target, discord.Thread) else f"#{target.name}"
            span = f"last {hours} hour{'s' if hours != 1 else ''}" if hours else "whole thread"
            count = f"{len(entries):,} message{'s' if len(entries) != 1 else ''}"
            heading = f"Summary of {where} ({span}, {count}"
            heading += f"; only the newest {limit:,} read)" if truncated else ")"
            sink.heading = heading
            scope_key = ConversationKey(
                "discord", str(interaction.guild_id), str(target.id), f"summary:{hours or 'all'}"
            )
            await self.engine.summarize(scope_key, entries, sink, heading=heading)
        except asyncio.CancelledError:
            if not sink.done:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sink.fail(RESTARTED), 5.0)
            raise
        except discord.HTTPException as error:
            log.warning("could not read history for a summary: %s", error)
            if not sink.done:
                await sink.fail("Discord would not let me read that history. Please try again.")
        except Exception:
            error_id, text = _error_text()
            log.exception("summary %s failed (error id %s)", interaction.id, error_id)
            if not sink.done:
                await sink.fail(text)
        finally:
            await sink.close()

    async def share_summary(self, interaction: discord.Interaction[Any], token: str) -> None:
        """The Share button: post the asker's private summary in the channel, once."""
        raw = await self._cached(NS_SHARE, token)
        if raw is None:
            await self._tell(interaction, "This summary has expired. Run /summarize again.")
            return
        data = json.loads(raw)
        if data.get("user") != interaction.user.id:
            await self._tell(
                interaction, "Only the person who asked for this summary can share it."
            )
            return
        if not await self.engine.once("discord", f"share:{token}"):
            await self._tell(interaction, "This summary is already shared in the channel.")
            return
        footer = status_line(f"Shared by {interaction.user.display_name}")
        pages = split_message(f"{data['text']}\n\n{footer}", MESSAGE_LIMIT)
        await interaction.response.send_message(pages[0], allowed_mentions=NO_MENTIONS)
        for page in pages[1:]:
            await interaction.followup.send(page, allowed_mentions=NO_MENTIONS)

    async def command_forget(
        self, interaction: discord.Interaction[TeamBot], whole_channel: bool
    ) -> None:
        guild_id = interaction.guild_id
        channel = interaction.channel
        if guild_id is None or channel is None or interaction.channel_id is None:
            return
        base_id = (
            channel.parent_id or channel.id if isinstance(channel, discord.Thread) else channel.id
        )
        if whole_channel and not interaction.permissions.manage_messages:
            await self._tell(
                interaction,
                "Erasing the memory of a whole channel needs the Manage Messages permission.",
            )
            return
        await self._respond_later(
            interaction,
            self._forget(guild_id, channel, base_id, whole_channel, interaction.user.display_name),
            ephemeral=False,
            name=f"discord-forget-{interaction.id}",
        )

    async def _forget(
        self, guild_id: int, channel: Any, base_id: int, whole_channel: bool, who: str
    ) -> str:
        if whole_channel:
            count = await self.engine.forget_channel(channel_key(guild_id, base_id))
            return (
                f"🧹 Forgotten: my memory of <#{base_id}> and its threads "
                f"({count} conversation{'s' if count != 1 else ''}) is erased. (asked by {who})"
            )
        if isinstance(channel, discord.Thread):
            await self.engine.forget(thread_key(guild_id, channel))
            return (
                f"🧹 Forgotten: I no longer remember this thread's conversation. (asked by {who})"
            )
        await self.engine.forget(channel_key(guild_id, base_id))
        return (
            "🧹 Forgotten: I no longer remember this channel's conversation with me "
            f"(threads keep theirs). (asked by {who})"
        )

    async def command_usage(self, interaction: discord.Interaction[TeamBot]) -> None:
        if interaction.guild_id is None:
            return
        await self._respond_later(
            interaction,
            self._usage(interaction.guild_id),
            ephemeral=True,
            name=f"discord-usage-{interaction.id}",
        )

    async def _usage(self, guild_id: int) -> str:
        report = await self.engine.usage(tenant_key(guild_id))
        return report.render()

    async def _respond_later(
        self,
        interaction: discord.Interaction[TeamBot],
        work: Coroutine[Any, Any, str],
        *,
        ephemeral: bool,
        name: str,
    ) -> None:
        """Defer now; compute the answer in a tracked task and put it in the response."""
        try:
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        except discord.HTTPException as error:
            work.close()
            log.info("could not defer interaction %s: %s", interaction.id, error)
            return
        self.spawn(self._finish_later(interaction, work), name=name)

    async def _finish_later(
        self, interaction: discord.Interaction[TeamBot], work: Coroutine[Any, Any, str]
    ) -> None:
        try:
            text = await work
        except Exception:
            error_id, text = _error_text()
            name = interaction.command.name if interaction.command else "?"
            log.exception("/%s failed (error id %s)", name, error_id)
        try:
            await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:
            log.warning("could not answer interaction %s: %s", interaction.id, error)

    async def _tell(self, interaction: discord.Interaction[Any], text: str) -> None:
        """A short private answer to the one who asked."""
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            else:
                await interaction.response.send_message(
                    text, ephemeral=True, allowed_mentions=NO_MENTIONS
                )
        except discord.HTTPException as error:
            log.info("could not answer interaction %s: %s", interaction.id, error)


class _SummarySink(DiscordSink):
    """An ephemeral summary; a real summary (not a refusal or a failure) is kept in the
    shared cache for the Share button, which appears under it."""

    def __init__(self, bot: TeamBot, surface: InteractionSurface, token: str, user_id: int) -> None:
        super().__init__(surface, bot.pacer)
        self.bot = bot
        self.token = token
        self.user_id = user_id
        self.heading: str | None = None

    async def finish(self, text: str) -> None:
        if self.heading is not None and text.startswith(f"**{self.heading}**"):
            payload = json.dumps({"text": text, "user": self.user_id})
            try:
                await self.bot.engine.cache_set(NS_SHARE, self.token, payload, ttl=86_400)
                token = self.token
                self.final_view = lambda: share_view(token)
            except Exception as error:
                log.warning("could not keep the summary for sharing: %s", error)
        await super().finish(text)
