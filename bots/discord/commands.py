"""Slash commands and the summary's Share button. The callbacks only parse what Discord
sent and hand it to the bot (`bots.discord.bot.TeamBot`), which does the work."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands

if TYPE_CHECKING:
    import re

    from bots.discord.bot import TeamBot

__all__ = [
    "SHARE_PREFIX",
    "ApprovalButton",
    "FeedbackButton",
    "FeedbackReason",
    "ShareButton",
    "StopButton",
    "TeamTree",
    "approval_view",
    "build_tree",
    "feedback_view",
    "share_view",
    "stop_view",
]

log = logging.getLogger(__name__)

SHARE_PREFIX = "teambot:share:"


class TeamTree(app_commands.CommandTree["TeamBot"]):
    """A command tree whose failures always end in a message to the user."""

    async def on_error(
        self, interaction: discord.Interaction[TeamBot], error: app_commands.AppCommandError
    ) -> None:
        error_id = secrets.token_hex(3)
        command = interaction.command.name if interaction.command else "?"
        log.error(
            "/%s failed (error id %s)", command, error_id, exc_info=(type(error), error, None)
        )
        text = f"Something went wrong on my side (error {error_id}). Please try again."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(
                    text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
                )
            else:
                await interaction.response.send_message(
                    text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
                )
        except Exception as failure:  # e.g. the client is shutting down
            log.warning("could not tell the user about error %s: %s", error_id, failure)


def build_tree(bot: TeamBot) -> TeamTree:
    """The bot's commands. They exist only in servers (see the README for why DMs are
    declined); the per-user cooldown applies to the two that call a model."""
    tree = TeamTree(
        bot,
        allowed_contexts=app_commands.AppCommandContext(guild=True),
        allowed_installs=app_commands.AppInstallationType(guild=True),
    )

    @tree.command(name="ask", description="Ask the AI; the answer opens a thread to continue in")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="Your question or request",
        image="An image (or an audio, video or text file) to go with it",
    )
    async def ask(
        interaction: discord.Interaction[TeamBot],
        prompt: app_commands.Range[str, 1, 4000],
        image: discord.Attachment | None = None,
    ) -> None:
        await bot.command_ask(interaction, prompt, image)

    @tree.command(name="summarize", description="Summarize this thread or this channel, for you")
    @app_commands.guild_only()
    @app_commands.describe(
        scope="This thread (default inside a thread) or this channel's recent messages",
        hours="How far back to read (channel: default 24 hours; thread: the whole thread)",
    )
    async def summarize(
        interaction: discord.Interaction[TeamBot],
        scope: Literal["thread", "channel"] | None = None,
        hours: app_commands.Range[int, 1, 720] | None = None,
    ) -> None:
        await bot.command_summarize(interaction, scope, hours)

    @tree.command(name="recap", description="A recap of this channel on a schedule")
    @app_commands.guild_only()
    @app_commands.describe(
        schedule="daily 09:00, weekdays 17:30, weekly mon 09:00, every 4h or off; "
        "empty: show it (setting needs Manage Channels)",
    )
    async def recap(
        interaction: discord.Interaction[TeamBot],
        schedule: app_commands.Range[str, 0, 100] | None = None,
    ) -> None:
        await bot.command_recap(interaction, schedule)

    @tree.command(name="forget", description="Erase my memory of this conversation")
    @app_commands.guild_only()
    @app_commands.describe(
        whole_channel="Also every thread of this channel (needs Manage Messages)",
    )
    async def forget(
        interaction: discord.Interaction[TeamBot], whole_channel: bool = False
    ) -> None:
        await bot.command_forget(interaction, whole_channel)

    models = bot.engine.channels.models[:25]

    @tree.command(
        name="settings", description="How I behave in this channel (Manage Channels to change)"
    )
    @app_commands.guild_only()
    @app_commands.describe(
        instructions="Extra instructions for this channel (up to 2,000 characters)",
        answer_mode="Follow threads I'm in (default), or answer only when mentioned",
        model="The dialogue model for this channel",
        tools="Let me use tools here (built-ins and MCP servers)",
        summary_language="The language of summaries here (e.g. French)",
        reset="Put one setting (or all) back to the server's / the bot's default",
    )
    @app_commands.choices(
        answer_mode=[
            app_commands.Choice(name="follow threads", value="follow"),
            app_commands.Choice(name="mentions only", value="mentions"),
        ],
        model=[app_commands.Choice(name=m[:100], value=m[:100]) for m in models],
        reset=[
            app_commands.Choice(name=label, value=value)
            for label, value in (
                ("extra instructions", "instructions"),
                ("answer mode", "answer_mode"),
                ("model", "model"),
                ("tools", "tools"),
                ("summary language", "summary_language"),
                ("everything", "all"),
            )
        ],
    )
    async def settings(
        interaction: discord.Interaction[TeamBot],
        instructions: app_commands.Range[str, 1, 2000] | None = None,
        answer_mode: str | None = None,
        model: str | None = None,
        tools: bool | None = None,
        summary_language: app_commands.Range[str, 1, 40] | None = None,
        reset: str | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if reset == "all":
            changes.update(
                instructions=None, answer_mode=None, model=None, summary_language=None, tools=None
            )
        elif reset is not None:
            changes[reset] = None
        for name, value in (
            ("instructions", instructions),
            ("answer_mode", answer_mode),
            ("model", model),
            ("summary_language", summary_language),
        ):
            if value is not None:
                changes[name] = value
        if tools is not None:
            changes["tools"] = tools
        await bot.command_settings(interaction, changes)

    @tree.command(name="usage", description="AI tokens and cost today for this server")
    @app_commands.guild_only()
    async def usage(interaction: discord.Interaction[TeamBot]) -> None:
        await bot.command_usage(interaction)

    return tree


class ShareButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"teambot:share:(?P<token>[0-9a-f]{32})",
):
    """ "Share in channel" under a private summary. The summary itself is kept in the
    shared cache under the token, so the button works in any process and after a
    restart (until the cache entry expires)."""

    def __init__(self, token: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Share in channel",
                style=discord.ButtonStyle.primary,
                custom_id=f"{SHARE_PREFIX}{token}",
            )
        )
        self.token = token

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ShareButton:
        return cls(match["token"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bots.discord.bot import TeamBot

        client = interaction.client
        if isinstance(client, TeamBot):
            await client.share_summary(interaction, self.token)


class ApprovalButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"teambot:(?P<verb>approve|deny):(?P<card>[A-Za-z0-9_-]{4,40})",
):
    """Approve / Deny under an approval card. The paused turn is kept in Redis, so a
    click works in any process and after a restart."""

    def __init__(self, verb: str, card: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Approve" if verb == "approve" else "Deny",
                style=discord.ButtonStyle.success
                if verb == "approve"
                else discord.ButtonStyle.danger,
                custom_id=f"teambot:{verb}:{card}",
            )
        )
        self.verb = verb
        self.card = card

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ApprovalButton:
        return cls(match["verb"], match["card"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bots.discord.bot import TeamBot

        client = interaction.client
        if isinstance(client, TeamBot):
            await client.on_approval(interaction, self.card, approve=self.verb == "approve")


def approval_view(card: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ApprovalButton("approve", card))
    view.add_item(ApprovalButton("deny", card))
    return view


def share_view(token: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ShareButton(token))
    return view


class FeedbackButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"teambot:fb:(?P<rating>up|down):(?P<answer>[0-9a-f]{8,32})",
):
    """👍 / 👎 under an answer. The answer's id is in the custom_id; what produced it is
    in Redis, so a click works in any process and after a restart."""

    def __init__(self, rating: str, answer: str) -> None:
        super().__init__(
            discord.ui.Button(
                emoji="👍" if rating == "up" else "👎",
                style=discord.ButtonStyle.secondary,
                custom_id=f"teambot:fb:{rating}:{answer}",
            )
        )
        self.rating = rating
        self.answer = answer

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> FeedbackButton:
        return cls(match["rating"], match["answer"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bots.discord.bot import TeamBot

        client = interaction.client
        if isinstance(client, TeamBot):
            await client.on_feedback(interaction, self.answer, self.rating)


class FeedbackReason(discord.ui.Modal):
    """After 👎: an optional one-line reason."""

    reason: discord.ui.TextInput[FeedbackReason] = discord.ui.TextInput(
        label="What was wrong? (optional)",
        style=discord.TextStyle.short,
        required=False,
        max_length=300,
        placeholder="Wrong facts, too long, missed the point…",
        custom_id="reason",
    )

    def __init__(self, answer: str) -> None:
        super().__init__(
            title="Feedback on this answer", custom_id=f"teambot:fbr:{answer}", timeout=900
        )
        self.answer = answer

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        from bots.discord.bot import TeamBot

        client = interaction.client
        if isinstance(client, TeamBot):
            await client.on_feedback(interaction, self.answer, "down", str(self.reason.value or ""))


def feedback_view(answer: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(FeedbackButton("up", answer))
    view.add_item(FeedbackButton("down", answer))
    return view


class StopButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"teambot:stop:(?P<key>discord:\d+:\d+:[0-9-]+)",
):
    """Stop on a message while its answer is written: stops it through core (any
    process), as a `stop` message in the thread does."""

    def __init__(self, key: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Stop",
                emoji="⏹️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"teambot:stop:{key}",
            )
        )
        self.key = key

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> StopButton:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bots.discord.bot import TeamBot

        client = interaction.client
        if isinstance(client, TeamBot):
            await client.on_stop(interaction, self.key)


def stop_view(key: object) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(StopButton(str(key)))
    return view
