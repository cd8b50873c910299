"""Slack's side of a streamed reply: where the pages go and in which wire format.

Core's `PagedReply` does the work (pages, pacing, mention safety, fallback); this module
gives it a thread to write to:

* `SlackThread` posts pages with `chat.postMessage`, edits them with `chat.update` and
  deletes extra ones with `chat.delete`, in Slack's mrkdwn; before any text the thread
  shows an assistant status (`assistant.threads.setStatus`).
* `SlackStream` is Slack's native streaming (`chat.startStream` / `chat.appendStream` /
  `chat.stopStream`, standard Markdown, tool steps as task lines): core uses it while the
  answer fits in one message, and edits that message when it no longer does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.format import answer_blocks, approval_blocks, feedback_block, to_mrkdwn
from core import ApprovalCard, PagedReply, Rate, RateReport, WritePacer

__all__ = [
    "MESSAGE_LIMIT",
    "SlackDeliveryError",
    "SlackReply",
    "SlackStream",
    "SlackThread",
    "slack_pacers",
    "slack_reply",
]

log = logging.getLogger(__name__)

#: Characters of Markdown per Slack message. Slack asks apps to keep `text` under 4,000
#: characters; mrkdwn conversion and mention safety add a few, hence the margin.
MESSAGE_LIMIT = 3600
#: Seconds between two writes of one kind: `chat.update` in a channel, appends to a stream.
UPDATE_INTERVAL = 1.0
STREAM_INTERVAL = 0.5

THINKING = "is thinking…"

_Errors = (SlackApiError, SlackClientError, aiohttp.ClientError, asyncio.TimeoutError)


class SlackDeliveryError(Exception):
    """The reply could not be shown in Slack at all."""


def slack_pacers(
    update_interval: float = UPDATE_INTERVAL, stream_interval: float = STREAM_INTERVAL
) -> tuple[WritePacer, WritePacer]:
    """The process's budgets: message writes per channel, appends per stream."""
    # Slack answers a write at once and its client retries a 429 after Retry-After: no
    # margin for travel time is needed on top of the intervals.
    return (
        WritePacer(Rate(1, max(update_interval, 0.001)), margin=0.0),
        WritePacer(Rate(1, max(stream_interval, 0.001)), margin=0.0),
    )


def _report(error: Exception) -> RateReport | None:
    if isinstance(error, SlackApiError) and error.response.status_code == 429:
        retry = error.response.headers.get("Retry-After", "1")
        try:
            return RateReport(retry_after=float(retry))
        except ValueError:
            return RateReport(retry_after=1.0)
    return None


class SlackThread:
    """The messages of one reply in a Slack thread (a `core.Surface`)."""

    limit = MESSAGE_LIMIT
    status_as_page = False
    failure_apart = True

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        recipient_user: str | None = None,
        recipient_team: str | None = None,
        stream: bool = True,
        show_status: bool = True,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.key = channel
        self.ts: list[str] = []  # the page messages, in order
        self.show_status = show_status
        self._status_up = False
        #: The answer's id once core offered 👍/👎 for it (its final page carries them).
        self.feedback: str | None = None
        #: Slack's agent session of the thread: `processing` while the reply is written,
        #: `active` after (off once the workspace refuses it).
        self.agent_session = True
        self._processing = False
        self._native = (
            SlackStream(self, recipient_user=recipient_user, recipient_team=recipient_team)
            if stream
            else None
        )

    @property
    def native(self) -> SlackStream | None:
        return self._native

    def render(self, markdown: str) -> str:
        return to_mrkdwn(markdown) or "…"

    def with_status(self, wire: str, status: str) -> str:
        return f"{wire}\n\n_{_escape(status)}_" if wire else f"_{_escape(status)}_"

    async def _session(self, status: str) -> None:
        try:
            await self.client.agents_sessions_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=status
            )
        except _Errors as error:
            log.debug("no agent session status in %s: %s", self.channel, error)
            self.agent_session = False

    async def waiting(self, status: str) -> None:
        if self.agent_session and not self._processing:
            self._processing = True
            await self._session("processing")
        if not self.show_status:
            return
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel,
                thread_ts=self.thread_ts,
                status=THINKING,
                loading_messages=[status] if status else None,
            )
            self._status_up = True
        except _Errors as error:
            # A nicety: workspaces without Slack's AI features refuse it.
            log.debug("no assistant status in %s: %s", self.channel, error)
            self.show_status = False

    async def show(self, index: int, wire: str, *, final: bool, last: bool) -> RateReport | None:
        try:
            extra: dict[str, Any] = {}
            if final and last and self.feedback:
                extra["blocks"] = answer_blocks(wire, self.feedback)
            if index < len(self.ts):
                await self.client.chat_update(
                    channel=self.channel, ts=self.ts[index], text=wire, **extra
                )
                return None
            response = await self.client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts,
                text=wire,
                unfurl_links=False,
                unfurl_media=False,
                **extra,
            )
        except _Errors as error:
            report = _report(error)
            if report is None and index >= len(self.ts):
                raise SlackDeliveryError(f"could not post in {self.channel}: {error}") from error
            log.warning("could not update the reply in %s: %s", self.channel, error)
            return report
        self.ts.append(str(response["ts"]))
        self._status_up = False  # a message in the thread replaces the status
        return None

    async def remove(self, index: int) -> None:
        if index < len(self.ts):
            ts = self.ts.pop(index)
            try:
                await self.client.chat_delete(channel=self.channel, ts=ts)
            except _Errors as error:
                log.info("could not delete an extra message in %s: %s", self.channel, error)

    async def close(self) -> None:
        """The reply is over: the agent session leaves `processing`; nothing was posted
        after all (a duplicate, a stop): clear the status."""
        if self._processing:
            self._processing = False
            if self.agent_session:
                await self._session("active")
        if self._status_up and not self.ts:
            self._status_up = False
            try:
                await self.client.assistant_threads_setStatus(
                    channel_id=self.channel, thread_ts=self.thread_ts, status=""
                )
            except _Errors as error:
                log.debug("could not clear the status in %s: %s", self.channel, error)


