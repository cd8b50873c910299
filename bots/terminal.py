"""How `teambot console` shows a reply: Markdown rendered as it streams on a terminal
(rich), plain text on a pipe.

Both are `ReplySink`s with two additions the console needs: `done` (set once the answer
is shown, so the prompt comes back while the engine tidies up) and `stop()` (the user
pressed Ctrl-C: show what arrived, then "(stopped)", and ignore whatever the cancelled
work still says).
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Literal, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.text import Text

__all__ = ["MarkdownSink", "PlainSink", "markdown_console"]

#: Lines at the end of a streaming answer that are redrawn in place; everything above
#: them is printed once, for good (a long answer scrolls like any output, and the
#: terminal's scrollback keeps it).
LIVE_LINES = 6
#: Re-render the Markdown at most this often while text streams (it is re-parsed whole).
RENDER_INTERVAL = 0.08


def markdown_console(stream: TextIO) -> Console:
    """A rich console on `stream`: colours on a terminal, none (and no markup) elsewhere."""
    return Console(file=stream, highlight=False, soft_wrap=False, emoji=False)


class PlainSink:
    """One reply as plain text on a stream: what a pipe or a file should get."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.streamed = ""
        self.failed = False
        self.stopped = False
        self.approval_ui: object | None = None  # set by the console for its answers
        self.done = asyncio.Event()
        self.answer_id: str | None = None  # the answer /good and /bad rate

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    async def status(self, text: str) -> None:
        return None

    async def append(self, delta: str) -> None:
        if self.stopped:
            return
        self.streamed += delta
        self._write(delta)

    async def reset(self) -> None:
        if self.streamed and not self.stopped:
            self._write("\n")
        self.streamed = ""

    async def finish(self, text: str) -> None:
        if not self.stopped:
            if self.streamed and text.startswith(self.streamed):
                self._write(text[len(self.streamed) :] + "\n")
            else:
                self._write(("\n" if self.streamed else "") + text + "\n")
        self.streamed = ""
        self.done.set()

    async def fail(self, message: str) -> None:
        if not self.stopped:
            self.failed = True
            self._write(("\n" if self.streamed else "") + f"[teambot] {message}\n")
        self.streamed = ""
        self.done.set()

    def stop(self) -> None:
        if not self.done.is_set():
            self._write(("\n" if self.streamed else "") + "(stopped)\n")
        self.stopped = True
        self.done.set()

    def offer_feedback(self, answer_id: str) -> None:
        self.answer_id = answer_id

    def show(self, markdown: str) -> None:
        """A finished text that is not an answer (/usage, /help)."""
        self._write(markdown + "\n")


class MarkdownStream:
    """A growing Markdown text on a terminal. The whole text is rendered each time; the
    lines that can no longer change (all but the last `LIVE_LINES`) are printed once,
    the rest is redrawn in place under a spinner while the answer is not finished."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.text = ""
        self.status = "Thinking…"
        self.printed = 0
        self._rendered_at = 0.0
        self._live: Live | None = None
        system = console.color_system
        self._colors: Literal["standard", "256", "truecolor"] | None = (
            system if system in ("standard", "256", "truecolor") else None  # type: ignore[assignment]
        )

    def _lines(self, text: str) -> list[Text]:
        if not text.strip():
            return []
        buffer = Console(
            file=io.StringIO(),
            width=self.console.width,
            color_system=self._colors,
            force_terminal=True,
            highlight=False,
            emoji=False,
        )
        buffer.print(Markdown(text))
        assert isinstance(buffer.file, io.StringIO)
        rendered = buffer.file.getvalue().rstrip("\n")
        return [Text.from_ansi(line) for line in rendered.split("\n")]

    def _view(self, tail: list[Text]) -> RenderableType:
        spinner = Spinner("dots", text=Text(self.status, style="dim"), style="cyan")
        return Group(*tail, spinner) if tail else spinner

    def start(self) -> None:
        self._live = Live(
            self._view([]),
            console=self.console,
            transient=True,
            auto_refresh=True,
            refresh_per_second=12,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def update(self, text: str | None = None, *, status: str | None = None) -> None:
        if text is not None:
            self.text = text
        if status is not None:
            self.status = status
        now = time.monotonic()
        if text is not None and now - self._rendered_at < RENDER_INTERVAL:
            return
        self._rendered_at = now
        lines = self._lines(self.text)
        stable = max(self.printed, len(lines) - LIVE_LINES)
        self._print(lines[self.printed : stable])
        if self._live is not None:
            self._live.update(self._view(lines[stable:]), refresh=True)

    def _print(self, lines: list[Text]) -> None:
        for line in lines:
            self.console.print(line, soft_wrap=True)
        self.printed += len(lines)

    def close(self) -> None:
        """Show the rest of the text for good and end the live view."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        lines = self._lines(self.text)
        self._print(lines[self.printed :])


class MarkdownSink:
    """One reply rendered as Markdown on a terminal while it streams."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.failed = False
        self.stopped = False
        self.approval_ui: object | None = None  # set by the console for its answers
        self.done = asyncio.Event()
        self.answer_id: str | None = None  # the answer /good and /bad rate
        self._stream: MarkdownStream | None = None
        self._streamed = ""

    def _current(self) -> MarkdownStream:
        if self._stream is None:
            self._stream = MarkdownStream(self.console)
            self._stream.start()
        return self._stream

    def begin(self) -> None:
        """Show the spinner at once, before the engine says anything."""
        self._current()

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    async def status(self, text: str) -> None:
        if not self.stopped and not self.done.is_set():
            self._current().update(status=text)

    async def append(self, delta: str) -> None:
        if self.stopped or self.done.is_set():
            return
        self._streamed += delta
        self._current().update(self._streamed)

    async def reset(self) -> None:
        if self.stopped or self.done.is_set():
            return
        if self._streamed:
            self._close()
            self.console.print(Text("(the connection dropped; answering again)", style="dim"))
        self._streamed = ""

    async def finish(self, text: str) -> None:
        if self.stopped or self.done.is_set():
            return
        if self._streamed and not text.startswith(self._streamed):
            self._close()  # the final text is not a continuation: show it whole
        stream = self._current()
        stream.text = text
        self._close()
        self.console.print()
        self.done.set()

    async def fail(self, message: str) -> None:
        if self.stopped or self.done.is_set():
            return
        self.failed = True
        self._close()
        self.console.print(Text(f"⚠ {message}", style="bold red"))
        self.console.print()
        self.done.set()

    def stop(self) -> None:
        if not self.done.is_set() and not self.stopped:
            self._close()
            self.console.print(Text("(stopped)", style="dim"))
            self.console.print()
        self.stopped = True
        self.done.set()

    def offer_feedback(self, answer_id: str) -> None:
        self.answer_id = answer_id

    def show(self, markdown: str) -> None:
        """A finished text that is not an answer (/usage, /help)."""
        self.console.print(Markdown(markdown))
        self.console.print()
