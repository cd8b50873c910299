"""`teambot console` as a person uses it: a real process under a pseudo-terminal (pexpect)
or with piped stdin, real Redis, the fake CometAPI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest

from bots.console import COMMANDS, ConsoleKnowledge
from core.engine import Engine
from core.knowledge import Knowledge
from core.sink import CollectingSink
from core.types import Author, ConversationKey, Incoming
from tests.fakes.cometapi import FakeCometAPI, Reply, ServerError
from tests.support import API_KEY, team_model

ROOT = Path(__file__).resolve().parent.parent
DIALOGUE = "gpt-5.3-chat-latest"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def console_env(
    cometapi: FakeCometAPI, redis_url: str | None, prefix: str, tmp_path: Path, **extra: str
) -> dict[str, str]:
    """The environment of a person's shell, pointed at the fakes; nothing from .env."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMETAPI_", "REDIS_", "TEAMBOT_", "LOG_"))
    }
    env.update(
        COMETAPI_API_KEY=API_KEY,
        COMETAPI_BASE_URL=cometapi.base_url,
        REDIS_KEY_PREFIX=prefix,
        RETRY_BASE_DELAY="0.01",
        PYTHONPATH=str(ROOT),
        XDG_STATE_HOME=str(tmp_path / "state"),
        TERM="xterm-256color",
        # pexpect is not a full terminal: it never answers a cursor-position request
        PROMPT_TOOLKIT_NO_CPR="1",
        **extra,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


async def run_piped(
    args: list[str], stdin: bytes, env: dict[str, str], cwd: Path
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Terminal:
    """`teambot console` in a pseudo-terminal; blocking pexpect calls run in a thread so
    the fake CometAPI (in this event loop) keeps answering."""

    PROMPT = "›"

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "bots.cli", "console", "--user", "Sam", *args],
            env=env,
            cwd=str(cwd),
            dimensions=(40, 120),
            encoding="utf-8",
            codec_errors="replace",
            timeout=30,
        )
        self.seen = ""

    async def expect(self, pattern: Any, timeout: float = 30) -> str:  # noqa: ASYNC109
        """Wait for `pattern`; returns the screen output before it."""
        await asyncio.to_thread(self.child.expect, pattern, timeout=timeout)
        before = str(self.child.before)
        after = self.child.after if isinstance(self.child.after, str) else ""
        self.seen += before + after
        return before

    async def send(self, text: str) -> None:
        await asyncio.to_thread(self.child.send, text)

    async def prompt(self) -> str:
        return await self.expect(self.PROMPT)

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture
def terminal(cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path) -> Any:
    opened: list[Terminal] = []

    def start(*args: str, **extra: str) -> Terminal:
        env = console_env(cometapi, redis_url, key_prefix, tmp_path, **extra)
        term = Terminal(env, tmp_path, *args)
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()


# --- on a terminal ---------------------------------------------------------------------------


async def test_ctrl_c_stops_an_answer_and_the_next_question_is_answered(
    cometapi: FakeCometAPI, terminal: Any
) -> None:
    slow = "Alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima"
    cometapi.script(DIALOGUE, Reply(slow, chunks=12, chunk_delay=0.4))
    term = terminal()
    await term.prompt()
    await term.send("tell me a long story\r")
    await term.expect("bravo")
    pressed = time.monotonic()
    term.child.sendintr()  # Ctrl-C, as the terminal's line discipline delivers it
    await term.expect(r"\(stopped\)", timeout=5)
    # stopped through core: the model call was cancelled within a second
    (story,) = cometapi.requests_for(DIALOGUE)
    assert story.client_closed_at is not None and story.client_closed_at - pressed < 1.0
    await term.prompt()
    await term.send("and now?\r")
    answer = await term.expect(r"and now\?", timeout=20)
    await term.prompt()
    assert "Echo" in ANSI.sub("", answer + term.seen)
    screen = ANSI.sub("", term.seen)
    assert "restarting" not in screen
    assert "WARNING" not in screen and "Traceback" not in screen
    assert "lima" not in screen  # the rest of the stopped answer never came
    assert term.child.isalive()
    # the partial answer is remembered, marked as stopped
    kept = [str(m.get("content")) for m in cometapi.requests_for(DIALOGUE)[-1].messages]
    assert any("Alpha" in text and "stopped by the user" in text for text in kept)


