"""`teambot console`: chat with the engine in a terminal, or through a pipe.

On a terminal: a prompt with line editing and history (prompt_toolkit), pasted text of
any length and any number of lines as one message (Alt-Enter adds a line by hand),
answers rendered as Markdown as they stream (rich), Ctrl-C stops an answer and comes back
to the prompt, Ctrl-C or Ctrl-D at the prompt quits.

Through a pipe: each input line is one message (any bytes: undecodable ones become "�"),
answers are plain text on stdout, and the exit code is 1 if any answer failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import io
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO

from bots.terminal import MarkdownSink, PlainSink, markdown_console
from core import (
    ApprovalCard,
    Author,
    ChatMessage,
    ConfigError,
    ConversationKey,
    Engine,
    HistoryMessage,
    Incoming,
    Intake,
    RecapPost,
    ReplySink,
    Settings,
)

__all__ = ["COMMANDS", "ConsoleKnowledge", "run_console"]

#: The console's commands, each with what it does (this is /help).
COMMANDS: tuple[tuple[str, str], ...] = (
    ("/summarize", "summarize this conversation so far"),
    ("/forget", "erase this conversation's memory and start afresh"),
    ("/usage", "tokens and cost today, against DAILY_BUDGET_USD"),
    ("/recap", "recap on a schedule (daily 09:00, every 4h, off)"),
    ("/good", "👍 the last answer"),
    ("/bad [reason]", "👎 the last answer, with an optional reason"),
    ("/settings [name value]", "show the settings here, or change one (mode, model, tools, …)"),
    ("/help", "this list"),
    ("/quit", "leave (Ctrl-D and Ctrl-C at the prompt do too)"),
)
#: How long a Ctrl-C waits for core to stop an answer before cancelling it here.
STOP_GRACE = 2.0
KEYS = "Ctrl-C stops an answer · Alt-Enter adds a line · ↑/↓ history · Ctrl-D quits"

ConsoleSink = MarkdownSink | PlainSink


def help_text(markdown: bool) -> str:
    width = max(len(name) for name, _ in COMMANDS)
    if markdown:
        rows = "\n".join(f"- `{name}` — {what}" for name, what in COMMANDS)
        return f"{rows}\n\n{KEYS}"
    return "\n".join(f"{name.ljust(width)}  {what}" for name, what in COMMANDS)


async def _ask(intake: Intake, incoming: Incoming, sink: ReplySink) -> None:
    """The console's one call into the core for an answer: the intake, as on every platform."""
    await intake.run(incoming, sink)


class _Hush(logging.Filter):
    """Drops log records below ERROR while on: the console reports those situations in its
    own words (a stopped answer, the in-process store)."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.on or record.levelno >= logging.ERROR

    @contextlib.contextmanager
    def active(self) -> Any:
        self.on = True
        try:
            yield
        finally:
            self.on = False


Ask = Callable[[str], Awaitable[str | None]]


class ConsoleApprovals:
    """Approval in the terminal: the request is printed and the next input line answers
    it (`y` or `yes` approves; anything else, or the end of the input, denies)."""

    def __init__(self, console: _Console, sink: ConsoleSink) -> None:
        self.console = console
        self.sink = sink

    async def show(self, card: ApprovalCard) -> dict[str, str]:
        calls = "; ".join(f"{name} {text}" for name, text in card.calls)
        question = f"Allow {calls}? [y/N] "
        ask = self.console.ask
        if ask is None:
            return {}
        self.console.background_task(self._answer(card, ask, question))
        return {}

    async def _answer(self, card: ApprovalCard, ask: Ask, question: str) -> None:
        line = await ask(question)
        approve = (line or "").strip().lower() in ("y", "yes")
        name = self.console.name
        await self.console.intake.decide(card.id, card.asker_id, name, approve=approve)

    async def settle(
        self, card: ApprovalCard, outcome: str, by: str | None, where: Mapping[str, str]
    ) -> None:
        said = {"approved": "approved", "denied": "declined", "expired": "not answered in time"}
        self.sink.show(f"_(The request was {said.get(outcome, outcome)}.)_")


class ConsoleKnowledge:
    """The console's conversation as core's knowledge sees it: its memory is the channel
    history (for recaps and `search_history`), and a recap is printed. Translation only;
    the rules are core's."""

    def __init__(self, engine: Engine, key: ConversationKey, out: Callable[[str], None]) -> None:
        self.engine = engine
        self.key = key
        self.out = out

    async def _messages(self) -> list[ChatMessage]:
        return await self.engine.memory.everything(self.key)

    async def read_since(
        self, channel: ConversationKey, since_ts: float, limit: int
    ) -> Sequence[ChatMessage]:
        found = [m for m in await self._messages() if m.ts > since_ts and m.role != "tool"]
        return found[-limit:]

    async def post(self, channel: ConversationKey, recap: RecapPost) -> str | None:
        self.out(f"\n{recap.markdown}\n")
        return None

    async def resolve(self, current: ConversationKey, channel: str) -> ConversationKey | None:
        return None  # the console has one conversation

    async def may_read(self, asker: Author, channel: ConversationKey) -> bool | str:
        return channel == self.key.channel_key()

    async def read(
        self, channel: ConversationKey, oldest_ts: float, limit: int
    ) -> AsyncIterator[Sequence[HistoryMessage]]:
        found = [
            HistoryMessage(m.id or f"{self.key.thread}-{i}", m.name or m.role, m.ts, m.content)
            for i, m in enumerate(await self._messages())
            if m.ts > oldest_ts and m.role in ("user", "assistant") and m.content
        ]
        yield found[::-1][:limit]


