"""Slack's agent surface (assistant / agent threads): a new thread remembers the channel
the user is viewing and offers the suggested prompts (`SLACK_SUGGESTED_PROMPTS`); its first
message names it; "summarize this channel" in it summarizes the channel being viewed.
Everything else said in such a thread is answered like any direct message (`SlackBot`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bots.slack.summaries import DEFAULT_HOURS, Window

if TYPE_CHECKING:
    from bots.slack.bot import SlackBot

__all__ = ["SlackAgentThreads"]

log = logging.getLogger(__name__)

_SUMMARIZE_VIEWED = re.compile(
    r"\bsummari[sz]e\b.*\b(this|the|that)\s+channel\b", re.IGNORECASE | re.DOTALL
)


class SlackAgentThreads:
    """One workspace's agent threads."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot

    def _agent_id(self, channel: str, thread_ts: str) -> str:
        return f"{channel}:{thread_ts}"

    async def on_assistant_thread_started(self, event: Mapping[str, Any], team_id: str) -> None:
        """A new agent thread: remember it (and the channel the user is viewing), offer the
        suggested prompts."""
        thread = event.get("assistant_thread")
        if not isinstance(thread, Mapping):
            return
        channel = str(thread.get("channel_id") or "")
        thread_ts = str(thread.get("thread_ts") or "")
        if not channel or not thread_ts:
            return
        await self._remember_context(channel, thread_ts, thread.get("context"))
        prompts = [
            {"title": text[:75], "message": text}
            for text in self.bot.settings.slack_suggested_prompts[:4]
        ]
        if not prompts:
            return
        try:
            await self.bot.client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, thread_ts=thread_ts, prompts=prompts
            )
        except SlackApiError as error:
            log.info("no suggested prompts in %s: %s", channel, error.response.get("error"))

    async def on_assistant_context_changed(self, event: Mapping[str, Any], team_id: str) -> None:
        """The user moved to another channel with the agent thread open."""
        thread = event.get("assistant_thread")
        if isinstance(thread, Mapping) and thread.get("channel_id") and thread.get("thread_ts"):
            await self._remember_context(
                str(thread["channel_id"]), str(thread["thread_ts"]), thread.get("context")
            )

    async def _remember_context(self, channel: str, thread_ts: str, context: object) -> None:
        viewing = ""
        if isinstance(context, Mapping):
            viewing = str(context.get("channel_id") or "")
        await self.bot.engine.cache_set(
            "slack-agent-thread", self._agent_id(channel, thread_ts), viewing, 30 * 86_400
        )

    async def thread_turn(self, event: Mapping[str, Any], team_id: str) -> bool:
        """A message in an agent thread: the first one names the thread; "summarize this
        channel" summarizes the channel being viewed (True: handled here)."""
        channel, ts = str(event["channel"]), str(event["ts"])
        root = str(event.get("thread_ts") or "")
        if not root or root == ts:
            return False
        viewing = await self.bot.engine.cache_get(
            "slack-agent-thread", self._agent_id(channel, root)
        )
        if viewing is None:
            return False  # not an agent thread
        text = str(event.get("text") or "").strip()
        if await self.bot.engine.once("slack-agent-title", self._agent_id(channel, root)):
            title = " ".join(text.split())[:60] or "New chat"
            self.bot.engine.spawn(self._set_title(channel, root, title), name="slack:agent-title")
        if not _SUMMARIZE_VIEWED.search(text):
            return False
        user = str(event.get("user") or "")
        if not viewing:
            await self._say_in(
                channel, root, "Open the channel you want summarized, then ask me again."
            )
            return True

        async def respond(text: str = "", blocks: Any = None, **_: Any) -> None:
            await self._say_in(channel, root, text, blocks)

        self.bot.spawn(
            self.bot.summaries.summarize_channel(
                team_id, user, channel, Window(viewing, DEFAULT_HOURS), respond
            ),
            name=f"slack:agent-summary:{viewing}",
            respond=respond,
        )
        return True

    async def _set_title(self, channel: str, thread_ts: str, title: str) -> None:
        try:
            await self.bot.client.assistant_threads_setTitle(
                channel_id=channel, thread_ts=thread_ts, title=title
            )
        except SlackApiError as error:
            log.info("no thread title in %s: %s", channel, error.response.get("error"))

    async def _say_in(self, channel: str, thread_ts: str, text: str, blocks: Any = None) -> None:
        args: dict[str, Any] = {"blocks": blocks} if blocks else {}
        await self.bot.client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=text or "…",
            unfurl_links=False,
            unfurl_media=False,
            **args,
        )
