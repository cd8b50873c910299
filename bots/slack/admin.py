"""The admin surfaces on Slack: the `/teambot settings` modal (editable by those who may
change the settings, `SlackBot.may_change`; read-only for everyone else) and the App Home
tab. The views themselves are `panels`' pure functions; this module fetches their data,
checks who may, and calls Slack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bots.slack.format import to_mrkdwn
from bots.slack.panels import home_view, settings_changes, settings_view
from core import ConfigError, ConversationKey

if TYPE_CHECKING:
    from bots.slack.bot import SlackBot

__all__ = ["SlackAdmin"]


class SlackAdmin:
    """One workspace's settings modal and Home tab."""

    def __init__(self, bot: SlackBot, help_text: str) -> None:
        self.bot = bot
        self.help_text = help_text

    async def open_settings(
        self, team_id: str, user_id: str, channel: str, trigger_id: str, *, workspace: bool
    ) -> None:
        """`/teambot settings [workspace]`: the modal, editable for those who may change the
        settings, read-only for everyone else."""
        key = ConversationKey("slack", team_id, channel or "*", "*")
        scope = ConversationKey("slack", team_id, "*", "*") if workspace else key
        channels = self.bot.engine.channels
        editable = await self.bot.may_change(user_id, channel, workspace=workspace)
        where = "this workspace" if workspace else f"<#{channel}>"
        view = settings_view(
            where=where,
            stored=await channels.get(scope),
            described=to_mrkdwn(await channels.describe(key, where)),
            models=channels.models,
            editable=editable,
            metadata={"scope": str(scope), "channel": channel},
            above="the environment" if workspace else "the workspace",
        )
        await self.bot.client.views_open(trigger_id=trigger_id, view=view)

    async def save_settings(self, user_id: str, view: Mapping[str, Any]) -> dict[str, str] | None:
        """The settings modal was sent: checked again (who may), then stored. Returns the
        errors to show in the modal, or None."""
        try:
            meta = json.loads(str(view.get("private_metadata") or "{}"))
            scope = ConversationKey.parse(str(meta["scope"]))
        except (ValueError, KeyError, TypeError):
            return {"instructions": "This form is out of date. Run /teambot settings again."}
        workspace = scope.channel == "*"
        if scope.platform != "slack" or not await self.bot.may_change(
            user_id, scope.channel, workspace=workspace
        ):
            return {"instructions": "Only workspace admins and the channel's creator can."}
        values = (view.get("state") or {}).get("values") or {}
        try:
            await self.bot.engine.channels.update(scope, settings_changes(values), by=user_id)
        except ConfigError as error:
            return {"instructions": str(error)}
        return None

    async def publish_home(self, team_id: str, user_id: str) -> None:
        """The Home tab: usage, feedback and customized channels for admins; what the bot
        does for everyone."""
        tenant = ConversationKey("slack", team_id, "-", "-").tenant
        if not await self.bot.reader.is_admin(user_id):
            view = home_view(admin=False, help_text=self.help_text)
        else:
            report = await self.bot.engine.usage(tenant)
            customized = [
                "the whole workspace" if key.channel == "*" else f"<#{key.channel}>"
                for key in await self.bot.engine.channels.customized(tenant)
            ]
            view = home_view(
                admin=True,
                help_text=self.help_text,
                usage=to_mrkdwn(report.render()),
                customized=customized,
            )
        await self.bot.client.views_publish(user_id=user_id, view=view)