class SlackStream:
    """Slack's native streaming of a thread's first reply message (a `core.NativeStream`)."""

    def __init__(
        self, thread: SlackThread, *, recipient_user: str | None, recipient_team: str | None
    ) -> None:
        self.thread = thread
        self.recipient_user = recipient_user
        self.recipient_team = recipient_team
        self.ts: str | None = None
        self._task: tuple[str, str] | None = None  # the open task line (id, title)
        self._tasks = 0

    def _task_chunk(self, status: str) -> dict[str, Any]:
        task_id, title = self._task or ("step", "")
        return {"type": "task_update", "id": task_id, "title": title, "status": status}

    def _close_task(self, chunks: list[dict[str, Any]]) -> None:
        if self._task is not None:
            chunks.append(self._task_chunk("complete"))
            self._task = None

    async def start(self, markdown: str) -> RateReport | None:
        thread = self.thread
        args: dict[str, Any] = {"channel": thread.channel, "thread_ts": thread.thread_ts}
        if self.recipient_user and not thread.channel.startswith("D"):
            args["recipient_user_id"] = self.recipient_user
            args["recipient_team_id"] = self.recipient_team
        args["markdown_text"] = markdown
        response = await thread.client.chat_startStream(**args)
        self.ts = str(response["ts"])
        thread.ts = [self.ts]
        thread._status_up = False
        return None

    async def append(self, markdown: str) -> RateReport | None:
        assert self.ts is not None
        chunks: list[dict[str, Any]] = []
        self._close_task(chunks)
        if not markdown and not chunks:
            return None
        if chunks:
            if markdown:
                chunks.append({"type": "markdown_text", "text": markdown})
            await self.thread.client.chat_appendStream(
                channel=self.thread.channel, ts=self.ts, chunks=chunks
            )
        else:
            await self.thread.client.chat_appendStream(
                channel=self.thread.channel, ts=self.ts, markdown_text=markdown
            )
        return None

    async def status(self, text: str) -> None:
        assert self.ts is not None
        chunks: list[dict[str, Any]] = []
        self._close_task(chunks)
        self._tasks += 1
        self._task = (f"step-{self._tasks}", text)
        chunks.append(self._task_chunk("in_progress"))
        await self.thread.client.chat_appendStream(
            channel=self.thread.channel, ts=self.ts, chunks=chunks
        )

    async def stop(self, markdown: str, *, final: bool) -> None:
        assert self.ts is not None
        chunks: list[dict[str, Any]] = []
        self._close_task(chunks)
        if markdown:
            chunks.append({"type": "markdown_text", "text": markdown})
        extra: dict[str, Any] = {}
        if chunks:
            extra["chunks"] = chunks
        if final and self.thread.feedback:
            # "rendered at the bottom of the finalized message" (chat.stopStream)
            extra["blocks"] = [feedback_block(self.thread.feedback)]
        await self.thread.client.chat_stopStream(channel=self.thread.channel, ts=self.ts, **extra)


class SlackApprovals:
    """Approval cards in a thread (a `core.ApprovalUI`)."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts

    async def show(self, card: ApprovalCard) -> dict[str, str]:
        text, blocks = approval_blocks(card)
        posted = await self.client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=text, blocks=blocks
        )
        return {"channel": self.channel, "ts": str(posted["ts"])}

    async def settle(
        self, card: ApprovalCard, outcome: str, by: str | None, where: Mapping[str, str]
    ) -> None:
        if "ts" not in where:
            return
        text, blocks = approval_blocks(card, outcome, by)
        await self.client.chat_update(
            channel=where.get("channel", self.channel), ts=where["ts"], text=text, blocks=blocks
        )


class SlackReply(PagedReply):
    """A reply in a Slack thread whose final answer carries 👍/👎."""

    surface: SlackThread

    def offer_feedback(self, answer_id: str) -> None:
        """Core's offer (before `finish`): the final page or stream end carries the buttons."""
        self.surface.feedback = answer_id


def slack_reply(
    client: AsyncWebClient,
    pacers: tuple[WritePacer, WritePacer],
    *,
    channel: str,
    thread_ts: str,
    user: str | None = None,
    team: str | None = None,
    stream: bool = True,
    resolve: Any = None,
) -> SlackReply:
    """A reply in a thread: streamed natively when it can be, pinging nobody but `user`."""
    surface = SlackThread(
        client,
        channel=channel,
        thread_ts=thread_ts,
        recipient_user=user,
        recipient_team=team,
        stream=stream,
    )
    updates, appends = pacers
    reply = SlackReply(
        surface,
        updates,
        allowed_users=[user] if user else [],
        resolve=resolve,
        warning=":warning: ",
        native_pacer=appends,
    )
    reply.approval_ui = SlackApprovals(client, channel, thread_ts)
    return reply


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
