"""What the buttons on an answer do: Approve / Deny on an approval card (and the reply
reopened when a turn paused for approval finishes in this process), Stop while it is
written, 👍 / 👎 under it (and the 👎 reason modal). The button classes are in
`bots.discord.commands`; the summary's Share button is /summarize's
(`bots.discord.interactions`).

`TeamBot` mixes `AnswerButtons` in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Literal

import discord

from bots.discord.base import NO_MENTIONS, ClientBase
from bots.discord.history import tenant_key
from bots.discord.sink import ChannelSurface, DiscordApprovals, discord_reply, safe_mentions
from core import ReplySink

__all__ = ["AnswerButtons"]

log = logging.getLogger(__name__)


class AnswerButtons(ClientBase):
    """The buttons' handlers, mixed into `TeamBot`."""

    # --- approvals -----------------------------------------------------------------------

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

    # --- stop ----------------------------------------------------------------------------

    async def on_stop(self, interaction: discord.Interaction[Any], raw_key: str) -> None:
        """The Stop button: stop the answer being written in that conversation (only one
        of this server and this channel or thread)."""
        note = await self.intake.stop_pressed(
            raw_key, "discord", str(interaction.guild_id), {str(interaction.channel_id)}
        )
        if note is None:
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.defer()  # the message itself shows "(stopped)"
        else:
            await self._tell(interaction, note)

    # --- feedback ------------------------------------------------------------------------

    async def on_feedback(
        self,
        interaction: discord.Interaction[Any],
        answer: str,
        rating: str,
        reason: str | None = None,
    ) -> None:
        """👍 is recorded and thanked for; 👎 asks an optional reason in a modal (the 👎
        counts at once: closing the modal keeps it); the modal's submit stores the reason.
        A person's later vote on the same answer replaces theirs."""
        from bots.discord.commands import FeedbackReason

        guild_id = interaction.guild_id
        if guild_id is None:
            return
        vote: Literal["up", "down"] = "up" if rating == "up" else "down"
        if vote == "down" and reason is None:
            try:
                await interaction.response.send_modal(FeedbackReason(answer))
            except discord.HTTPException as error:
                log.info("could not ask why (interaction %s): %s", interaction.id, error)
        try:
            known = await self.engine.feedback.vote(
                tenant_key(guild_id), answer, str(interaction.user.id), vote, reason or ""
            )
        except Exception as error:
            log.warning("could not record feedback on %s: %s", answer, error)
            if not interaction.response.is_done():
                await self._tell(interaction, "I couldn't record that just now. Please try again.")
            return
        if interaction.response.is_done():
            return  # the modal is up: it thanks on submit
        if not known:
            await self._tell(interaction, "This answer is too old to rate.")
        else:
            await self._tell(interaction, "Thanks for the feedback!")
