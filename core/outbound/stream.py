"""One streamed reply on any platform: post-then-edit by default, native streaming when the
platform has it, pages, pacing and mention safety in one place.

`PagedReply` is the `ReplySink` the engine writes to. It keeps the reply's state (text,
status, final text) and one writer task brings the platform up to date, one write at a
time, each write taking a slot of the channel's `WritePacer` — whatever changed while
waiting for the slot goes into that one write. The adapter supplies a `Surface`: how to
render Markdown in its wire format and how to create, edit and delete the page messages.

* Pages: the text is laid out by `paginate` (fence-aware, prefix-stable); a page that is
  settled is final and never touched again; the last one is shown with its open code block
  closed and the current status under it.
* Mention safety is applied last, on the exact text handed to the surface (`defuse`, or a
  `MentionGuard` on a native stream's deltas): nothing the model writes pings anyone but
  the person answered.
* A platform's native stream (`Surface.native`) carries the answer while it fits on one
  page; past that, after a retry that discards text, or when the stream fails, the message
  it made becomes page 0 and the reply goes on by editing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from core.outbound.mentions import MentionGuard, Resolver, defuse
from core.outbound.pacing import Kind, RateReport, WritePacer
from core.outbound.pages import open_fence, paginate

__all__ = ["NativeStream", "PagedReply", "Surface", "SurfaceExpired"]

log = logging.getLogger(__name__)

EMPTY_ANSWER = "_(The model returned an empty answer. Try rephrasing the question.)_"
#: What a reply shows while a retry that discarded its text starts again.
TRYING_AGAIN = "Trying again…"


class SurfaceExpired(Exception):
    """The surface takes no more writes (an interaction's token ran out, its message is
    gone); the reply continues on `successor`, or is abandoned without one."""

    def __init__(self, successor: Surface | None = None) -> None:
        super().__init__("the surface can take no more writes")
        self.successor = successor


@runtime_checkable
class NativeStream(Protocol):
    """A platform's own streaming of one message (optional power of a surface). Every
    text given is safe Markdown already; the message becomes page 0 of the surface."""

    async def start(self, markdown: str) -> RateReport | None: ...

    async def append(self, markdown: str) -> RateReport | None: ...

    async def status(self, text: str) -> None:
        """Show a step ("Using current_time…") inside the stream."""

    async def stop(self, markdown: str, *, final: bool) -> None:
        """End the stream with `markdown` appended. `final`: the answer is complete (the
        surface may attach its final extras); otherwise the reply goes on by editing."""


class Surface(Protocol):
    """Where a reply's pages live, in a platform's wire format."""

    @property
    def key(self) -> str:
        """The pacing key (the channel: all replies there share its budget)."""

    @property
    def limit(self) -> int:
        """Markdown characters per page (leave room for wire-format growth)."""

    @property
    def status_as_page(self) -> bool:
        """A status before any text is a page of its own (else `waiting` shows it)."""

    @property
    def failure_apart(self) -> bool:
        """A failure note after some text is a message of its own (else it ends the text)."""

    @property
    def native(self) -> NativeStream | None: ...

    def render(self, markdown: str) -> str:
        """Markdown → the platform's wire text (mention safety is applied after)."""

    def with_status(self, wire: str, status: str) -> str:
        """The last page while streaming, with the current status under it."""

    async def waiting(self, status: str) -> None:
        """Show a status before any page exists ("" while thinking)."""

    async def show(self, index: int, wire: str, *, final: bool, last: bool) -> RateReport | None:
        """Create page `index` (the next one) or edit it to `wire`. `final` and `last`: the
        answer's last page in its final form (attach buttons and the like)."""

    async def remove(self, index: int) -> None:
        """Delete page `index` (the last one)."""

    async def close(self) -> None:
        """The reply is over (stop typing indicators and the like)."""


