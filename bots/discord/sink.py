"""Streaming a reply into Discord messages: the `ReplySink` the engine writes to.

The engine's deltas arrive far faster than Discord wants edits, so the sink never writes
per delta. It keeps the reply's current state (text, status, final text) and one writer
task brings the messages up to date, one write at a time, each write taking a slot of
its channel's `EditPacer` (one budget per channel, shared by every reply streaming into
it). Whatever changed while waiting for the slot is folded into that one write.

The text is laid out in pages (`format.split_message`); a page that fills up is
finished and the reply moves on to a new message. Where the messages live is a
`Surface`: an interaction's response and follow-ups, or ordinary channel messages.
An interaction surface that expires (tokens live 15 minutes) hands over to a channel
surface, so a slow answer still lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import discord
from discord.utils import MISSING

from bots.discord.format import PAGE_LIMIT, close_fence, split_message, status_line

__all__ = [
    "ChannelSurface",
    "DiscordSink",
    "EditPacer",
    "InteractionSurface",
    "Surface",
    "SurfaceExpired",
    "safe_mentions",
]

log = logging.getLogger(__name__)

EMPTY_ANSWER = "_(The model sent an empty answer. Try rephrasing the question.)_"
#: How long before an interaction token expires (15 minutes) a reply stops using it.
TOKEN_MARGIN = 60.0
#: Discord error codes meaning an interaction's webhook token can no longer be used.
_TOKEN_GONE = {10015, 50027}
_UNKNOWN_MESSAGE = 10008
_CANNOT_REPLY = 160002  # no Read Message History: a reply reference is refused


def safe_mentions(*users: discord.abc.Snowflake) -> discord.AllowedMentions:
    """Mentions in the bot's output ping nobody but `users` (the asker): never
    @everyone, @here or a role, whatever the model writes."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=list(users), replied_user=False
    )


# --------------------------------------------------------------------------- edit budget


@dataclass
class _Lane:
    next_at: float = 0.0
    held: bool = False
    waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None


