"""The slash commands that call a model: /ask and /summarize (with its Share button).
The others are in `bots.discord.quick_commands`.

Each handler answers Discord within its 3 seconds (an interaction is deferred at once)
and leaves the model work to core; `TeamBot` mixes this class in.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any, Literal

import discord

from bots.discord.base import NO_MENTIONS, ClientBase
from bots.discord.commands import share_view
from bots.discord.format import (
    PAGE_LIMIT,
    quote_prompt,
    status_line,
    summary_markdown,
    thread_name,
)
from bots.discord.history import (
    answer_key,
    chat_message,
    read_messages,
    thread_key,
    thread_starter,
    to_attachment,
)
from bots.discord.sink import (
    DiscordApprovals,
    InteractionSurface,
    discord_reply,
    message_ids,
    safe_mentions,
)
from core import (
    RESTARTING,
    Admission,
    Attachment,
    Author,
    ChatMessage,
    ConversationKey,
    Fetch,
    Incoming,
    PagedReply,
    ReplySink,
    defuse,
    oops,
    split_pages,
)

if TYPE_CHECKING:
    from bots.discord.bot import TeamBot

__all__ = ["NS_SHARE", "Interactions"]

log = logging.getLogger(__name__)

NS_SHARE = "discord-share"


class Interactions(ClientBase):
    """/ask and /summarize, mixed into `TeamBot`."""

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
        if wait <= 0 and name != "ask":  # /ask is counted where every message is
            note = await self.intake.command_limit(
                "discord", str(interaction.guild_id or "dm"), str(interaction.user.id)
            )
            if note is not None:
                await interaction.response.send_message(
                    note, ephemeral=True, allowed_mentions=NO_MENTIONS
                )
                return False
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
        guild_id, channel_id = interaction.guild_id, interaction.channel_id
        if guild_id is None or channel_id is None or not await self._admit(interaction, "ask"):
            return
        try:
            response = await interaction.response.defer(thinking=True)
        except discord.HTTPException as error:
            # 40060: another process of ours acknowledged it; 10062: too late.
            log.info("could not defer interaction %s: %s", interaction.id, error)
            return
        message_id = response.message_id if response is not None else None
        self.spawn(
            self._ask(interaction, prompt, image, message_id), name=f"discord-ask-{interaction.id}"
        )

    async def _ask(
        self,
        interaction: discord.Interaction[TeamBot],
        prompt: str,
        image: discord.Attachment | None,
        message_id: int | None,
    ) -> None:
        guild_id, channel_id = interaction.guild_id, interaction.channel_id
        assert guild_id is not None and channel_id is not None
        channel = interaction.channel
        author = interaction.user
        surface = InteractionSurface(interaction, mentions=safe_mentions(author))
        header = quote_prompt(
            prompt, author.display_name, image.filename if image is not None else None
        )
        target: Any = channel
        sink = discord_reply(
            surface,
            self.pacer,
            asker=author.id,
            header=header,
            resolve=self.display_name,
            approvals=DiscordApprovals(target, safe_mentions(author))
            if isinstance(target, discord.abc.Messageable)
            else None,
        )
        try:
            if isinstance(channel, discord.Thread):
                key = thread_key(guild_id, channel)
                backfill: Fetch | None = self.thread_reader(channel, interaction)
            else:
                if message_id is None:
                    message_id = (await interaction.original_response()).id
                key = answer_key(guild_id, channel_id, message_id)
                backfill = None
                sink.after_finish.append(
                    lambda done: self._after_ask(interaction, key, prompt, done)
                )
        except Exception:
            error_id = secrets.token_hex(3)
            log.exception("could not prepare /ask %s (error id %s)", interaction.id, error_id)
            await sink.fail(oops(error_id))
            return
        attachments: tuple[Attachment, ...] = ()
        if image is not None:
            attachments = (
                to_attachment(image, self.engine.http, self.settings.max_attachment_bytes),
            )
        incoming = Incoming(
            key=key,
            event_id=f"interaction:{interaction.id}",
            author=Author(str(author.id), author.display_name, author.bot),
            text=prompt,
            attachments=attachments,
            message_id=str(interaction.id),
            ts=interaction.created_at.timestamp(),
            position=interaction.id,
            follow=True,  # /ask in a thread: the bot follows it from now on
            backfill=backfill,
            reply_to={"channel": str(channel_id), "asker": str(author.id)},
        )

        async def open_sink(_incoming: Incoming) -> ReplySink:
            if isinstance(sink.surface, InteractionSurface):
                sink.surface.stop_key = _incoming.key
            await sink.status("")
            return sink

        admitted = await self.intake.submit(incoming, open_sink)
        if admitted is Admission.DUPLICATE:
            await sink.fail("This question is already being answered elsewhere.")
        elif admitted is not Admission.ADMITTED:
            await sink.close()

    async def _after_ask(
        self,
        interaction: discord.Interaction[TeamBot],
        key: ConversationKey,
        prompt: str,
        sink: PagedReply,
    ) -> None:
        if sink.outcome != "finished":
            return
        if not await self._open_thread(interaction, key, prompt):
            await self._remember_answer(key, message_ids(sink))

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
        sink = discord_reply(surface, self.pacer, resolve=self.display_name)
        try:
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
            scope_key = ConversationKey(
                "discord", str(interaction.guild_id), str(target.id), f"summary:{hours or 'all'}"
            )
            async with self.engine.slow_slots:  # apart from answers
                summary = await self.engine.summarize(
                    scope_key, entries, sink, heading=heading, show=False
                )
            if summary is not None:
                text = summary_markdown(summary)
                try:  # kept for the Share button under it
                    payload = json.dumps({"text": text, "user": interaction.user.id})
                    await self.engine.cache_set(NS_SHARE, token, payload, ttl=86_400)
                    surface.final_view = lambda: share_view(token)
                except Exception as error:
                    log.warning("could not keep the summary for sharing: %s", error)
                await sink.finish(text)
        except asyncio.CancelledError:
            if not sink.done:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sink.fail(RESTARTING), 5.0)
            raise
        except discord.HTTPException as error:
            log.warning("could not read history for a summary: %s", error)
            if not sink.done:
                await sink.fail("Discord would not let me read that history. Please try again.")
        except Exception:
            error_id = secrets.token_hex(3)
            text = oops(error_id)
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
        pages = split_pages(f"{data['text']}\n\n{footer}", PAGE_LIMIT)
        pages = [defuse(page) for page in pages]
        await interaction.response.send_message(pages[0], allowed_mentions=NO_MENTIONS)
        for page in pages[1:]:
            await interaction.followup.send(page, allowed_mentions=NO_MENTIONS)
