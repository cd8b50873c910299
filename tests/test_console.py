"""`teambot console` and `teambot doctor` as a user runs them: real processes, piped stdin,
real Redis, the fake CometAPI."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.cometapi import FakeCometAPI, Reply, ServerError
from tests.support import API_KEY, team_model

ROOT = Path(__file__).resolve().parent.parent


def _env(
    cometapi: FakeCometAPI, redis_url: str | None, prefix: str, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMETAPI_", "REDIS_"))}
    env.update(
        COMETAPI_API_KEY=API_KEY,
        COMETAPI_BASE_URL=cometapi.base_url,
        REDIS_KEY_PREFIX=prefix,
        RETRY_BASE_DELAY="0.01",
        **extra,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


async def _run(args: list[str], stdin: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
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
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_piped_console_chats_remembers_and_runs_commands(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    cometapi.set_responder(team_model)
    env = _env(cometapi, redis_url, key_prefix, PYTHONPATH=str(ROOT))
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
    code, out, err = await _run(["console", "--user", "Sam"], script + "\n", env, tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Echo: [Sam] We decided to name the cat Ada."
    assert lines[1] == "Echo: [Sam] What is the cat called?"
    assert "**TL;DR:**" in out and "Sam: We decided to name the cat Ada." in out
    assert "**Usage today" in out and "Dialogue:" in out
    assert "Forgotten" in out
    assert lines[-1] == "Echo: [Sam] Anything to remember?"
    assert "never read" not in out
    # memory: the second turn saw the first; after /forget the model saw only the new line
    gpt = cometapi.requests_for("gpt-5.3-chat-latest")
    assert [m["role"] for m in gpt[1].messages] == ["system", "user", "assistant", "user"]
    assert [m["role"] for m in gpt[-1].messages] == ["system", "user"]


async def test_console_prints_a_failure_instead_of_a_traceback(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    cometapi.script(None, ServerError(503), times=10)
    env = _env(cometapi, redis_url, key_prefix, PYTHONPATH=str(ROOT), RETRY_ATTEMPTS="1")
    code, out, err = await _run(["console"], "hello\n", env, tmp_path)
    assert code == 0
    assert (
        out.strip()
        == "[teambot] The AI service isn't answering right now. Please try again in a minute."
    )
    assert "Traceback" not in err


async def test_console_works_without_redis(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    cometapi.script("gpt-5.3-chat-latest", Reply("first answer"))
    env = _env(cometapi, None, key_prefix, PYTHONPATH=str(ROOT))
    code, out, _err = await _run(["console"], "one\ntwo\n", env, tmp_path)
    assert code == 0
    first, second_line = out.splitlines()
    assert first == "first answer"
    assert second_line.startswith("Echo: [")
    assert second_line.endswith("] two")
    second = cometapi.requests[-1]
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]


async def test_doctor_checks_config_redis_and_models(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = _env(cometapi, redis_url, key_prefix, PYTHONPATH=str(ROOT))
    code, out, _ = await _run(["doctor"], "", env, tmp_path)
    assert code == 0, out
    assert "ok  dialogue model gpt-5.3-chat-latest is available" in out
    assert "ok  summary model gemini-3.1-flash-lite is available" in out
    assert "ok  memory: Redis at REDIS_URL answers" in out

    cometapi.remove_model("gemini-3.1-flash-lite")
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    code, out, _ = await _run(["doctor"], "", env, tmp_path)
    assert code == 1
    assert "FAIL summary model gemini-3.1-flash-lite is NOT available" in out
    assert "FAIL memory: Redis at REDIS_URL does not answer" in out
    assert API_KEY not in out

    env["COMETAPI_API_KEY"] = "wrong-key-000000"
    code, out, _ = await _run(["doctor"], "", env, tmp_path)
    assert code == 1
    assert "answered HTTP 401" in out
