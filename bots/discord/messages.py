"""Messages in, as the gateway delivers them: a message in a server is translated and
handed to core's intake (which decides whether and where it is answered), a DM is
declined; edits and deletions change what the bot remembers.

`TeamBot` mixes `MessageEvents` in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import discord

from bots.discord.base import NO_MENTIONS, ClientBase
from bots.discord.history import answer_key, channel_key, message_text, thread_key, to_attachment
from bots.discord.sink import (
    ChannelSurface,
    DiscordApprovals,
    discord_reply,
    message_ids,
    safe_mentions,
)
from core import Author, ConversationKey, Incoming, MessageRef, ReplySink

__all__ = ["DM_POINTER", "MessageEvents"]

log = logging.getLogger(__name__)

DM_POINTER = (
    "I only work in servers: my memory, budget and usage belong to a server's team. "
    "Use /ask or mention me in a channel of a server we share."
)


class MessageEvents(ClientBase):
    """Messages, edits and deletions, mixed into `TeamBot`."""

    def _in_order(self, channel_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        """Messages of one channel are looked at one at a time, in arrival order, until
        each has its place in its conversation's line (core orders the line by snowflake;
        this keeps a slow key lookup of one message from letting a later one in first)."""
        return self._gates.hold(str(channel_id))

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
        reference = message.reference
        if not _reads_history(message.channel, message.author) or reference is None:
            return None
        if reference.message_id is None or message.guild is None:
            return None
        return await self.intake.replied_to(
            "discord", str(message.guild.id), str(message.channel.id), str(reference.message_id)
        )

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


def _author(user: discord.User | discord.Member) -> Author:
    return Author(id=str(user.id), name=user.display_name, is_bot=user.bot)


def _reads_history(channel: object, author: discord.User | discord.Member) -> bool:
    """May `author` read the message history of `channel` (View Channel and Read Message
    History, overwrites applied)? Unknown: no."""
    if not isinstance(author, discord.Member) or not isinstance(channel, discord.abc.GuildChannel):
        return False
    perms = channel.permissions_for(author)
    return bool(perms.view_channel and perms.read_message_history)
