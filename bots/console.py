"""`teambot console`: chat with the engine in a terminal, or through a pipe.

Each input line is one message. Commands: /summarize, /forget, /usage, /help, /quit.
The answer streams to stdout; status lines go to stderr when stdin is a terminal.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import uuid
from typing import TextIO

from core.engine import Engine
from core.settings import Settings
from core.types import Author, ConversationKey, Incoming

__all__ = ["ConsoleSink", "run_console"]

HELP = "Commands: /summarize  /forget  /usage  /help  /quit"


class ConsoleSink:
    """Streams one reply to a text stream."""

    def __init__(self, out: TextIO, err: TextIO, *, interactive: bool) -> None:
        self.out = out
        self.err = err
        self.interactive = interactive
        self.streamed = ""

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    async def status(self, text: str) -> None:
        if self.interactive:
            self.err.write(f"  … {text}\n")
            self.err.flush()

    async def append(self, delta: str) -> None:
        self.streamed += delta
        self._write(delta)

    async def reset(self) -> None:
        if self.streamed:
            self._write("\n")
            if self.interactive:
                self.err.write("  … the connection dropped; answering again\n")
        self.streamed = ""

    async def finish(self, text: str) -> None:
        if self.streamed and text.startswith(self.streamed):
            self._write(text[len(self.streamed) :] + "\n")
        else:
            self._write(("\n" if self.streamed else "") + text + "\n")
        self.streamed = ""

    async def fail(self, message: str) -> None:
        self._write(("\n" if self.streamed else "") + f"[teambot] {message}\n")
        self.streamed = ""


async def _read_line(stream: TextIO, prompt: str | None) -> str | None:
    if prompt is not None:
        try:
            return await asyncio.to_thread(input, prompt)
        except EOFError:
            return None
    line = await asyncio.to_thread(stream.readline)
    return line.rstrip("\n") if line else None


async def run_console(
    settings: Settings,
    *,
    user: str | None = None,
    conversation: str = "default",
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    interactive = stdin.isatty()
    name = user or getpass.getuser() or "you"
    key = ConversationKey("console", "local", name, conversation)
    engine = await Engine.start(settings)
    try:
        if interactive:
            stderr.write(f"teambot console: conversation '{conversation}' as {name}. {HELP}\n")
        while True:
            line = await _read_line(stdin, "you> " if interactive else None)
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            sink = ConsoleSink(stdout, stderr, interactive=interactive)
            command = text.split()[0].lower()
            if command in ("/quit", "/exit"):
                break
            if command == "/help":
                stdout.write(HELP + "\n")
            elif command == "/forget":
                await engine.forget(key)
                stdout.write("Forgotten: this conversation's memory is erased.\n")
            elif command == "/usage":
                report = await engine.usage(key.tenant)
                stdout.write(report.render() + "\n")
            elif command == "/summarize":
                await engine.summarize_conversation(key, sink)
            elif text.startswith("/") and " " not in text:
                stdout.write(f"Unknown command {text}. {HELP}\n")
            else:
                if interactive:
                    stdout.write("teambot> ")
                incoming = Incoming(
                    key=key,
                    event_id=uuid.uuid4().hex,
                    author=Author(id=name, name=name),
                    text=text,
                )
                await engine.reply(incoming, sink)
            stdout.flush()
    finally:
        await engine.close()
    return 0
