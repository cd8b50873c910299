"""The slash commands that call a model: /ask and /summarize (with its Share button).
The others are in `bots.discord.quick_commands`.

Each handler answers Discord within its 3 seconds (an interaction is deferred at once)
and leaves the model work to core; `TeamBot` mixes this class in.
"""

from __future__ import annotations

import datetime as dt
import logging
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
    RESTARTING_SOON,
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
    reported,
    split_pages,
)

if TYPE_CHECKING:
    from bots.discord.bot import TeamBot

__all__ = ["Interactions"]

log = logging.getLogger(__name__)


class Interactions(ClientBase):
    """/ask and /summarize, mixed into `TeamBot`."""

    async def _admit(self, interaction: discord.Interaction[TeamBot], name: str) -> bool:
        """Core's verdict on a model-calling command (restarting, cooldown, rate limit);
        a refusal is told privately."""
        note = (
            RESTARTING_SOON
            if self._stopping
            else await self.intake.admit_command(
                "discord",
                str(interaction.guild_id or "dm"),
                str(interaction.user.id),
                command=name,
                cooldown=self.settings.discord_command_cooldown,
                counted=name != "ask",  # /ask is counted where every message is
            )
        )
        if note is None:
            return True
        await interaction.response.send_message(note, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return False

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
        surface = InteractionSurface(interaction, mentions=NO_MENTIONS, ephemeral=True)
        sink = discord_reply(surface, self.pacer, resolve=self.display_name)

        async def fail(text: str) -> None:
            if not sink.done:
                await sink.fail(text)

        try:
            await reported(
                self._write_summary(interaction, target, scope, hours, sink, surface),
                fail,
                f"summary {interaction.id}",
            )
        finally:
            await sink.close()

    async def _write_summary(
        self,
        interaction: discord.Interaction[TeamBot],
        target: discord.abc.GuildChannel | discord.Thread,
        scope: str,
        hours: int | None,
        sink: PagedReply,
        surface: InteractionSurface,
    ) -> None:
        assert interaction.guild_id is not None and self.user is not None
        if scope == "channel" and hours is None:
            hours = 24
        after = discord.utils.utcnow() - dt.timedelta(hours=hours) if hours else None
        await sink.status("Reading the messages…")
        limit = self.settings.discord_summary_max_messages
        assert isinstance(target, discord.abc.Messageable)
        try:
            messages, truncated = await read_messages(target, limit=limit, after=after)
            if isinstance(target, discord.Thread) and not truncated:
                starter = await thread_starter(target)
                if (
                    starter is not None
                    and (after is None or starter.created_at > after)
                    and all(m.id != starter.id for m in messages)
                ):
                    messages.insert(0, starter)
        except discord.HTTPException as error:
            log.warning("could not read history for a summary: %s", error)
            await sink.fail("Discord would not let me read that history. Please try again.")
            return
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
        if summary is None:
            return
        text = summary_markdown(summary)
        try:  # kept for the Share button under it
            token = await self.shares.keep(str(interaction.user.id), {"text": text})
            surface.final_view = lambda: share_view(token)
        except Exception as error:
            log.warning("could not keep the summary for sharing: %s", error)
        await sink.finish(text)

    async def share_summary(self, interaction: discord.Interaction[Any], token: str) -> None:
        """The Share button: post the asker's private summary in the channel, once."""
        shared = await self.shares.take(token, str(interaction.user.id))
        if isinstance(shared, str):
            await self._tell(interaction, shared)
            return
        footer = status_line(f"Shared by {interaction.user.display_name}")
        pages = split_pages(f"{shared.record['text']}\n\n{footer}", PAGE_LIMIT)
        pages = [defuse(page) for page in pages]
        try:
            await interaction.response.send_message(pages[0], allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            await self.shares.failed(shared)
            raise
        for page in pages[1:]:
            await interaction.followup.send(page, allowed_mentions=NO_MENTIONS)