class EditPacer:
    """One write budget per channel, shared by all replies streaming into it: one
    message write (create or edit) at a time per channel, each starting at least
    `interval` seconds after the previous one finished, so Discord never sees two
    writes of a channel closer than that. Writes of final text go before interim
    updates, so answers complete first."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lanes: dict[int, _Lane] = {}
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, channel_id: int, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold the channel's write slot for one write."""
        lane = await self._acquire(channel_id, urgent)
        try:
            yield
        finally:
            self._release(lane)

    async def _acquire(self, channel_id: int, urgent: bool) -> _Lane:
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(channel_id)
        if lane is None:
            self._prune(loop.time())
            lane = self._lanes[channel_id] = _Lane()
        if not lane.held and not lane.waiters and loop.time() >= lane.next_at:
            lane.held = True
            return lane
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(lane.waiters, (0 if urgent else 1, next(self._order), future))
        if lane.runner is None:
            lane.runner = asyncio.create_task(self._serve(lane), name=f"pacer-{channel_id}")
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(lane)  # granted just as we were cancelled: hand it on
            raise
        return lane

    def _release(self, lane: _Lane) -> None:
        lane.held = False
        lane.next_at = asyncio.get_running_loop().time() + self.interval
        lane.freed.set()

    async def _serve(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        try:
            while lane.waiters:
                if lane.held:
                    lane.freed.clear()
                    await lane.freed.wait()
                    continue
                delay = lane.next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                while lane.waiters:
                    _urgency, _order, future = heapq.heappop(lane.waiters)
                    if not future.done():
                        lane.held = True
                        future.set_result(None)
                        break
        finally:
            lane.runner = None

    def _prune(self, now: float) -> None:
        if len(self._lanes) < 512:
            return
        for channel_id, lane in list(self._lanes.items()):
            if lane.runner is None and not lane.held and not lane.waiters and lane.next_at < now:
                del self._lanes[channel_id]

    async def close(self) -> None:
        runners = [lane.runner for lane in self._lanes.values() if lane.runner is not None]
        for runner in runners:
            runner.cancel()
        for runner in runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for lane in self._lanes.values():
            for _urgency, _order, future in lane.waiters:
                future.cancel()
        self._lanes.clear()


# --------------------------------------------------------------------------- surfaces


class SurfaceExpired(Exception):
    """The surface can take no more writes (interaction token expired or its message
    is gone); the reply continues on the surface's fallback, if it has one."""


class Surface(Protocol):
    """Where a reply's pages live."""

    @property
    def channel_id(self) -> int: ...

    async def begin(self) -> None:
        """The reply is being prepared (show that the bot is typing, where possible)."""

    async def show(self, index: int, content: str, view: discord.ui.View | None) -> None:
        """Create page `index` (the next one) or edit it to `content`."""

    async def remove(self, index: int) -> None:
        """Delete page `index` (the last one)."""

    def fallback(self) -> Surface | None:
        """Where to continue once this surface raised SurfaceExpired."""

    def message_ids(self) -> list[int]: ...

    async def close(self) -> None: ...


class ChannelSurface:
    """Pages as ordinary messages in a channel or thread; the first replies to
    `reply_to` when given."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        channel_id: int,
        *,
        mentions: discord.AllowedMentions,
        reply_to: discord.MessageReference | None = None,
        typing: bool = True,
    ) -> None:
        self.channel = channel
        self._channel_id = channel_id
        self.mentions = mentions
        self.reply_to = reply_to
        self.messages: list[discord.Message | None] = []
        self._typing = typing
        self._typing_task: asyncio.Task[None] | None = None

    @property
    def channel_id(self) -> int:
        return self._channel_id

    async def begin(self) -> None:
        if self._typing and self._typing_task is None and not self.messages:
            self._typing_task = asyncio.create_task(self._type(), name="discord-typing")

    async def _type(self) -> None:
        # Discord shows "is typing" for 10 s after each trigger.
        while True:
            try:
                await self.channel.typing()
            except discord.HTTPException as error:
                log.debug("typing indicator refused: %s", error)
                return
            await asyncio.sleep(8)

    async def _stop_typing(self) -> None:
        task, self._typing_task = self._typing_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def show(self, index: int, content: str, view: discord.ui.View | None) -> None:
        await self._stop_typing()
        current = self.messages[index] if index < len(self.messages) else None
        if current is not None:
            try:
                self.messages[index] = await current.edit(
                    content=content,
                    allowed_mentions=self.mentions,
                    view=view if view is not None else MISSING,
                )
                return
            except discord.NotFound:
                log.info("message %s was deleted while streaming; sending it again", current.id)
        reference = self.reply_to if index == 0 else None
        try:
            message = await self._send(content, view, reference)
        except discord.Forbidden as error:
            if reference is None or error.code != _CANNOT_REPLY:
                raise
            message = await self._send(content, view, None)
        if index < len(self.messages):
            self.messages[index] = message
        else:
            self.messages.append(message)

    async def _send(
        self,
        content: str,
        view: discord.ui.View | None,
        reference: discord.MessageReference | None,
    ) -> discord.Message:
        extra: dict[str, Any] = {}
        if reference is not None:
            extra["reference"] = reference
        if view is not None:
            extra["view"] = view
        return await self.channel.send(content, allowed_mentions=self.mentions, **extra)

    async def remove(self, index: int) -> None:
        message = self.messages.pop(index) if index < len(self.messages) else None
        if message is not None:
            with contextlib.suppress(discord.NotFound):
                await message.delete()

    def fallback(self) -> Surface | None:
        return None

    def message_ids(self) -> list[int]:
        return [m.id for m in self.messages if m is not None]

    async def close(self) -> None:
        await self._stop_typing()


class InteractionSurface:
    """Pages as an interaction's (deferred) response and its follow-ups.

    Interaction tokens live 15 minutes. A write that would come later than `margin`
    before that first leaves a note on the response (while the token still works),
    then the reply moves to a channel surface; a token that stopped working early
    (Discord answers 401/404) moves it too. An ephemeral reply has no fallback: it must
    never be posted where others can read it.
    """

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        *,
        mentions: discord.AllowedMentions,
        ephemeral: bool = False,
        margin: float | None = None,
    ) -> None:
        self.interaction = interaction
        self.mentions = mentions
        self.ephemeral = ephemeral
        self.margin = TOKEN_MARGIN if margin is None else margin
        self.original_id: int | None = None
        self.followups: list[discord.WebhookMessage | None] = []
        self._shown: dict[int, str] = {}
        self._expired = False

    @property
    def channel_id(self) -> int:
        return self.interaction.channel_id or 0

    async def begin(self) -> None:
        return None

    def _deadline(self) -> dt.datetime:
        return self.interaction.expires_at - dt.timedelta(seconds=self.margin)

    async def show(self, index: int, content: str, view: discord.ui.View | None) -> None:
        if self._expired:
            raise SurfaceExpired
        if discord.utils.utcnow() >= self._deadline():
            await self._hand_over()
            raise SurfaceExpired
        try:
            if index == 0:
                message = await self.interaction.edit_original_response(
                    content=content,
                    allowed_mentions=self.mentions,
                    view=view if view is not None else MISSING,
                )
                self.original_id = message.id
            else:
                await self._show_followup(index - 1, content, view)
        except discord.HTTPException as error:
            if (
                error.code in _TOKEN_GONE
                or error.status == 401
                or (index == 0 and error.code == _UNKNOWN_MESSAGE)
            ):
                log.warning(
                    "interaction %s can take no more writes: %s", self.interaction.id, error
                )
                self._expired = True
                raise SurfaceExpired from error
            raise
        self._shown[index] = content

    async def _show_followup(
        self, position: int, content: str, view: discord.ui.View | None
    ) -> None:
        current = self.followups[position] if position < len(self.followups) else None
        if current is not None:
            try:
                self.followups[position] = await current.edit(
                    content=content,
                    allowed_mentions=self.mentions,
                    view=view if view is not None else MISSING,
                )
                return
            except discord.NotFound:
                log.info("follow-up %s was deleted while streaming; sending it again", current.id)
        message = await self.interaction.followup.send(
            content,
            wait=True,
            ephemeral=self.ephemeral,
            allowed_mentions=self.mentions,
            view=view if view is not None else MISSING,
        )
        if position < len(self.followups):
            self.followups[position] = message
        else:
            self.followups.append(message)

    async def _hand_over(self) -> None:
        """Leave a note on the response before its token runs out."""
        self._expired = True
        if discord.utils.utcnow() >= self.interaction.expires_at - dt.timedelta(seconds=5):
            return
        then = "the answer continues below." if not self.ephemeral else "please ask again."
        note = status_line(f"This took longer than Discord lets me edit this message: {then}")
        shown = self._shown.get(0, "")
        room = 2000 - len(note) - 2
        content = (close_fence(shown[:room]) + "\n" + note) if shown else note
        try:
            await self.interaction.edit_original_response(
                content=content[:2000], allowed_mentions=self.mentions
            )
        except discord.HTTPException as error:
            log.info("could not leave the hand-over note: %s", error)

    async def remove(self, index: int) -> None:
        if index == 0:
            return  # the response itself stays; it is overwritten instead
        position = index - 1
        message = self.followups.pop(position) if position < len(self.followups) else None
        self._shown.pop(index, None)
        if message is not None:
            with contextlib.suppress(discord.HTTPException):
                await message.delete()

    def fallback(self) -> Surface | None:
        if self.ephemeral:
            return None
        client = self.interaction.client
        channel_id = self.channel_id
        channel = self.interaction.channel
        target: discord.abc.Messageable
        if isinstance(channel, discord.abc.Messageable):
            target = channel
        else:
            target = client.get_partial_messageable(channel_id, guild_id=self.interaction.guild_id)
        reference = None
        if self.original_id is not None:
            reference = discord.MessageReference(
                message_id=self.original_id,
                channel_id=channel_id,
                guild_id=self.interaction.guild_id,
                fail_if_not_exists=False,
            )
        return ChannelSurface(
            target, channel_id, mentions=self.mentions, reply_to=reference, typing=False
        )

    def message_ids(self) -> list[int]:
        ids = [] if self.original_id is None else [self.original_id]
        return ids + [m.id for m in self.followups if m is not None]

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- the sink


@dataclass(frozen=True)
class _Step:
    kind: Literal["show", "remove"]
    index: int
    content: str = ""
    with_view: bool = False


Page = tuple[str, bool]


class DiscordSink:
    """A `ReplySink` that streams into a `Surface`, throttled by an `EditPacer`.

    `header` is shown above the answer (e.g. the quoted question); `final_view` makes
    the buttons put under the last page of the final text. `finish`/`fail` return once
    the final text is on Discord (or could not be delivered, which is logged).
    """

    def __init__(
        self,
        surface: Surface,
        pacer: EditPacer,
        *,
        header: str = "",
        final_view: Callable[[], discord.ui.View] | None = None,
        limit: int = PAGE_LIMIT,
    ) -> None:
        self.surface = surface
        self.pacer = pacer
        self.header = header
        self.final_view = final_view
        #: Run once the final text is on Discord (open a thread, remember the answer).
        self.after_finish: Callable[[DiscordSink], Awaitable[None]] | None = None
        self.limit = limit
        self.started = asyncio.Event()
        self.outcome: Literal["finished", "failed"] | None = None
        self.final_text: str | None = None
        self._surfaces: list[Surface] = [surface]
        self._text = ""
        self._status: str | None = None
        self._final: str | None = None
        self._shown: list[Page] = []
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._abandoned = False

    # --- ReplySink -----------------------------------------------------------------

    async def status(self, text: str) -> None:
        self._status = text
        self._changed()

    async def append(self, delta: str) -> None:
        self._text += delta
        if delta.strip():
            self._status = None  # a tool's status stays up until the model writes again
        self._changed()

    async def reset(self) -> None:
        self._text = ""
        self._changed()

    async def finish(self, text: str) -> None:
        await self._end(text if text.strip() else EMPTY_ANSWER, "finished")
        if self.after_finish is not None and not self._abandoned:
            try:
                await self.after_finish(self)
            except Exception:
                log.exception("the step after an answer failed")

    async def fail(self, message: str) -> None:
        await self._end(f"⚠️ {message}", "failed")

    # --- lifecycle -----------------------------------------------------------------

    async def begin(self) -> None:
        await self.surface.begin()

    async def close(self) -> None:
        """Stop writing (the reply ended without finish/fail, e.g. a duplicate)."""
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        for surface in self._surfaces:
            await surface.close()

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def message_ids(self) -> list[int]:
        return [mid for surface in self._surfaces for mid in surface.message_ids()]

    @property
    def first_message_id(self) -> int | None:
        ids = self.surface.message_ids()
        return ids[0] if ids else None

    async def _end(self, text: str, outcome: Literal["finished", "failed"]) -> None:
        self._final = text
        self.final_text = text
        self.outcome = outcome
        self._changed()
        writer = self._writer
        if writer is not None:
            await writer
        for surface in self._surfaces:
            await surface.close()

    def _changed(self) -> None:
        self.started.set()
        self._dirty.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="discord-sink-writer")

    # --- layout --------------------------------------------------------------------

    def _desired(self) -> list[Page]:
        if self._final is not None:
            pages = split_message(self.header + self._final, self.limit) or [EMPTY_ANSWER]
            out = [(page, False) for page in pages]
            if self.final_view is not None and self.outcome == "finished":
                out[-1] = (out[-1][0], True)
            return out
        status = status_line(self._status) if self._status else ""
        if not self._text.strip():
            return [(self.header + status, False)] if status else []
        pages = split_message(self.header + self._text, self.limit)
        last = close_fence(pages[-1])
        if status:
            last += "\n" + status
        pages[-1] = last
        return [(page, False) for page in pages]

    def _next_step(self) -> _Step | None:
        if self._abandoned:
            return None
        desired = self._desired()
        for index, page in enumerate(desired):
            if index >= len(self._shown) or self._shown[index] != page:
                return _Step("show", index, page[0], page[1])
        if len(self._shown) > len(desired):
            return _Step("remove", len(self._shown) - 1)
        return None

    # --- the writer ------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            step = self._next_step()
            if step is None:
                if self._final is not None:
                    return
                self._dirty.clear()
                await self._dirty.wait()
                continue
            if step.kind == "remove":
                await self._apply(step)
                continue
            async with self.pacer.slot(self.surface.channel_id, urgent=self._final is not None):
                step = self._next_step()  # what is newest after the wait
                if step is not None:
                    await self._apply(step)

    async def _apply(self, step: _Step) -> None:
        try:
            if step.kind == "remove":
                await self.surface.remove(step.index)
                del self._shown[step.index :]
                return
            view = self.final_view() if step.with_view and self.final_view else None
            await self.surface.show(step.index, step.content, view)
        except SurfaceExpired:
            successor = self.surface.fallback()
            if successor is None:
                log.warning("reply abandoned: its surface expired and has no fallback")
                self._abandoned = True
                return
            self.surface = successor
            self._surfaces.append(successor)
            self._shown = []
            return
        except discord.HTTPException as error:
            # Never loop on a write Discord refuses: count it as done and move on.
            log.warning("Discord refused a reply write (page %d): %s", step.index, error)
            if step.kind == "remove":
                del self._shown[step.index :]
                return
        except Exception:
            log.exception("a reply write failed (page %d)", step.index)
            if step.kind == "remove":
                del self._shown[step.index :]
                return
        page = (step.content, step.with_view)
        if step.index < len(self._shown):
            self._shown[step.index] = page
        else:
            self._shown.append(page)