class _Console:
    def __init__(self, engine: Engine, key: ConversationKey, name: str, hush: _Hush) -> None:
        self.engine = engine
        self.intake = Intake(engine)
        self.key = key
        self.name = name
        self.hush = hush
        self.failed = False
        self.background: set[asyncio.Task[Any]] = set()
        #: Reads one answer from the person (set by the interactive or piped loop).
        self.ask: Ask | None = None
        #: The last answer shown (what /good and /bad rate), and whether to ask a reason.
        self.last_answer: str | None = None
        self.interactive = False

    def background_task(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def run_stoppable(
        self,
        work: Coroutine[Any, Any, Any],
        sink: ConsoleSink,
        key: ConversationKey | None = None,
    ) -> bool:
        """Run `work` (which ends by finishing or failing `sink`) until the sink is done.
        Ctrl-C stops it: an answer in `key`'s conversation through core (the model call is
        cancelled, the answer ends "(stopped)" and is remembered as stopped), anything
        else (or an answer core could not stop within STOP_GRACE seconds, or a second
        Ctrl-C) by cancelling it. Whatever the work does after the sink is done (memory
        folding) goes on in the background. Returns False if the user stopped it."""
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(work)
        stopped = False
        stopping: list[asyncio.Task[None]] = []

        def cancel() -> None:
            sink.stop()
            task.cancel()

        async def stop_in_core(key: ConversationKey) -> None:
            try:
                asked = await self.intake.stop(key)
            except Exception:
                asked = False
            if asked:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_GRACE):
                        await sink.done.wait()
            if not sink.done.is_set():
                cancel()
            sink.stopped = True  # what was shown stays; nothing more is

        def stop() -> None:
            nonlocal stopped
            self.hush.on = True  # the stop's own log lines are expected
            if stopped or key is None:
                stopped = True
                cancel()
                return
            stopped = True
            stopping.append(asyncio.create_task(stop_in_core(key)))

        previous = signal.getsignal(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, stop)
        waiter = asyncio.create_task(sink.done.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if stopping:
                await asyncio.gather(*stopping, return_exceptions=True)
            if stopped:
                await asyncio.gather(task, return_exceptions=True)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)
            waiter.cancel()
            if stopped:
                self.hush.on = False
        if not task.done():
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        elif not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        if sink.failed:
            self.failed = True
        return not stopped

    async def handle(self, text: str, sink: ConsoleSink) -> bool:
        """One line from the user; False when it asks to quit."""
        command = text.split()[0].lower()
        markdown = isinstance(sink, MarkdownSink)
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            sink.show(help_text(markdown))
        elif command == "/forget":
            await self.engine.forget(self.key)
            sink.show("Forgotten: this conversation's memory is erased.")
        elif command == "/usage":
            report = await self.engine.usage(self.key.tenant)
            sink.show(report.render())
        elif command == "/recap":
            sink.show(
                await self.engine.knowledge.recap_command(
                    self.key,
                    text,
                    setter=Author(id=self.name, name=self.name),
                    may_manage=True,  # the console's person owns the conversation
                    timezone=self.engine.settings.recap_timezone,
                )
            )
        elif command in ("/good", "/bad"):
            await self.rate(text, sink)
        elif command == "/settings":
            await self.settings(text, sink)
        elif command == "/summarize":
            if isinstance(sink, MarkdownSink):
                sink.begin()
            await self.run_stoppable(self.engine.summarize_conversation(self.key, sink), sink)
        elif text.startswith("/") and " " not in text:
            sink.show(f"Unknown command {text}. /help lists them.")
        else:
            incoming = Incoming(
                key=self.key,
                event_id=uuid.uuid4().hex,
                author=Author(id=self.name, name=self.name),
                text=text,
            )
            if isinstance(sink, MarkdownSink):
                sink.begin()
            sink.approval_ui = ConsoleApprovals(self, sink)
            await self.run_stoppable(_ask(self.intake, incoming, sink), sink, self.key)
            if sink.answer_id is not None:
                self.last_answer = sink.answer_id
        return True

    async def rate(self, text: str, sink: ConsoleSink) -> None:
        """/good, or /bad with an optional reason (asked for on a terminal)."""
        if self.last_answer is None:
            sink.show("There is no answer to rate yet.")
            return
        command, _, reason = text.partition(" ")
        good = command.lower() == "/good"
        if not good and not reason.strip() and self.interactive and self.ask is not None:
            reason = await self.ask("What was wrong? (optional, Enter to skip) ") or ""
        rating: Literal["up", "down"] = "up" if good else "down"
        known = await self.engine.feedback.vote(
            self.key.tenant, self.last_answer, self.name, rating, reason.strip()
        )
        if not known:
            sink.show("That answer is too old to rate.")
        else:
            sink.show(f"Thanks: {'👍' if good else '👎'} recorded for the last answer.")

    async def settings(self, text: str, sink: ConsoleSink) -> None:
        """/settings shows them; /settings NAME VALUE changes one (always allowed here)."""
        channels = self.engine.channels
        _command, _, rest = text.partition(" ")
        name, _, value = rest.strip().partition(" ")
        note = ""
        if name:
            try:
                change = channels.change(name, value)
                await channels.update(self.key.channel_key(), change, by=f"console:{self.name}")
                note = "Saved.\n\n"
            except ConfigError as error:
                note = f"Not saved: {error}\n\n"
        sink.show(note + await channels.describe(self.key, "this console"))

    async def close(self) -> None:
        """Let post-answer work finish briefly, then cancel it quietly."""
        if self.background:
            with self.hush.active():
                _done, pending = await asyncio.wait(self.background, timeout=3)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)


