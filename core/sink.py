"""The seam between the engine and an adapter's reply UI."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["CollectingSink", "ReplySink"]


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
