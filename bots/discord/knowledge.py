"""Discord's side of core's knowledge: `/recap`, the history reader behind
`search_history` (jump URLs as links) and the poster of scheduled recaps. Translation
only; the rules are core's (`core.knowledge`).

Who may set a recap: members with Manage Channels in that channel. Discord does not tell
a member's time zone, so times are in `RECAP_TIMEZONE`. Who may read a channel for
`search_history`: members with View Channel and Read Message History there (as
`/summarize` checks).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.format import PAGE_LIMIT
from bots.discord.history import channel_key, chat_message, message_text, read_messages
from core import Author, ChatMessage, ConversationKey, HistoryMessage, RecapPost, split_pages

if TYPE_CHECKING:
    from bots.discord.bot import TeamBot

__all__ = ["DiscordKnowledge"]

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# Threads of a channel whose replies a recap includes (the most recently active ones).
MAX_THREADS = 50
_CHANNEL = re.compile(r"^(?:<#)?(\d{15,21})>?$")

Readable = discord.TextChannel | discord.VoiceChannel | discord.Thread


class DiscordKnowledge:
    """The bot's `HistorySource` and `RecapTarget`, and its `/recap` command."""

    def __init__(self, bot: TeamBot) -> None:
        self.bot = bot

    # --- /recap ----------------------------------------------------------------------

    async def command_recap(
        self, interaction: discord.Interaction[Any], schedule: str | None
    ) -> str:
        channel = interaction.channel
        guild_id = interaction.guild_id
        if guild_id is None or channel is None:
            return "Recaps are for server channels."
        base = channel.parent_id if isinstance(channel, discord.Thread) else channel.id
        assert base is not None
        user = interaction.user
        return await self.bot.engine.knowledge.recap_command(
            channel_key(guild_id, base),
            schedule or "",
            setter=Author(str(user.id), user.display_name),
            may_manage=bool(interaction.permissions.manage_channels),
            timezone=None,  # RECAP_TIMEZONE
        )

    # --- finding channels --------------------------------------------------------------

    async def _channel(self, key: ConversationKey) -> Readable | None:
        ident = int(key.channel)
        found: Any = self.bot.get_channel(ident)
        if found is None:
            try:
                found = await self.bot.fetch_channel(ident)
            except discord.HTTPException as error:
                log.info("could not find channel %s: %s", ident, error)
                return None
        return found if isinstance(found, Readable) else None

    # --- RecapTarget --------------------------------------------------------------------

    async def read_since(
        self, channel: ConversationKey, since_ts: float, limit: int
    ) -> Sequence[ChatMessage]:
        target = await self._channel(channel)
        if target is None:
            return []
        after = dt.datetime.fromtimestamp(since_ts, dt.UTC)
        found, _cut = await read_messages(target, limit=limit, after=after)
        if isinstance(target, discord.TextChannel):  # thread replies too
            threads = [t for t in target.threads if t.last_message_id]
            threads.sort(key=lambda t: t.last_message_id or 0, reverse=True)
            for thread in threads[:MAX_THREADS]:
                replies, _ = await read_messages(thread, limit=limit, after=after)
                found += replies
        bot_id = self.bot.user.id if self.bot.user else 0
        out = [m for m in (chat_message(message, bot_id) for message in found) if m is not None]
        out.sort(key=lambda m: m.ts)
        return out[-limit:]

    async def post(self, channel: ConversationKey, recap: RecapPost) -> str | None:
        target = await self._channel(channel)
        if target is None:
            raise LookupError(f"channel {channel.channel} is gone")
        first: discord.Message | None = None
        for page in split_pages(recap.markdown, PAGE_LIMIT):
            sent = await target.send(page, allowed_mentions=NO_MENTIONS)
            first = first or sent
        return str(first.id) if first else None

    # --- HistorySource ------------------------------------------------------------------

    async def resolve(self, current: ConversationKey, channel: str) -> ConversationKey | None:
        guild = self.bot.get_guild(int(current.workspace))
        text = channel.strip()
        match = _CHANNEL.match(text)
        if match:
            ident = int(match.group(1))
        elif guild is not None:
            name = text.lstrip("#").lower()
            named = next((c for c in guild.channels if c.name.lower() == name), None)
            if named is None:
                return None
            ident = named.id
        else:
            return None
        return ConversationKey(current.platform, current.workspace, str(ident), "-")

    async def may_read(self, asker: Author, channel: ConversationKey) -> bool | str:
        target = await self._channel(channel)
        if target is None or target.guild.id != int(channel.workspace):
            return "I can't see that channel."
        member = target.guild.get_member(int(asker.id))
        if member is None:
            try:
                member = await target.guild.fetch_member(int(asker.id))
            except discord.HTTPException:
                return "I couldn't check who is asking, so I won't search that channel."
        perms = target.permissions_for(member)
        if not (perms.view_channel and perms.read_message_history):
            return (
                f"The person asking can't read the message history of #{target.name}, "
                "so I won't search it."
            )
        mine = target.permissions_for(target.guild.me)
        if not (mine.view_channel and mine.read_message_history):
            return f"I can't read the message history of #{target.name}."
        return True

    async def read(
        self, channel: ConversationKey, oldest_ts: float, limit: int
    ) -> AsyncIterator[Sequence[HistoryMessage]]:
        target = await self._channel(channel)
        if target is None:
            return
        after = dt.datetime.fromtimestamp(oldest_ts, dt.UTC)
        page: list[HistoryMessage] = []
        async for message in target.history(limit=limit, after=after, oldest_first=False):
            text = message_text(message)
            if not text:
                continue
            page.append(
                HistoryMessage(
                    str(message.id),
                    message.author.display_name,
                    message.created_at.timestamp(),
                    text,
                    message.jump_url,
                )
            )
            if len(page) >= 100:
                yield page
                page = []
        if page:
            yield page
