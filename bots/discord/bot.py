"""The Discord client: events and commands in, `Incoming` / `ChatMessage` to the engine,
replies out through core's `PagedReply` on a Discord surface.

Every handler answers Discord at once (an interaction is deferred within a few
milliseconds) and runs the model work in a tracked background task, so the gateway
heartbeat keeps beating and shutdown can wait for answers in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any

import discord

from bots.discord.base import NO_MENTIONS, NS_ANSWER
from bots.discord.commands import (
    ApprovalButton,
    FeedbackButton,
    ShareButton,
    StopButton,
    build_tree,
)
from bots.discord.history import (
    answer_key,
    channel_key,
    message_text,
    thread_key,
    to_attachment,
)
from bots.discord.interactions import Interactions
from bots.discord.knowledge import DiscordKnowledge
from bots.discord.sink import (
    ChannelSurface,
    DiscordApprovals,
    discord_pacer,
    discord_reply,
    message_ids,
    pacing_trace,
    safe_mentions,
)
from core import (
    Author,
    ConfigError,
    ConversationKey,
    Engine,
    Incoming,
    Intake,
    KeyedLocks,
    MessageRef,
    ReplySink,
    Settings,
)

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


class TeamBot(Interactions, discord.AutoShardedClient):
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

    # --- ordering ---------------------------------------------------------------------------

    def _in_order(self, channel_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        """Messages of one channel are looked at one at a time, in arrival order, until
        each has its place in its conversation's line (core orders the line by snowflake;
        this keeps a slow key lookup of one message from letting a later one in first)."""
        return self._gates.hold(str(channel_id))

    async def _reopen(self, address: Mapping[str, str]) -> ReplySink:
        """A reply in a channel another process was answering (a turn paused for
        approval, finished here)."""
        channel_id = int(address["channel"])
        channel: Any = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
        asker = discord.Object(int(address["asker"])) if address.get("asker") else None
        mentions = safe_mentions(asker) if asker is not None else NO_MENTIONS
        surface = ChannelSurface(channel, channel_id, mentions=mentions)
        reply = discord_reply(
            surface,
            self.pacer,
            asker=asker.id if asker is not None else None,
            resolve=self.display_name,
            approvals=DiscordApprovals(channel, mentions),
        )
        await reply.status("")
        return reply

    async def on_approval(
        self, interaction: discord.Interaction[Any], card_id: str, *, approve: bool
    ) -> None:
        """Approve / Deny on an approval card: the asker, or a member who may manage the
        server; anyone else is told privately."""
        user = interaction.user
        admin = bool(interaction.permissions.manage_guild)
        decision = await self.intake.decide(
            card_id, str(user.id), user.display_name, approve=approve, admin=admin
        )
        if decision.outcome in (None, "expired"):
            await self._tell(interaction, decision.message)
        else:
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.defer()

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
        await self._on_guild_message(message)

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

    async def _on_guild_message(self, message: discord.Message) -> None:
        """Translate the message and hand it to core's intake, which decides (dedupe,
        addressed or followed, its place in line)."""
        assert message.guild is not None
        async with self._in_order(message.channel.id):
            channel = await self._resolve(message)
            if channel is None:
                return
            addressed = self._addressed(message)
            in_thread = isinstance(channel, discord.Thread)
            if isinstance(channel, discord.Thread):
                key = thread_key(message.guild.id, channel)
                # A thread the bot opened is its conversation: every message is for it.
                addressed = addressed or (
                    self.user is not None and channel.owner_id == self.user.id
                )
            elif addressed:
                # A mention in a channel starts its own conversation (replying to the
                # answer continues it): strangers' questions never wait on each other.
                key = await self._reply_chain_key(message) or answer_key(
                    message.guild.id, channel.id, message.id
                )
            else:
                return
            incoming = self._incoming(message, key, addressed=addressed)
            if incoming is not None:
                incoming = replace(
                    incoming,
                    reply_to={"channel": str(channel.id), "asker": str(message.author.id)},
                )
            if incoming is None:
                if isinstance(channel, discord.Thread) and not self.message_content:
                    self.spawn(self._explain_blank(message, channel), name="discord-blank")
                return
            perms = channel.permissions_for(message.guild.me)
            if not (perms.send_messages_in_threads if in_thread else perms.send_messages):
                log.warning("asked in #%s but not allowed to send messages there", channel)
                return
            if isinstance(channel, discord.Thread):
                incoming = replace(incoming, backfill=self.thread_reader(channel, message))
            reference = (
                message.to_reference(fail_if_not_exists=False)
                if perms.read_message_history
                else None
            )

            async def open_sink(_incoming: Incoming) -> ReplySink:
                surface = ChannelSurface(
                    channel,
                    channel.id,
                    mentions=safe_mentions(message.author),
                    reply_to=reference,
                )
                surface.stop_key = _incoming.key
                reply = discord_reply(
                    surface,
                    self.pacer,
                    asker=message.author.id,
                    resolve=self.display_name,
                    approvals=DiscordApprovals(channel, safe_mentions(message.author)),
                )
                if not in_thread:
                    reply.after_finish.append(
                        lambda done: self._remember_answer(key, message_ids(done))
                    )
                await reply.status("")
                return reply

            await self.intake.submit(incoming, open_sink)

    async def _explain_blank(self, message: discord.Message, thread: discord.Thread) -> None:
        """Without the Message Content intent Discord hides what was written; say so
        once a day per thread instead of ignoring people."""
        try:
            own = self.user is not None and thread.owner_id == self.user.id
            if not own and not await self.intake.is_followed(thread_key(thread.guild.id, thread)):
                return
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
        """The conversation of the answer `message` replies to: only for a member with
        Read Message History in the channel (its memory is channel history they could
        not read otherwise); None starts a new conversation."""
        if not _reads_history(message.channel, message.author):
            return None
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

    def _incoming(
        self, message: discord.Message, key: ConversationKey, *, addressed: bool
    ) -> Incoming | None:
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
            position=message.id,
            addressed=addressed,
        )

    async def _point_to_servers(self, message: discord.Message) -> None:
        """DMs are declined, politely and at most once an hour per person."""
        try:
            if await self.engine.cooldown("discord-dm", str(message.author.id), 3600):
                return
            await message.channel.send(DM_POINTER, allowed_mentions=NO_MENTIONS)
        except Exception as error:
            log.info("could not answer a DM: %s", error)

    # --- edits and deletions -----------------------------------------------------------------

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        if payload.guild_id is None:
            return
        if self.user is not None and payload.message.author.id == self.user.id:
            return  # our own streaming edits
        cached = payload.cached_message
        if cached is not None and cached.content == payload.message.content:
            return  # an embed unfurled; the text is the same
        ref = MessageRef(
            "discord", str(payload.guild_id), str(payload.channel_id), str(payload.message_id)
        )
        parent = getattr(payload.message.channel, "parent_id", None)
        if parent is not None:  # a thread's messages live under its parent channel
            ref = replace(ref, channel=str(parent))
        me = self.user
        role = payload.message.guild.self_role if payload.message.guild else None
        text = message_text(
            payload.message,
            drop_users={me.id} if me else set(),
            drop_roles={role.id} if role is not None else set(),
        )
        await self._forward(self.intake.edited(ref, text), "edit")
        if parent is not None:
            await self._forward(self.engine.invalidate_summaries(self._channel_of(ref)), "edit")

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._deleted(payload.guild_id, payload.channel_id, [payload.message_id])

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._deleted(payload.guild_id, payload.channel_id, sorted(payload.message_ids))

    async def _deleted(self, guild_id: int | None, channel_id: int, ids: list[int]) -> None:
        """Deleted messages leave memory: the channel's own conversations, and (for a
        message in a thread) the thread's, which lives under the parent channel."""
        if guild_id is None:
            return
        channel = self.get_channel(channel_id)
        places = {str(channel_id)}
        if isinstance(channel, discord.Thread) and channel.parent_id is not None:
            places.add(str(channel.parent_id))
        for place in places:
            for message_id in ids:
                ref = MessageRef("discord", str(guild_id), place, str(message_id))
                await self._forward(self.intake.deleted(ref), "delete")

    def _channel_of(self, ref: MessageRef) -> ConversationKey:
        return ConversationKey(ref.platform, ref.workspace, ref.channel, "-")

    async def _forward(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        try:
            await work
        except Exception as error:
            log.warning("could not apply a message %s to memory: %s", what, error)

    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        key = ConversationKey(
            "discord", str(payload.guild_id), str(payload.parent_id), str(payload.thread_id)
        )
        with contextlib.suppress(Exception):
            await self.engine.forget(key)

    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        with contextlib.suppress(Exception):
            await self.engine.forget_channel(channel_key(channel.guild.id, channel.id))


def _reads_history(channel: object, author: discord.User | discord.Member) -> bool:
    """May `author` read the message history of `channel` (View Channel and Read Message
    History, overwrites applied)? Unknown: no."""
    if not isinstance(author, discord.Member) or not isinstance(channel, discord.abc.GuildChannel):
        return False
    perms = channel.permissions_for(author)
    return bool(perms.view_channel and perms.read_message_history)