def _history_file() -> Path | None:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    folder = Path(state) / "teambot"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "console-history"
        path.touch(exist_ok=True)
        return path
    except OSError:
        return None


async def _interactive(console: _Console, stdout: TextIO, settings: Settings) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.formatted_text import HTML
    from prompt_toolkit.history import FileHistory, History, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    path = _history_file()
    history: History = FileHistory(str(path)) if path is not None else InMemoryHistory()
    session: PromptSession[str] = PromptSession(
        history=history,
        key_bindings=bindings,
        completer=WordCompleter([name.split()[0] for name, _ in COMMANDS], sentence=True),
        complete_while_typing=False,
        prompt_continuation="  … ",
    )
    rich = markdown_console(stdout)
    memory = (
        "Redis (REDIS_URL)"
        if settings.redis_url is not None
        else "this process only (REDIS_URL is unset)"
    )
    rich.print(
        f"[bold]teambot[/bold] · conversation [cyan]{console.key.thread}[/cyan] as "
        f"[cyan]{console.name}[/cyan] · memory: {memory}\n"
        f"[dim]/help lists the commands · {KEYS}[/dim]\n",
        markup=True,
    )

    async def ask(question: str) -> str | None:
        try:
            return await session.prompt_async(question)
        except (EOFError, KeyboardInterrupt):
            return None

    console.ask = ask
    console.interactive = True
    while True:
        try:
            line = await session.prompt_async(HTML("<b><ansicyan>you</ansicyan></b>› "))
        except (EOFError, KeyboardInterrupt):
            return
        text = line.strip()
        if not text:
            continue
        if not await console.handle(text, MarkdownSink(rich)):
            return


def _start_reader(stream: BinaryIO) -> asyncio.Queue[str | None]:
    """Lines of `stream` (any length, any bytes) on a queue, None at the end. A daemon
    thread reads, so a blocked read never holds the process open at exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                loop.call_soon_threadsafe(queue.put_nowait, text)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="teambot-stdin", daemon=True).start()
    return queue


async def _piped(console: _Console, stdin: TextIO, stdout: TextIO) -> None:
    rendered = stdout.isatty()
    rich = markdown_console(stdout) if rendered else None
    lines = _start_reader(stdin.buffer)

    async def ask(question: str) -> str | None:
        stdout.write(question)
        stdout.flush()
        answer = await lines.get()
        stdout.write(f"{answer or ''}\n")
        return answer

    console.ask = ask
    while (line := await lines.get()) is not None:
        text = line.strip()
        if not text:
            continue
        sink: ConsoleSink = MarkdownSink(rich) if rich is not None else PlainSink(stdout)
        if not await console.handle(text, sink):
            return
        if sink.stopped:
            raise KeyboardInterrupt


async def run_console(
    settings: Settings,
    *,
    user: str | None = None,
    conversation: str = "default",
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Chat until the input ends or the user quits. 0, or 1 if an answer failed (piped)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    if isinstance(stdout, io.TextIOWrapper):
        stdout.reconfigure(errors="replace")  # an answer never dies on an unprintable char
    interactive = stdin.isatty() and stdout.isatty()
    try:
        name = user or getpass.getuser() or "you"
    except (KeyError, OSError):
        name = "you"
    key = ConversationKey("console", "local", name, conversation)
    hush = _Hush()
    for handler in logging.getLogger().handlers:
        handler.addFilter(hush)
    if settings.redis_url is None:
        with hush.active():  # the console says so itself (banner, README)
            engine = await Engine.start(settings)
    else:
        engine = await Engine.start(settings)
    console = _Console(engine, key, name, hush)

    def show(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    knowledge = ConsoleKnowledge(engine, key, show)
    engine.knowledge.attach("console", history=knowledge, recaps=knowledge)
    try:
        if interactive:
            await _interactive(console, stdout, settings)
        else:
            await _piped(console, stdin, stdout)
    finally:
        await console.close()
        await engine.close()
    return 1 if console.failed and not interactive else 0
