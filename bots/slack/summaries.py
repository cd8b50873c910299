"""Summaries on Slack: `/summarize` (a channel's recent messages, shown to the asker
until they share it), the *Summarize thread* message shortcut, and the Share button.

`parse_window` reads `/summarize`'s text; `SlackSummaries` reads Slack, asks core for the
summary and posts it. The bot's summary posts are remembered, so they stay out of later
summaries' transcripts.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from bots.slack.format import safe_mrkdwn, summary_blocks
from core import (
    CollectingSink,
    ConversationKey,
    PagedReply,
    StructuredSummary,
    Summary,
    SummaryShares,
)

if TYPE_CHECKING:
    from bots.slack.bot import Respond, SlackBot

__all__ = [
    "DEFAULT_HOURS",
    "SUMMARIZE_SHORTCUT",
    "SlackSummaries",
    "Window",
    "parse_window",
]

log = logging.getLogger(__name__)

SUMMARIZE_SHORTCUT = "summarize_thread"
DEFAULT_HOURS = 24.0
MAX_HOURS = 24.0 * 7

# --- parsing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """What `/summarize` was asked for."""

    channel: str | None
    hours: float

    @property
    def label(self) -> str:
        hours = f"{self.hours:g}"
        return f"last {hours} hour{'s' if self.hours != 1 else ''}"


SUMMARIZE_USAGE = (
    "Usage: `/summarize [#channel] [hours]`, e.g. `/summarize`, `/summarize 8` or "
    "`/summarize #design 48`. Hours default to 24, at most 168 (a week)."
)

_CHANNEL_REF = re.compile(r"^<#([CGD][A-Z0-9]+)(?:\|[^>]*)?>$")
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?)(h|hr|hrs|hours?|d|days?)?$", re.IGNORECASE)


def parse_window(text: str) -> Window:
    """Parse `/summarize`'s text; ValueError with a message for the user."""
    channel: str | None = None
    hours: float | None = None
    tokens = text.split()
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        ref = _CHANNEL_REF.match(token)
        if ref and channel is None:
            channel = ref.group(1)
            continue
        if re.fullmatch(r"[CGD][A-Z0-9]{8,}", token) and channel is None:
            channel = token
            continue
        amount = _AMOUNT.match(token)
        if amount and hours is None:
            value, unit = float(amount.group(1)), (amount.group(2) or "").lower()
            if (
                not unit
                and index < len(tokens)
                and re.fullmatch(r"(h|hr|hrs|hours?|d|days?)", tokens[index], re.IGNORECASE)
            ):
                unit = tokens[index].lower()
                index += 1
            hours = value * 24 if unit.startswith("d") else value
            continue
        if token.startswith("#"):
            raise ValueError(
                f"I couldn't find the channel {token}. Pick it from Slack's suggestions as "
                "you type, so it becomes a link."
            )
        raise ValueError(SUMMARIZE_USAGE)
    if hours is None:
        hours = DEFAULT_HOURS
    if not 0 < hours <= MAX_HOURS:
        raise ValueError(f"I can summarize from 1 up to {MAX_HOURS:g} hours back.")
    # Whole hours, rounded up: "23.9" and "24" share one cached summary.
    return Window(channel, float(max(1, math.ceil(hours - 1e-9))))


# --- summarizing ----------------------------------------------------------------------------


