"""The slash commands answered with one short text: /forget, /usage, /settings, and
/recap (which `DiscordKnowledge` does). Each is deferred at once and its text computed
in a tracked task, then put in the response.

`TeamBot` mixes `QuickCommands` in.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.base import NO_MENTIONS, ClientBase
from bots.discord.history import channel_key, tenant_key, thread_key
from core import ConfigError, ConversationKey, reported

if TYPE_CHECKING:
    from bots.discord.bot import TeamBot

__all__ = ["QuickCommands"]

log = logging.getLogger(__name__)


class QuickCommands(ClientBase):
    """/forget, /recap, /usage and /settings, mixed into `TeamBot`."""

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

    async def command_recap(
        self, interaction: discord.Interaction[TeamBot], schedule: str | None
    ) -> None:
        await self._respond_later(
            interaction,
            self.knowledge.command_recap(interaction, schedule),
            ephemeral=True,
            name=f"discord-recap-{interaction.id}",
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
        async def show(text: str) -> None:
            try:
                await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as error:
                log.warning("could not answer interaction %s: %s", interaction.id, error)

        name = interaction.command.name if interaction.command else "?"
        text = await reported(work, show, f"/{name}")
        if text is not None:
            await show(text)

    # --- settings ------------------------------------------------------------------------

    async def command_settings(
        self, interaction: discord.Interaction[TeamBot], changes: dict[str, Any]
    ) -> None:
        """/settings: anyone sees this channel's settings (privately); members with Manage
        Channels change them. Inside a thread, the settings are its channel's."""
        guild_id, channel = interaction.guild_id, interaction.channel
        if guild_id is None or channel is None:
            return
        base_id = (
            channel.parent_id or channel.id if isinstance(channel, discord.Thread) else channel.id
        )
        key = channel_key(guild_id, base_id)
        if changes and not interaction.permissions.manage_channels:
            work = self._show_settings(
                key, base_id, "Changing them needs the Manage Channels permission."
            )
        elif changes:
            user = interaction.user
            work = self._change_settings(key, base_id, changes, f"discord:{user.id} ({user.name})")
        else:
            work = self._show_settings(key, base_id, "")
        await self._respond_later(
            interaction, work, ephemeral=True, name=f"discord-settings-{interaction.id}"
        )

    async def _show_settings(self, key: ConversationKey, channel_id: int, note: str) -> str:
        text = await self.engine.channels.describe(key, f"<#{channel_id}>")
        return f"{note}\n\n{text}" if note else text

    async def _change_settings(
        self, key: ConversationKey, channel_id: int, changes: dict[str, Any], by: str
    ) -> str:
        if changes.get("tools") is not None:
            names = self.engine.tools.names()
            groups = {"builtin"} | {f"mcp:{n.split('__', 1)[0]}" for n in names if "__" in n}
            changes["tools"] = {group: bool(changes["tools"]) for group in sorted(groups)}
        try:
            await self.engine.channels.update(key.channel_key(), changes, by=by)
        except ConfigError as error:
            return f"Not saved: {error}\n\n" + await self._show_settings(key, channel_id, "")
        return await self._show_settings(key, channel_id, "✅ Saved.")