async def test_ctrl_c_at_the_prompt_exits_within_a_second(terminal: Any) -> None:
    term = terminal()
    await term.prompt()
    started = time.monotonic()
    term.child.sendcontrol("c")
    await term.expect(pexpect.EOF, timeout=5)
    elapsed = time.monotonic() - started
    term.child.close()
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert term.child.exitstatus == 0


async def test_ctrl_d_exits(terminal: Any) -> None:
    term = terminal()
    await term.prompt()
    term.child.sendcontrol("d")
    await term.expect(pexpect.EOF, timeout=5)
    term.child.close()
    assert term.child.exitstatus == 0


async def test_a_pasted_10000_character_line_arrives_whole(
    cometapi: FakeCometAPI, terminal: Any
) -> None:
    cometapi.script(DIALOGUE, Reply("got the long one"), Reply("got both lines"))
    line = "".join(f"{i:05d}," for i in range(10_000 // 6 + 1))[:10_000]
    term = terminal()
    await term.prompt()
    # what a terminal sends for a paste once the program turned bracketed paste on
    await term.send("\x1b[200~" + line + "\x1b[201~")
    await term.send("\r")
    await term.expect("got the long one")
    await term.prompt()
    await term.send("\x1b[200~first line\nsecond line\x1b[201~\r")
    await term.expect("got both lines")
    requests = cometapi.requests_for(DIALOGUE)
    assert requests[0].last_user_text.endswith(line)
    assert len(line) == 10_000
    assert requests[1].last_user_text.endswith("first line\nsecond line")


async def test_answers_are_rendered_as_markdown_on_a_terminal(
    cometapi: FakeCometAPI, terminal: Any
) -> None:
    cometapi.script(DIALOGUE, Reply("Here is **very bold** news:\n\n- first\n- second"))
    term = terminal()
    await term.prompt()
    await term.send("news?\r")
    shown = await term.expect("second")
    final = shown[shown.rindex("Here is") :]  # the last redraw: the whole answer
    assert "\x1b[1mvery bold" in final  # bold, not asterisks
    assert "**" not in final
    assert "• " in ANSI.sub("", final)  # a list bullet
    await term.prompt()


async def test_help_says_what_each_command_does(terminal: Any) -> None:
    term = terminal()
    await term.prompt()
    await term.send("/help\r")
    await term.expect("Ctrl-C stops an answer")
    screen = ANSI.sub("", term.seen)
    for name, what in COMMANDS:
        assert re.search(rf"{re.escape(name)}\s+—\s+{re.escape(what)}", screen), name


async def test_no_warning_opens_a_start_without_redis(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, None, key_prefix, tmp_path)
    term = Terminal(env, tmp_path)
    try:
        banner = ANSI.sub("", await term.prompt())
    finally:
        term.close()
    assert "WARNING" not in banner
    assert "memory: this process only (REDIS_URL is unset)" in banner


# --- through a pipe --------------------------------------------------------------------------


async def test_piped_console_chats_remembers_and_runs_commands(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    cometapi.set_responder(team_model)
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    script = "\n".join(
        [
            "We decided to name the cat Ada.",
            "What is the cat called?",
            "/summarize",
            "/usage",
            "/forget",
            "Anything to remember?",
            "/quit",
            "never read",
        ]
    )
    code, out, err = await run_piped(
        ["console", "--user", "Sam"], script.encode() + b"\n", env, tmp_path
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Echo: [Sam] We decided to name the cat Ada."
    assert lines[1] == "Echo: [Sam] What is the cat called?"
    # piped output stays plain: the Markdown as the model wrote it
    assert "**TL;DR:**" in out and "Sam: We decided to name the cat Ada." in out
    assert "**Usage today" in out and "Dialogue:" in out
    assert "Forgotten" in out
    assert lines[-1] == "Echo: [Sam] Anything to remember?"
    assert "never read" not in out
    assert "\x1b[" not in out
    gpt = cometapi.requests_for(DIALOGUE)
    assert [m["role"] for m in gpt[1].messages] == ["system", "user", "assistant", "user"]
    assert [m["role"] for m in gpt[-1].messages] == ["system", "user"]


async def test_piped_console_exits_non_zero_when_an_answer_failed(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    cometapi.script(None, ServerError(503), times=10)
    env = console_env(cometapi, redis_url, key_prefix, tmp_path, RETRY_ATTEMPTS="1")
    code, out, err = await run_piped(["console"], b"hello\n", env, tmp_path)
    assert code == 1
    assert (
        out.strip()
        == "[teambot] The AI service isn't answering right now. Please try again in a minute."
    )
    assert "Traceback" not in err


async def test_piped_console_tolerates_any_bytes(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    data = b"caf\xe9 \xff\xfe ok\r\n\x00nul\n" + b"x" * 70_000 + b"\n"
    code, out, err = await run_piped(["console", "--user", "Sam"], data, env, tmp_path)
    assert code == 0, err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert lines[0] == "Echo: [Sam] caf\ufffd \ufffd\ufffd ok"
    assert lines[1] == "Echo: [Sam] \x00nul"
    assert cometapi.requests_for(DIALOGUE)[2].last_user_text.endswith("]" + " " + "x" * 70_000)


async def test_piped_help_is_one_line_per_command(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, None, key_prefix, tmp_path)
    code, out, err = await run_piped(["console"], b"/help\n/nope\n", env, tmp_path)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(COMMANDS) + 1
    for line, (name, what) in zip(lines, COMMANDS, strict=False):
        assert line.startswith(f"{name} ") and line.endswith(what)
    assert lines[-1] == "Unknown command /nope. /help lists them."
    assert err == ""  # no warning about the in-process store, no log lines


async def test_console_works_without_redis(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    cometapi.script(DIALOGUE, Reply("first answer"))
    env = console_env(cometapi, None, key_prefix, tmp_path)
    code, out, _err = await run_piped(["console"], b"one\ntwo\n", env, tmp_path)
    assert code == 0
    first, second_line = out.splitlines()
    assert first == "first answer"
    assert second_line.startswith("Echo: [")
    assert second_line.endswith("] two")
    second = cometapi.requests[-1]
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]


async def test_teambot_alone_starts_the_console(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, None, key_prefix, tmp_path)
    code, out, err = await run_piped([], b"hi\n", env, tmp_path)
    assert code == 0, err
    assert out.strip().endswith("] hi")


async def test_piped_approval_reads_the_next_line(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """A tool that changes something asks `Allow …? [y/N]`; the next input line answers."""
    from tests.fakes.cometapi import ToolCall

    for title in ("Printer", "Coffee"):
        cometapi.script(
            "gpt-5.3-chat-latest",
            Reply("Filing.", tool_calls=[ToolCall("create_ticket", {"title": title})]),
            Reply("Handled."),
        )
    env = console_env(
        cometapi, redis_url, key_prefix, tmp_path, TOOL_MODULES="tests.approval_tools"
    )
    code, out, _err = await run_piped(
        ["console"], b"file one\ny\nfile another\nno\n", env, tmp_path
    )
    assert code == 0, out
    assert out.count("Allow create_ticket") == 2
    assert "Printer" in out and "[y/N]" in out
    assert "(The request was approved.)" in out
    assert "(The request was declined.)" in out
    results = [r.tool_results for r in cometapi.requests if r.tool_results]
    assert "created ticket" in results[0][0][1]
    assert "Not run" in results[1][0][1]


async def test_piped_recap_sets_lists_and_removes_the_schedule(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    """/recap in the console: the person at the console may always set it; times are in
    RECAP_TIMEZONE; the shortest interval is RECAP_MIN_INTERVAL_MINUTES."""
    env = console_env(cometapi, None, key_prefix, tmp_path, RECAP_TIMEZONE="Europe/Paris")
    script = "/recap\n/recap weekly mon 09:00\n/recap\n/recap every 5m\n/recap off\n/recap\n"
    code, out, err = await run_piped(["console", "--user", "Sam"], script.encode(), env, tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("This channel has no scheduled recap.")
    assert lines[1].startswith(
        "This channel will get a recap every Monday at 09:00 (Europe/Paris); the first one "
    )
    assert lines[2].startswith("This channel gets a recap every Monday at 09:00 (Europe/Paris)")
    assert lines[3] == ("Recaps can come at most every hour here; choose a longer interval.")
    assert lines[4] == "Recaps in this channel are off."
    assert lines[5].startswith("This channel has no scheduled recap.")
    assert cometapi.requests == []


async def test_a_due_console_recap_is_printed_once(
    engine_with: Callable[..., contextlib.AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    """The console's conversation memory is the recap's channel; a due recap is printed."""
    cometapi.set_responder(team_model)
    key = ConversationKey("console", "local", "Sam", "default")
    printed: list[str] = []
    async with engine_with(recap_min_interval_minutes=1) as engine:
        now = [time.time()]
        engine.knowledge = Knowledge(engine, clock=lambda: now[0], poll_seconds=0.02)
        target = ConsoleKnowledge(engine, key, printed.append)
        engine.knowledge.attach("console", history=target, recaps=target)
        sam = Author("Sam", "Sam")
        reply = await engine.knowledge.recap_command(
            key, "/recap every 1m", setter=sam, may_manage=True
        )
        assert reply.startswith("This channel will get a recap every minute")
        state = await engine.knowledge.recaps.get(key)
        assert state is not None
        now[0] = state.next_due - 10
        said = Incoming(key=key, event_id="e1", author=sam, text="We chose the Old Mill", ts=now[0])
        await engine.reply(said, CollectingSink())
        now[0] = state.next_due + 1
        engine.knowledge.recaps.changed.set()
        for _ in range(500):
            if printed:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
    assert len(printed) == 1 and printed[0].lstrip().startswith("**Recap: ")
    assert "Old Mill" in cometapi.requests_for("gemini-3.1-flash-lite")[-1].last_user_text


async def test_good_bad_and_settings_for_the_last_answer(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    from core.engine import Engine
    from tests.support import make_settings

    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    script = (
        b"/good\n"  # nothing to rate yet
        b"first question\n/good\n/bad too vague\n"
        b"/settings\n/settings mode mentions\n/settings language French\n"
        b"/settings colour blue\n/settings instructions Answer in haiku.\n"
        b"second question\n/usage\n"
    )
    code, out, err = await run_piped(["console", "--user", "Sam"], script, env, tmp_path)
    assert code == 0, err
    assert "There is no answer to rate yet." in out
    assert "Thanks: 👍 recorded" in out and "Thanks: 👎 recorded" in out
    assert "Answer mode: follow threads" in out  # the first /settings
    assert "Answer mode: mentions only _(set here)_" in out
    assert "Summary language: French _(set here)_" in out
    assert "Not saved: There is no setting called 'colour'" in out
    # the channel's instructions reach the next request
    assert "Answer in haiku." in cometapi.requests_for(DIALOGUE)[-1].system_text
    assert "Answer in haiku." not in cometapi.requests_for(DIALOGUE)[0].system_text
    # one vote per person: 👍 then 👎 counts one 👎, with its reason
    settings = make_settings(redis_url=redis_url, redis_key_prefix=key_prefix)
    async with await Engine.start(settings) as engine:
        assert await engine.feedback.week("console:local") == {("dialogue", DIALOGUE): [0, 1]}
    # /usage shows this week's feedback per model
    assert re.search(rf"{re.escape(DIALOGUE)}.*👍 0.*👎 1", out), out
