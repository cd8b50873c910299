"""`ReplySink` for Slack: one answer streamed into a thread.

Primary path: Slack's chat streaming API. The first text starts a stream
(`chat.startStream`), later text is appended in batches (`chat.appendStream`), and the
final text closes it (`chat.stopStream`). While the model thinks, the thread shows an
assistant status (`assistant.threads.setStatus`); a tool call shows as a task line in the
stream.

Fallback: when streaming is refused (`chat.startStream` fails) or the stream dies
(`chat.appendStream` / `chat.stopStream` fail), the answer continues as a normal message
(`chat.postMessage`, or the streamed message already there) edited with `chat.update` at
a throttled pace: one edit budget per channel, about once a second. Text that has reached
Slack is never posted again: later text goes into the same message.

Long answers are split into several messages at `MESSAGE_LIMIT` characters without
breaking a code block (see `format.split_markdown`). Every flush runs in one background
task per reply, so the engine's stream is never slowed by Slack's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.format import (
    best_cut,
    held_back,
    open_fence,
    safe_markdown,
    split_markdown,
    to_mrkdwn,
)

__all__ = ["MESSAGE_LIMIT", "Pacer", "SlackDeliveryError", "SlackReplySink"]

log = logging.getLogger(__name__)

#: Characters of Markdown per Slack message. Slack truncates `text` at 40,000 characters
#: and asks apps to keep messages under 4,000; the stream API takes 12,000 per call.
MESSAGE_LIMIT = 3900
#: Seconds between two `chat.appendStream` calls of one stream.
STREAM_INTERVAL = 0.5
#: Seconds between two `chat.update` calls in one channel (all replies there share it).
UPDATE_INTERVAL = 1.0

THINKING = "is thinking…"

_Errors = (SlackApiError, SlackClientError, aiohttp.ClientError, asyncio.TimeoutError)


class SlackDeliveryError(Exception):
    """The reply could not be shown in Slack at all."""


class Pacer:
    """Spaces calls that share a budget (a channel's edits, a stream's appends)."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}

    async def wait(self, key: str, interval: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if len(self._next) > 4096:
            self._next = {k: t for k, t in self._next.items() if t > now}
        slot = max(now, self._next.get(key, 0.0))
        self._next[key] = slot + interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass(slots=True)
class _Part:
    """One Slack message showing `prefix + text[start:end] + suffix` of the answer. `prefix`
    reopens a code block the previous part had to close; `suffix` closes one cut here."""

    start: int
    end: int
    prefix: str = ""
    ts: str | None = None
    streaming: bool = False  # a chat stream is open on this message
    sealed: bool = False
    suffix: str = ""
    shown: str = ""  # the mrkdwn body last sent with chat.postMessage / chat.update

    def markdown(self, text: str) -> str:
        return self.prefix + text[self.start : self.end] + self.suffix


class SlackReplySink:
    """Shows one reply in `channel`, in the thread `thread_ts`.

    `recipient_user` / `recipient_team` are the asker (the stream API needs them outside
    DMs). `stream=False` skips the streaming API: the answer is posted when it is complete
    (summaries, which arrive whole).
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        recipient_user: str | None = None,
        recipient_team: str | None = None,
        stream: bool = True,
        pacer: Pacer | None = None,
        stream_interval: float = STREAM_INTERVAL,
        update_interval: float = UPDATE_INTERVAL,
        limit: int = MESSAGE_LIMIT,
        show_status: bool = True,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.recipient_user = recipient_user
        self.recipient_team = recipient_team
        self.mode: Literal["stream", "update"] = "stream" if stream else "update"
        self.pacer = pacer or Pacer()
        self.stream_interval = stream_interval
        self.update_interval = update_interval
        self.limit = max(limit, 200)
        self.show_status = show_status
        self.done = asyncio.Event()
        self.failed: str | None = None
        self.streamed = False  # the streaming API carried (part of) this reply

        self._text = ""
        self._parts: list[_Part] = []
        self._reuse: list[str] = []  # messages of a discarded attempt, rewritten in turn
        self._pending_status: str | None = None
        self._status_up = False  # an assistant status shows in the thread
        self._status_line = ""  # fallback mode: the status shown under the text
        self._task: tuple[str, str] | None = None  # open task line in the stream (id, title)
        self._task_count = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def message_ts(self) -> list[str]:
        """Timestamps of the messages this reply shows, in order."""
        return [p.ts for p in self._parts if p.ts is not None]

    # --- ReplySink -------------------------------------------------------------------

    async def start(self) -> None:
        """Show the thinking status at once, before the engine says anything."""
        await self.status("")

    async def status(self, text: str) -> None:
        if self._closed:
            return
        self._pending_status = text
        self._kick()

    async def append(self, delta: str) -> None:
        if self._closed or not delta:
            return
        self._text += delta
        if delta.strip():
            self._status_line = ""
        self._kick()

    async def reset(self) -> None:
        if self._closed:
            return
        async with self._lock:
            await self._discard()

    async def finish(self, text: str) -> None:
        await self._close()
        async with self._lock:
            try:
                if not text.startswith(self._text):
                    await self._discard()
                if not self._parts:
                    # Nothing streamed yet (a summary, a command's answer): one plain post.
                    self.mode = "update"
                self._text = text if text.strip() else "_(The model returned an empty answer.)_"
                self._status_line = ""
                await self._flush(final=True)
            except _Errors as error:
                raise SlackDeliveryError(f"could not show the answer: {error}") from error
            finally:
                self.done.set()

    async def fail(self, message: str) -> None:
        await self._close()
        async with self._lock:
            self.failed = message
            try:
                self._status_line = ""
                if self._parts:
                    with contextlib.suppress(*_Errors):
                        await self._flush(final=True)
                for ts in self._reuse:
                    await self._delete(ts)
                self._reuse.clear()
                await self._post(f":warning: {message}")
            finally:
                self.done.set()

    async def abandon(self) -> None:
        """Nothing will be answered here after all (a duplicate delivery): clear the status."""
        await self._close()
        async with self._lock:
            if self._status_up and not self._parts:
                await self._set_status("")
            self.done.set()

    # --- background flushing --------------------------------------------------------------

    def _kick(self) -> None:
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"slack-sink-{self.channel}")

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            async with self._lock:
                if self._closed:
                    return
                try:
                    await self._flush(final=False)
                except _Errors as error:
                    # finish() delivers what is still pending; nothing is lost here.
                    log.warning("could not update the reply in %s: %s", self.channel, error)
                except Exception:
                    log.exception("reply update failed in %s", self.channel)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            # Never cancel a flush half-way (a post whose answer is lost would be posted
            # again): with the lock held, the worker is idle when it is cancelled.
            async with self._lock:
                worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    # --- the flush ------------------------------------------------------------------------

    async def _flush(self, *, final: bool) -> None:
        """Bring Slack up to date with the answer (all of it when `final`)."""
        await self._apply_status(final=final)
        text = self._text
        target = len(text) if final else len(text) - held_back(text)
        while True:
            part = self._parts[-1] if self._parts and not self._parts[-1].sealed else None
            if part is None:
                delivered = self._parts[-1].end if self._parts else 0
                if delivered >= target:
                    break
                fence = open_fence(text[:delivered]) if delivered else None
                part = _Part(delivered, delivered, prefix=fence.opening + "\n" if fence else "")
                self._parts.append(part)
            room = self.limit - len(part.prefix) - (part.end - part.start) - 12
            if part.end == part.start:
                room = max(room, 64)  # a fresh message always takes some text: no loop
            if target - part.end <= room:
                await self._deliver(part, target, final=final)
                if final:
                    await self._seal(part)
                break
            cut = part.end + _cut(text[part.end : target], text, max(room, 0), part)
            await self._deliver(part, cut, final=True)
            await self._seal(part)
        if final:
            for ts in self._reuse:
                await self._delete(ts)
            self._reuse.clear()

    async def _deliver(self, part: _Part, end: int, *, final: bool) -> None:
        """Show `text[part.start:end]` in `part`'s message."""
        if self.mode == "stream" and (part.ts is None or part.streaming):
            try:
                await self._stream_to(part, end)
                return
            except _Errors as error:
                log.info("streaming failed in %s (%s); using chat.update", self.channel, error)
                if _stream_over(error):
                    part.streaming = False
                await self._fall_back()
        await self._update_to(part, end, final=final)

    async def _stream_to(self, part: _Part, end: int) -> None:
        piece = self._text[part.end : end]
        chunks: list[dict[str, Any]] = []
        if self._task is not None and piece.strip():
            chunks.append(self._task_chunk("complete"))
        if part.ts is None:
            markdown = safe_markdown(part.prefix + piece)
            args: dict[str, Any] = {"channel": self.channel, "thread_ts": self.thread_ts}
            if self.recipient_user and not self.channel.startswith("D"):
                args["recipient_user_id"] = self.recipient_user
                args["recipient_team_id"] = self.recipient_team
            if chunks:
                args["chunks"] = [*chunks, {"type": "markdown_text", "text": markdown}]
            else:
                args["markdown_text"] = markdown
            response = await self.client.chat_startStream(**args)
            part.ts = str(response["ts"])
            part.streaming = True
            self.streamed = True
            self._status_up = False  # a message in the thread replaces the status
        elif piece or chunks:
            await self.pacer.wait(f"stream:{part.ts}", self.stream_interval)
            if chunks:
                if piece:
                    chunks.append({"type": "markdown_text", "text": safe_markdown(piece)})
                await self.client.chat_appendStream(channel=self.channel, ts=part.ts, chunks=chunks)
            else:
                await self.client.chat_appendStream(
                    channel=self.channel, ts=part.ts, markdown_text=safe_markdown(piece)
                )
        if chunks:
            self._task = None
        part.end = end

    async def _update_to(self, part: _Part, end: int, *, final: bool) -> None:
        part.end = end
        body = to_mrkdwn(part.markdown(self._text)) or "…"
        if self._status_line and not final:
            body += "\n\n_" + _escape(self._status_line) + "_"
        if part.ts is None and self._reuse:
            part.ts = self._reuse.pop(0)
            part.shown = ""
        if part.ts is None:
            response = await self.client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts,
                text=body,
                unfurl_links=False,
                unfurl_media=False,
            )
            part.ts = str(response["ts"])
            self._status_up = False
        elif body != part.shown:
            await self.pacer.wait(f"update:{self.channel}", 0 if final else self.update_interval)
            await self.client.chat_update(channel=self.channel, ts=part.ts, text=body)
        part.shown = body

    async def _seal(self, part: _Part) -> None:
        """Finish `part`: close a code block cut in two, end its stream."""
        if part.sealed:
            return
        start_fence = open_fence(part.prefix) if part.prefix else None
        fence = open_fence(self._text[part.start : part.end], start_fence)
        if fence is not None:
            newline = "" if self._text[: part.end].endswith("\n") else "\n"
            part.suffix = newline + fence.closing
        if part.streaming and part.ts is not None:
            chunks: list[dict[str, Any]] = []
            if self._task is not None:
                chunks.append(self._task_chunk("complete"))
                self._task = None
            if part.suffix:
                chunks.append({"type": "markdown_text", "text": part.suffix})
            try:
                if chunks:
                    await self.client.chat_stopStream(
                        channel=self.channel, ts=part.ts, chunks=chunks
                    )
                else:
                    await self.client.chat_stopStream(channel=self.channel, ts=part.ts)
                part.streaming = False
            except _Errors as error:
                log.info("could not stop the stream in %s (%s); editing it", self.channel, error)
                part.streaming = False
                part.shown = ""
                await self._fall_back()
                await self._update_to(part, part.end, final=True)
        elif part.ts is not None:
            await self._update_to(part, part.end, final=True)
        part.sealed = True

    async def _fall_back(self) -> None:
        """Streaming is refused or broken: from now on, post and edit."""
        if self.mode == "update":
            return
        self.mode = "update"
        self._task = None
        for part in self._parts:
            if part.sealed:
                continue
            if part.streaming and part.ts is not None:
                # The stream may still be open after an error other than expiry: end it,
                # so chat.update owns the message from now on.
                with contextlib.suppress(*_Errors):
                    await self.client.chat_stopStream(channel=self.channel, ts=part.ts)
            part.streaming = False
            part.shown = ""

    async def _discard(self) -> None:
        """Forget the text shown so far; its messages are rewritten by what comes next."""
        if self._parts:
            await self._fall_back()
            self._reuse = [p.ts for p in self._parts if p.ts is not None] + self._reuse
            self._parts = []
            self.mode = "update"
        self._text = ""
        self._status_line = ""

    # --- status -------------------------------------------------------------------------

    def _task_chunk(self, status: str) -> dict[str, Any]:
        task_id, title = self._task or ("step", "")
        return {"type": "task_update", "id": task_id, "title": title, "status": status}

    async def _apply_status(self, *, final: bool) -> None:
        text, self._pending_status = self._pending_status, None
        if text is None or final:
            return
        part = self._parts[-1] if self._parts and not self._parts[-1].sealed else None
        if part is None or part.ts is None:
            if self.show_status:
                await self._set_status(THINKING, [text] if text else None)
        elif self.mode == "stream" and part.streaming:
            chunks = [self._task_chunk("complete")] if self._task is not None else []
            self._task_count += 1
            self._task = (f"step-{self._task_count}", text)
            chunks.append(self._task_chunk("in_progress"))
            try:
                await self.client.chat_appendStream(channel=self.channel, ts=part.ts, chunks=chunks)
            except _Errors as error:
                log.info("streaming failed in %s (%s); using chat.update", self.channel, error)
                await self._fall_back()
                self._status_line = text
        else:
            self._status_line = text

    async def _set_status(self, status: str, loading: list[str] | None = None) -> None:
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel,
                thread_ts=self.thread_ts,
                status=status,
                loading_messages=loading,
            )
            self._status_up = bool(status)
        except _Errors as error:
            # A nicety: workspaces without Slack's AI features refuse it.
            log.debug("no assistant status in %s: %s", self.channel, error)
            self.show_status = False

    # --- plain posts ----------------------------------------------------------------------

    async def _post(self, markdown: str) -> None:
        for piece in split_markdown(markdown, self.limit):
            try:
                await self.client.chat_postMessage(
                    channel=self.channel,
                    thread_ts=self.thread_ts,
                    text=to_mrkdwn(piece),
                    unfurl_links=False,
                    unfurl_media=False,
                )
            except _Errors as error:
                raise SlackDeliveryError(f"could not post in {self.channel}: {error}") from error

    async def _delete(self, ts: str) -> None:
        with contextlib.suppress(*_Errors):
            await self.client.chat_delete(channel=self.channel, ts=ts)


def _cut(pending: str, text: str, room: int, part: _Part) -> int:
    """How much of `pending` still goes into `part` before it is sealed (the rest starts the
    next message): up to a line break if one fits; else right where the part ends when
    that ends a word; else after the word being written; a word is cut in two only when
    a message cannot hold it."""
    window = pending[:room]
    for separator in ("\n\n", "\n"):
        at = window.rfind(separator)
        if at >= 0:
            return at + len(separator)
    has_content = part.end > part.start
    if has_content and text[part.end - 1].isspace():
        return 0
    at = window.rfind(" ")
    if at >= 0:
        return at + 1
    if has_content:
        return 0
    return best_cut(pending, room)


def _stream_over(error: Exception) -> bool:
    """Slack ended the stream (it expired or broke): nothing left to stop."""
    return isinstance(error, SlackApiError) and (
        error.response.get("error") == "message_not_in_streaming_state"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
