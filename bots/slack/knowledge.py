"""Slack's side of core's knowledge: `/recap`, the history reader behind `search_history`
and the poster of scheduled recaps. Translation only; the rules (schedules, one post per
due time, who may read what, the answer with sources) are core's (`core.knowledge`).

* history: `conversations.history` (+ `conversations.replies` for threads in the window,
  via `SlackReader.channel_window`), each message with a permalink built from the
  workspace URL that `auth.test` gives (`https://T.slack.com/archives/C/p1700…`, with
  `thread_ts` for replies), the form `chat.getPermalink` returns, without a call per
  message;
* who may set a recap: workspace admins and owners, and the channel's creator
  (`users.info`, `conversations.info`); anyone in a DM with the bot;
* the setter's time zone: `users.info` `tz`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.format import safe_mrkdwn, to_mrkdwn
from bots.slack.history import SlackReader, is_conversation_message
from core import Author, ChatMessage, ConversationKey, HistoryMessage, RecapPost

if TYPE_CHECKING:
    from bots.slack.bot import SlackBot

__all__ = ["SlackKnowledge"]

log = logging.getLogger(__name__)

_CHANNEL_MENTION = re.compile(r"^<#([CGD][A-Z0-9]+)(?:\|[^>]*)?>$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


def _ts(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0


class SlackKnowledge:
    """One workspace's `HistorySource` and `RecapTarget`, and its `/recap` command."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.client: AsyncWebClient = bot.client
        self.reader: SlackReader = bot.reader
        self._base_url: str | None = None

    # --- /recap -------------------------------------------------------------------------

    async def may_manage(self, user_id: str, channel: str) -> bool:
        """Anyone in a DM; elsewhere the one rule of who may manage a channel
        (`SlackBot.may_change`: workspace admins and owners, and the channel's creator)."""
        if channel.startswith("D"):
            return True
        return await self.bot.may_change(user_id, channel, workspace=False)

    async def timezone(self, user_id: str) -> str | None:
        try:
            user = (await self.client.users_info(user=user_id)).get("user") or {}
        except SlackApiError:
            return None
        tz = user.get("tz")
        return str(tz) if tz else None

    async def recap(self, team_id: str, user_id: str, channel: str, text: str) -> str:
        """`/recap …` in `channel`: core's reply, in Slack mrkdwn."""
        key = ConversationKey("slack", team_id, channel, "-")
        name = await self.bot.directory.name(user_id)
        reply = await self.bot.engine.knowledge.recap_command(
            key,
            text,
            setter=Author(user_id, name),
            may_manage=await self.may_manage(user_id, channel),
            timezone=await self.timezone(user_id),
        )
        return safe_mrkdwn(reply, user_id)

    # --- RecapTarget ------------------------------------------------------------------------

    async def read_since(
        self, channel: ConversationKey, since_ts: float, limit: int
    ) -> Sequence[ChatMessage]:
        raw, _notes = await self.reader.channel_window(
            channel.channel, since_ts, max_messages=limit
        )
        return await self.reader.chat_messages(raw, transcript=True, channel=channel.channel)

    async def post(self, channel: ConversationKey, recap: RecapPost) -> str | None:
        posted = await self.client.chat_postMessage(
            channel=channel.channel,
            text=to_mrkdwn(recap.markdown),
            unfurl_links=False,
            unfurl_media=False,
        )
        ts = str(posted.get("ts") or "")
        if ts:  # the bot's recaps stay out of later summaries
            await self.bot.engine.cache_set(
                "slack-summary-post", f"{channel.channel}:{ts}", "1", 30 * 86_400
            )
        return ts or None

    # --- HistorySource ----------------------------------------------------------------------

    async def resolve(self, current: ConversationKey, channel: str) -> ConversationKey | None:
        text = channel.strip()
        mention = _CHANNEL_MENTION.match(text)
        if mention:
            ident: str | None = mention.group(1)
        elif _CHANNEL_ID.match(text):
            ident = text
        else:
            ident = await self._find(text.lstrip("#").lower())
        if ident is None:
            return None
        return ConversationKey("slack", current.workspace, ident, "-")

    async def _find(self, name: str) -> str | None:
        cursor: str | None = None
        while True:
            args: dict[str, Any] = {
                "types": "public_channel,private_channel",
                "limit": 1000,
                "exclude_archived": True,
            }
            if cursor:
                args["cursor"] = cursor
            try:
                response = await self.client.conversations_list(**args)
            except SlackApiError as error:
                log.info("conversations.list failed: %s", error)
                return None
            for channel in response.get("channels") or []:
                if str(channel.get("name") or "").lower() == name:
                    return str(channel["id"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None

    async def may_read(self, asker: Author, channel: ConversationKey) -> bool | str:
        try:
            access = await self.reader.access(asker.id, channel.channel, asked_from="")
        except SlackApiError as error:
            return f"Slack refused to let me check that channel ({error.response.get('error')})."
        return True if access.allowed else access.reason.replace("summarize", "search")

    async def read(
        self, channel: ConversationKey, oldest_ts: float, limit: int
    ) -> AsyncIterator[Sequence[HistoryMessage]]:
        raw, _notes = await self.reader.channel_window(
            channel.channel, oldest_ts, max_messages=limit
        )
        base = await self._workspace_url()
        out: list[HistoryMessage] = []
        for message in reversed(raw):  # newest first
            if not is_conversation_message(message):
                continue
            ts = str(message.get("ts") or "")
            text = await self.reader.plain_text(message)
            if not ts or not text:
                continue
            _uid, name, _bot = await self.reader.speaker(message)
            link = self._permalink(base, channel.channel, ts, message) if base else ""
            out.append(HistoryMessage(ts, name, _ts(ts), text, link))
            if len(out) % 200 == 0:
                yield out
                out = []
        if out:
            yield out

    async def _workspace_url(self) -> str:
        if self._base_url is None:
            try:
                url = str((await self.client.auth_test()).get("url") or "")
            except SlackApiError:
                url = ""
            self._base_url = url.rstrip("/")
        return self._base_url

    @staticmethod
    def _permalink(base: str, channel: str, ts: str, message: Mapping[str, Any]) -> str:
        link = f"{base}/archives/{channel}/p{ts.replace('.', '')}"
        thread = str(message.get("thread_ts") or "")
        if thread and thread != ts:
            link += f"?thread_ts={thread}&cid={channel}"
        return link
