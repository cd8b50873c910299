"""The seam between the engine and an adapter's reply UI."""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from core import metrics

__all__ = ["CollectingSink", "ReplySink", "TimedSink", "show_summary"]


@runtime_checkable
class ReplySink(Protocol):
    """What an adapter implements to show one reply as it is produced.

    The engine calls, in order: any number of `status()` and `append()`
    (with `reset()` when a retry discards text already streamed), then
    exactly one of `finish()` or `fail()`.
    """

    async def status(self, text: str) -> None:
        """Show a transient status ("Thinking…", "Using current_time…")."""

    async def append(self, delta: str) -> None:
        """Add streamed text to the reply."""

    async def reset(self) -> None:
        """Discard the text streamed so far: the answer is being produced again."""

    async def finish(self, text: str) -> None:
        """The complete final text; replaces whatever was streamed."""

    async def fail(self, message: str) -> None:
        """A plain-language failure message for the user."""


class CollectingSink:
    """A sink that only remembers what it was given (tools, scripts, tests of adapters)."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.streamed = ""
        self.resets = 0
        self.text: str | None = None
        self.error: str | None = None

    async def status(self, text: str) -> None:
        self.statuses.append(text)

    async def append(self, delta: str) -> None:
        self.streamed += delta

    async def reset(self) -> None:
        self.resets += 1
        self.streamed = ""

    async def finish(self, text: str) -> None:
        self.text = text

    async def fail(self, message: str) -> None:
        self.error = message


class TimedSink:
    """Passes everything through; measures time to first text and to the end."""

    def __init__(self, inner: ReplySink) -> None:
        self.inner = inner
        #: The answer's text as the person sees it so far (streamed deltas since a reset).
        self.text = ""
        self.started: float | None = None
        self.first: float | None = None
        self.ended: float | None = None

    def __getattr__(self, name: str) -> Any:
        # The sink's optional powers (approval_ui, show_summary, ...) stay reachable.
        return getattr(self.inner, name)

    def start(self) -> None:
        self.started = time.monotonic()

    def fields(self) -> dict[str, float]:
        """Timings for the log line of this reply, in milliseconds."""
        if self.started is None:
            return {}
        out = {}
        if self.first is not None:
            out["first_text_ms"] = round((self.first - self.started) * 1000, 1)
        if self.ended is not None:
            out["answer_ms"] = round((self.ended - self.started) * 1000, 1)
        return out

    def observe(self, platform: str) -> None:
        if self.started is None:
            return
        if self.first is not None:
            metrics.FIRST_TOKEN_SECONDS.labels(platform).observe(self.first - self.started)
        if self.ended is not None:
            metrics.ANSWER_SECONDS.labels(platform).observe(self.ended - self.started)

    async def status(self, text: str) -> None:
        await self.inner.status(text)

    async def append(self, delta: str) -> None:
        if self.first is None:
            self.first = time.monotonic()
        self.text += delta
        await self.inner.append(delta)

    async def reset(self) -> None:
        self.text = ""
        await self.inner.reset()

    async def finish(self, text: str) -> None:
        self.ended = time.monotonic()
        await self.inner.finish(text)

    async def fail(self, message: str) -> None:
        self.ended = time.monotonic()
        await self.inner.fail(message)


async def show_summary(sink: ReplySink, summary: Any) -> None:
    """Finish `sink` with a summary: as data when the sink takes it (`show_summary`),
    else as its Markdown."""
    shower = getattr(sink, "show_summary", None)
    if shower is not None:
        await shower(summary, summary.markdown())
    else:
        await sink.finish(summary.markdown())