@dataclass(frozen=True, slots=True)
class _Step:
    kind: Literal["show", "remove"]
    index: int
    wire: str = ""
    final: bool = False
    last: bool = False


class PagedReply:
    """A `ReplySink` streaming one answer into a `Surface`, paced by `pacer`.

    `header` is shown above the answer (a quoted question); `allowed_users` may be pinged
    (the asker), `resolve` names the others. `finish`/`fail` return once the final text is
    on the platform (or could not be delivered, which is logged)."""

    def __init__(
        self,
        surface: Surface,
        pacer: WritePacer,
        *,
        header: str = "",
        allowed_users: Collection[str] = (),
        resolve: Resolver | None = None,
        warning: str = "⚠️ ",
        native_pacer: WritePacer | None = None,
    ) -> None:
        self.surface = surface
        self.pacer = pacer
        self.header = header
        self.allowed = tuple(allowed_users)
        self.resolve = resolve
        self.warning = warning
        self.native_pacer = native_pacer or pacer
        self.outcome: Literal["finished", "failed"] | None = None
        self.final_text: str | None = None
        self._text = ""
        self._status: str | None = None
        self._final: str | None = None
        self._shown: list[tuple[str, bool]] = []  # wire text and finality of each page
        self._waiting_shown: str | None = None
        self._note: str | None = None  # a failure note shown apart from the text
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._abandoned = False
        # native streaming: None (not used / over), or the guard and what it carried
        self._native = surface.native
        self._native_guard: MentionGuard | None = None
        self._native_sent = ""  # raw answer text carried by the native stream so far
        self._native_status: str | None = None
        #: What the reply showed when it was a summary (data, for the adapter's records).
        self.summary: object | None = None
        #: The adapter's way to ask for approval in this reply's place (`ApprovalUI`).
        self.approval_ui: object | None = None
        #: Called once the final text is on the platform (in order, errors logged).
        self.after_finish: list[Callable[[PagedReply], Awaitable[None]]] = []

    # --- ReplySink ---------------------------------------------------------------------

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

    async def show_summary(self, summary: object, markdown: str) -> None:
        """Finish with a summary (`markdown` is its neutral form); `summary` stays on the
        reply for the adapter."""
        self.summary = summary
        await self.finish(markdown)

    async def fail(self, message: str) -> None:
        """The text shown so far stays; the failure is said under it (or, on a surface that
        says so, in a message of its own)."""
        note = f"{self.warning}{message}"
        shown = self._text.rstrip()
        if self.surface.failure_apart and shown:
            self._note = note
            await self._end(self._text, "failed")  # exactly what was shown stays
        else:
            await self._end(f"{shown}\n\n{note}" if shown else note, "failed")

    async def close(self) -> None:
        """Stop writing (the reply ended without finish or fail: a duplicate, a stop)."""
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await self.surface.close()

    @property
    def done(self) -> bool:
        return self.outcome is not None

    # --- state ---------------------------------------------------------------------------

    async def _end(self, text: str, outcome: Literal["finished", "failed"]) -> None:
        if self.outcome is not None:
            return
        self._final = text
        self.final_text = text
        self.outcome = outcome
        for budget in ("new", "edit"):
            self.pacer.promote(f"{self.surface.key}:{budget}", self, "final")
        self._changed()
        writer = self._writer
        if writer is not None:
            await writer
        await self.surface.close()
        if outcome == "finished" and not self._abandoned:
            for hook in self.after_finish:
                try:
                    await hook(self)
                except Exception:
                    log.exception("the step after a reply failed")

    def _changed(self) -> None:
        self._dirty.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="teambot-reply-writer")

    # --- layout --------------------------------------------------------------------------

    def _safe(self, markdown: str) -> str:
        return defuse(self.surface.render(markdown), self.allowed, self.resolve)

    def _desired(self) -> list[tuple[str, bool]]:
        """Each page's wire text, and whether it is in its final form."""
        limit = self.surface.limit
        if self._final is not None:
            pages = paginate(self.header + self._final, limit) or paginate(EMPTY_ANSWER, limit)
            out = [(self._safe(page.text), True) for page in pages]
            if self._note is not None:
                out += [(self._safe(page.text), True) for page in paginate(self._note, limit)]
            return out
        status = self._status or ""
        if not self._text.strip():
            # Once a message shows the reply, a retry that discards its text keeps the
            # message (saying so) rather than deleting it and posting a new one later.
            if self._shown or (status and self.surface.status_as_page):
                wire = self.surface.with_status(
                    self._safe(self.header) if self.header else "", status or TRYING_AGAIN
                )
                return [(wire, False)]
            return []
        pages = paginate(self.header + self._text, limit)
        out = [(self._safe(page.text), True) for page in pages[:-1]]
        tail = pages[-1].text
        fence = open_fence(tail)
        if fence is not None:
            tail = tail.rstrip("\n") + "\n" + fence.marker
        wire = self._safe(tail)
        if status:
            wire = self.surface.with_status(wire, status)
        out.append((wire, False))
        return out

    def _next_step(self) -> _Step | None:
        if self._abandoned:
            return None
        desired = self._desired()
        for index, (wire, final) in enumerate(desired):
            if index >= len(self._shown) or self._shown[index][0] != wire:
                last = index == len(desired) - 1 and self._final is not None
                return _Step("show", index, wire, final and self._final is not None, last)
            if final and self._final is not None and not self._shown[index][1]:
                last = index == len(desired) - 1
                return _Step("show", index, wire, True, last)
        if len(self._shown) > len(desired):
            return _Step("remove", len(self._shown) - 1)
        return None

    def _budget(self, step: _Step) -> str:
        """Creating and editing messages are separate budgets on the platforms
        (`KEY:new`, `KEY:edit`); a surface may say which a write spends (`budget_of`)."""
        creating = step.index >= len(self._shown)
        chooser = getattr(self.surface, "budget_of", None)
        if chooser is not None:
            return str(chooser(step.index, creating))
        return f"{self.surface.key}:{'new' if creating else 'edit'}"

    def _kind(self, step: _Step) -> Kind:
        if step.kind == "show" and step.index >= len(self._shown):
            return "first" if step.index == 0 else "final"
        return "final" if self._final is not None else "interim"

    # --- the writer ------------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            if self._native is not None:
                if await self._write_native():
                    continue
                if self._native is not None:  # streaming natively, nothing new yet
                    if self._native_guard is None:
                        await self._show_waiting()
                    self._dirty.clear()
                    if not self._native_pending():
                        await self._dirty.wait()
                    continue
            step = self._next_step()
            if step is None:
                if self._final is not None or self._abandoned:
                    return
                await self._show_waiting()
                self._dirty.clear()
                if self._next_step() is None:
                    await self._dirty.wait()
                continue
            if step.kind == "remove":
                await self._apply(step)
                continue
            permit = await self.pacer.acquire(self._budget(step), self._kind(step), stream=self)
            if permit is None:
                continue
            newest = self._next_step()  # what is newest after the wait
            if newest is None or newest.kind == "remove":
                permit.refund()
                continue
            report = await self._apply(newest)
            permit.done(report)

    async def _show_waiting(self) -> None:
        """Before the first page: the platform's own status display."""
        if self._shown or self.surface.status_as_page or self._final is not None:
            return
        status = self._status or ""
        if status == self._waiting_shown:
            return
        self._waiting_shown = status
        try:
            await self.surface.waiting(status)
        except Exception as error:
            log.debug("status not shown: %s", error)

    async def _apply(self, step: _Step) -> RateReport | None:
        report: RateReport | None = None
        try:
            if step.kind == "remove":
                await self.surface.remove(step.index)
                del self._shown[step.index :]
                return None
            report = await self.surface.show(
                step.index, step.wire, final=step.final, last=step.last
            )
        except SurfaceExpired as expired:
            if expired.successor is None:
                log.warning("reply abandoned: its surface expired and has no successor")
                self._abandoned = True
                return None
            self.surface = expired.successor
            self._shown = []
            self._native = None
            return None
        except Exception:
            # Never loop on a write the platform refuses: count it as done and move on.
            log.exception("a reply write failed (page %d)", step.index)
            if step.kind == "remove":
                del self._shown[step.index :]
                return None
        page = (step.wire, step.final)
        if step.index < len(self._shown):
            self._shown[step.index] = page
        else:
            self._shown.append(page)
        return report

    # --- native streaming ------------------------------------------------------------------

    def _native_pending(self) -> bool:
        if self._native is None:
            return False
        if self._final is not None:
            return True
        if self._native_guard is None:  # not started: only text can start it
            return bool(self._text.strip())
        return self._text != self._native_sent or self._status != self._native_status

    def _fits_natively(self, text: str) -> bool:
        return len(self.header) + len(text) <= self.surface.limit

    async def _write_native(self) -> bool:
        """Carry the answer on the platform's stream while it can. Returns True when it did
        something (the writer loops), False when the stream has nothing to do (or ended)."""
        native = self._native
        assert native is not None
        text = self._final if self._final is not None else self._text
        started = self._native_guard is not None
        if not text.startswith(self._native_sent) or not self._fits_natively(text):
            await self._seal(final=False)  # a retry discarded text, or it outgrew a page
            return True
        try:
            if self._final is None and self._status != self._native_status and started:
                self._native_status = self._status
                if self._status:
                    await native.status(self._status)
                return True
            fresh = text[len(self._native_sent) :]
            if self._final is not None:
                if not started:
                    return self._stop_native_unused()
                await self._native_stop(fresh)
                return True
            if not fresh:
                return False
            if not started and not fresh.strip():
                return False
            permit = await self.native_pacer.acquire(
                f"{self.surface.key}:{id(self)}", "first" if not started else "interim", stream=self
            )
            if permit is None:
                return True
            fresh = (self._final if self._final is not None else self._text)[
                len(self._native_sent) :
            ]
            if self._final is not None or not fresh:
                permit.refund()
                return True
            if not started:
                self._native_guard = MentionGuard(self.allowed, self.resolve)
                safe = self._native_guard.feed(self.header + fresh)
                report = await native.start(safe)
                self._shown = [("\x00native", False)]
                self._native_status = self._status
            else:
                assert self._native_guard is not None
                report = await native.append(self._native_guard.feed(fresh))
            self._native_sent += fresh
            permit.done(report)
        except Exception as error:
            log.info("native streaming failed (%s); editing the message instead", error)
            await self._seal(final=False, broken=True)
        return True

    def _stop_native_unused(self) -> bool:
        """The answer ended before the stream began: post it the ordinary way."""
        self._native = None
        return True

    async def _native_stop(self, fresh: str) -> None:
        native = self._native
        guard = self._native_guard
        assert native is not None and guard is not None
        safe = guard.feed(fresh) + guard.end()
        try:
            await native.stop(safe, final=self.outcome == "finished")
        except Exception as error:
            log.info("could not end the native stream (%s); editing it", error)
            self._native = None
            self._shown = [("\x00native", False)]
            return
        self._native_sent += fresh
        self._native = None
        self._shown = [(self._desired()[0][0], True)]

    async def _seal(self, *, final: bool, broken: bool = False) -> None:
        """End native streaming; from now on the reply is edited (page 0 is its message)."""
        native, self._native = self._native, None
        if native is None or self._native_guard is None:
            return
        # A broken stream may still be open: end it (best effort) so edits own the message.
        with contextlib.suppress(Exception):
            await native.stop("" if broken else self._native_guard.end(), final=final)
        self._shown = [("\x00native", False)]
