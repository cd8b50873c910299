"""The Bolt app and its listeners, grouped by feature. Listeners only hand work to
`SlackBot` (which starts it in the background) and return, so every request is
acknowledged at once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult

from bots.slack.bot import SlackBot
from bots.slack.format import (
    APPROVE_ACTION,
    DENY_ACTION,
    FEEDBACK_ACTION,
    FEEDBACK_REASON_VIEW,
    SHARE_ACTION,
    safe_mrkdwn,
)
from bots.slack.panels import SETTINGS_VIEW
from bots.slack.summaries import SUMMARIZE_SHORTCUT, parse_window
from core import metrics

__all__ = ["build_bolt_app"]

# The workspace a request is from (`team(body, context)`).
Team = Callable[[dict[str, Any], Any], str]


def build_bolt_app(bot: SlackBot, *, signing_secret: str | None) -> AsyncApp:
    """The Bolt app: signature checks (HTTP mode), self-event filtering, and listeners that
    hand everything to `bot` and return."""
    identity = bot.identity

    async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        # The identity is known from auth.test at start-up: no Web API call per request,
        # so the first event is acknowledged as fast as the others.
        return AuthorizeResult(
            enterprise_id=enterprise_id,
            team_id=team_id or identity.team_id,
            bot_user_id=identity.bot_user_id,
            bot_id=identity.bot_id,
            bot_token=bot.client.token,
        )

    bolt_logger = logging.getLogger("teambot.slack.bolt")
    # Given the process's client and `authorize`, Bolt warns that a token (the client's, or
    # SLACK_BOT_TOKEN read from the environment) is unused: expected here, and confusing.
    unused_token = _DropMessages("`token` will be unused", "will be ignored")
    bolt_logger.addFilter(unused_token)
    try:
        app = AsyncApp(
            client=bot.client,
            authorize=authorize,
            signing_secret=signing_secret or "",
            request_verification_enabled=signing_secret is not None,
            process_before_response=True,
            attaching_conversation_kwargs_enabled=False,
            logger=bolt_logger,
        )
    finally:
        bolt_logger.removeFilter(unused_token)

    @app.middleware
    async def count(body: dict[str, Any], next: Callable[[], Awaitable[Any]]) -> Any:
        metrics.EVENTS.labels("slack", _kind(body)).inc()
        return await next()

    def team(body: dict[str, Any], context: dict[str, Any]) -> str:
        found = context.get("team_id") or body.get("team_id") or (body.get("team") or {}).get("id")
        return str(found or bot.identity.team_id)

    _conversations(app, bot, team)
    _feedback_and_approvals(app, bot, team)
    _summaries(app, bot, team)
    _settings_and_home(app, bot, team)
    _recap_and_forget(app, bot, team)
    return app


def _conversations(app: AsyncApp, bot: SlackBot, team: Team) -> None:
    """Messages, agent threads and Stop."""

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await bot.on_app_mention(event, team(body, context))

    @app.event("message")
    async def on_message(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await bot.on_message(event, team(body, context))

    @app.event("assistant_thread_started")
    async def on_thread_started(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        bot.spawn(
            bot.agent.on_assistant_thread_started(event, team(body, context)),
            name="slack:agent-thread",
        )

    @app.event("assistant_thread_context_changed")
    async def on_context_changed(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await bot.agent.on_assistant_context_changed(event, team(body, context))

    @app.event("agent_session_stopped")
    async def on_session_stopped(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await bot.on_session_stopped(event, team(body, context))


def _feedback_and_approvals(app: AsyncApp, bot: SlackBot, team: Team) -> None:
    """👍/👎 (and the reason for a 👎), Approve / Deny on approval cards."""

    @app.action(FEEDBACK_ACTION)
    async def on_feedback(
        ack: Callable[..., Awaitable[None]],
        body: dict[str, Any],
        action: dict[str, Any],
        context: Any,
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        bot.spawn(
            bot.on_feedback(
                team(body, context),
                user,
                str(action.get("value") or ""),
                body.get("trigger_id"),
            ),
            name="slack:feedback",
        )

    @app.view(FEEDBACK_REASON_VIEW)
    async def on_feedback_reason(
        ack: Callable[..., Awaitable[None]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        bot.spawn(bot.on_feedback_reason(user, view), name="slack:feedback-reason")

    def decision_listener(approve: bool) -> Callable[..., Awaitable[None]]:
        # Bolt passes listeners only the arguments it knows by name: `approve` is bound here.
        async def on_decision(
            ack: Callable[..., Awaitable[None]],
            body: dict[str, Any],
            action: dict[str, Any],
            respond: Callable[..., Awaitable[Any]],
        ) -> None:
            await ack()
            user = str((body.get("user") or {}).get("id") or "")
            bot.spawn(
                bot.on_approval(str(action.get("value") or ""), user, respond, approve=approve),
                name="slack:approval",
                respond=respond,
            )

        return on_decision

    app.action(APPROVE_ACTION)(decision_listener(True))
    app.action(DENY_ACTION)(decision_listener(False))


def _summaries(app: AsyncApp, bot: SlackBot, team: Team) -> None:
    """`/summarize`, the *Summarize thread* shortcut, Share."""

    @app.command("/summarize")
    async def on_summarize(
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        try:
            window = parse_window(str(command.get("text") or ""))
        except ValueError as error:
            await ack(text=safe_mrkdwn(str(error)), response_type="ephemeral")
            return
        note = await bot.intake.admit_command(
            "slack", team(command, context), str(command.get("user_id") or ""), command="summarize"
        )
        if note is not None:
            await ack(text=safe_mrkdwn(note), response_type="ephemeral")
            return
        where = f"<#{window.channel}>" if window.channel else "this conversation"
        await ack(text=safe_mrkdwn(f"Reading {where} ({window.label})…"), response_type="ephemeral")
        bot.spawn(
            bot.summaries.summarize_channel(
                team(command, context),
                str(command["user_id"]),
                str(command["channel_id"]),
                window,
                respond,
                asked_from_name=str(command.get("channel_name") or ""),
            ),
            name=f"slack:/summarize:{command['channel_id']}",
            respond=respond,
        )

    @app.shortcut(SUMMARIZE_SHORTCUT)
    async def on_shortcut(
        ack: Callable[..., Awaitable[None]],
        shortcut: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        await ack()
        message = shortcut.get("message") or {}
        channel = str((shortcut.get("channel") or {}).get("id") or "")
        root = str(message.get("thread_ts") or message.get("ts") or shortcut.get("message_ts"))
        user = str((shortcut.get("user") or {}).get("id") or "") or None
        bot.spawn(
            bot.summaries.summarize_thread(
                team(shortcut, context), channel, root, user=user, respond=respond
            ),
            name=f"slack:shortcut:{channel}:{root}",
            respond=respond,
        )

    @app.action(SHARE_ACTION)
    async def on_share(
        ack: Callable[..., Awaitable[None]],
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        bot.spawn(
            bot.summaries.share_summary(str(action.get("value") or ""), user, respond),
            name="slack:share-summary",
            respond=respond,
        )


def _settings_and_home(app: AsyncApp, bot: SlackBot, team: Team) -> None:
    """`/teambot settings`, its modal, the Home tab."""

    @app.command("/teambot")
    async def on_teambot(
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        words = str(command.get("text") or "").lower().split()
        if not words or words[0] != "settings":
            await ack(
                text="Usage: `/teambot settings` (this channel) or "
                "`/teambot settings workspace` (admins).",
                response_type="ephemeral",
            )
            return
        await ack()
        bot.spawn(
            bot.admin.open_settings(
                team(command, context),
                str(command["user_id"]),
                str(command.get("channel_id") or ""),
                str(command.get("trigger_id") or ""),
                workspace="workspace" in words[1:],
            ),
            name="slack:/teambot-settings",
            respond=respond,
        )

    @app.view(SETTINGS_VIEW)
    async def on_settings_saved(
        ack: Callable[..., Awaitable[None]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        user = str((body.get("user") or {}).get("id") or "")
        errors = await bot.admin.save_settings(user, view)
        if errors:
            await ack(response_action="errors", errors=errors)
        else:
            await ack()

    @app.event("app_home_opened")
    async def on_home(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        bot.spawn(
            bot.admin.publish_home(team(body, context), str(event["user"])), name="slack:home"
        )


def _recap_and_forget(app: AsyncApp, bot: SlackBot, team: Team) -> None:
    """`/recap` and `/forget`."""

    @app.command("/recap")
    async def on_recap(
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        await ack()

        async def recap() -> None:
            reply = await bot.knowledge.recap(
                team(command, context),
                str(command["user_id"]),
                str(command["channel_id"]),
                str(command.get("text") or ""),
            )
            await respond(text=reply, response_type="ephemeral")

        bot.spawn(recap(), name=f"slack:/recap:{command['channel_id']}", respond=respond)

    @app.command("/forget")
    async def on_forget(
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        await ack()
        bot.spawn(
            bot.forget_channel(
                team(command, context),
                str(command.get("user_id") or ""),
                str(command["channel_id"]),
                respond,
            ),
            name=f"slack:/forget:{command['channel_id']}",
            respond=respond,
        )


def _kind(body: dict[str, Any]) -> str:
    """A short label for what Slack sent: the event type, `command`, `shortcut`, ..."""
    kind = str(body.get("type") or ("command" if "command" in body else "other"))
    if kind == "event_callback":
        event = body.get("event") or {}
        kind = str(event.get("subtype") or event.get("type") or kind)
    return kind[:40]


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)