class SlackSummaries:
    """One workspace's summaries: read the conversation, summarize, post or offer to share."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.shares = SummaryShares(bot.engine, "slack", command="`/summarize`")

    async def summarize_thread(
        self,
        team_id: str,
        channel: str,
        root: str,
        *,
        user: str | None = None,
        respond: Respond | None = None,
    ) -> None:
        """The message shortcut: a summary of a whole thread (read once, paginated), posted
        in the thread."""
        try:
            raw = await self.bot.reader.thread(channel, root)
        except SlackApiError as error:
            code = error.response.get("error")
            log.info("thread %s/%s not readable: %s", channel, root, code)
            message = _read_refusal(code, self.bot.identity.name)
            if respond is not None:
                await respond(
                    text=safe_mrkdwn(message), response_type="ephemeral", replace_original=False
                )
            return
        reply = self.bot.reply_in(channel, root, user=user, stream=False)
        messages = await self.bot.reader.chat_messages(raw, transcript=True, channel=channel)
        scope = ConversationKey("slack", team_id, channel, f"{root}#summary")
        summary = await self.bot.engine.summarize(
            scope, messages, reply, heading="Thread summary", show=False
        )
        if summary is not None:
            await reply.show_summary(summary, summary.markdown())

    async def summarize_channel(
        self,
        team_id: str,
        user_id: str,
        asked_from: str,
        window: Window,
        respond: Respond,
        *,
        asked_from_name: str = "",
    ) -> None:
        """`/summarize`: the channel's recent messages, thread replies included; the result
        is shown only to the asker, with a button to share it."""
        channel = window.channel or asked_from

        async def say(text: str) -> None:
            await respond(text=safe_mrkdwn(text, user_id), replace_original=True)

        try:
            access = await self.bot.reader.access(
                user_id, channel, asked_from=asked_from, asked_from_name=asked_from_name
            )
            if not access.allowed:
                await say(access.reason)
                return
            oldest = time.time() - window.hours * 3600
            raw, notes = await self.bot.reader.channel_window(channel, oldest)
        except SlackApiError as error:
            await say(_read_refusal(error.response.get("error"), self.bot.identity.name))
            return
        where = f"<#{channel}>" if not channel.startswith("D") else "this conversation"
        messages = await self.bot.reader.chat_messages(raw, transcript=True, channel=channel)
        if not messages:
            await say(f"Nothing was said in {where} in the {window.label}.")
            return
        scope = ConversationKey("slack", team_id, channel, f"#window:{window.hours:g}h")
        collected = CollectingSink()
        title = f"#{access.name} — {window.label}" if not channel.startswith("D") else window.label
        summary = await self.bot.engine.summarize(
            scope, messages, collected, heading=title, show=False
        )
        if summary is None:
            await say(f":warning: {collected.error or collected.text}")
            return
        record = {
            "channel": channel,
            "title": summary.title,
            "count": summary.count,
            "data": summary.data.model_dump(),
            "notes": notes,
        }
        share_id = await self.shares.keep(user_id, record)
        text, blocks = summary_blocks(summary, notes, share_id=share_id)
        await respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=True)

    async def share_summary(self, share_id: str, user_id: str, respond: Respond) -> None:
        """The asker chose to share their `/summarize` result in the channel."""
        shared = await self.shares.take(share_id, user_id)
        if isinstance(shared, str):
            await respond(text=safe_mrkdwn(shared), replace_original=False)
            return
        record = shared.record
        summary = Summary(
            StructuredSummary.model_validate(record["data"]), record["title"], record["count"]
        )
        notes = [*record.get("notes", []), f"Shared by <@{user_id}> with /summarize"]
        text, blocks = summary_blocks(summary, notes, shared_by=user_id)
        try:
            posted = await self.bot.client.chat_postMessage(
                channel=record["channel"],
                text=text,
                blocks=blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as error:
            await self.shares.failed(shared)
            await respond(
                text=_read_refusal(error.response.get("error"), self.bot.identity.name),
                replace_original=False,
            )
            return
        ident = f"{record['channel']}:{posted['ts']}"
        await self.bot.engine.cache_set("slack-summary-post", ident, "1", 30 * 86_400)
        await respond(delete_original=True)

    async def remember(self, reply: PagedReply) -> None:
        """The bot's summaries stay out of later summaries' transcripts."""
        if reply.summary is None:
            return
        surface = reply.surface
        for ts in getattr(surface, "ts", []):
            await self.bot.engine.cache_set(
                "slack-summary-post", f"{getattr(surface, 'channel', '')}:{ts}", "1", 30 * 86_400
            )


def _read_refusal(code: object, name: str) -> str:
    if code in ("not_in_channel", "channel_not_found"):
        return (
            "I can't read that conversation: I'm not a member of it. "
            f"Invite me with `/invite @{name}`, then try again."
        )
    if code == "thread_not_found":
        return "I couldn't find that thread any more."
    if code == "ratelimited":
        return "Slack is rate-limiting me right now. Please try again in a minute."
    return f"Slack refused to let me read that conversation ({code})."
