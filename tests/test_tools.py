"""The tool registry and dispatch: schemas from type hints, every failure reported to the
model as the tool result, parallel calls run concurrently."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from core.tools import BUILTIN_TOOLS, ToolContext, ToolError, ToolRegistry, run_tool_calls, tool
from core.types import ConversationKey, ToolCall

KEY = ConversationKey("console", "local", "me", "t")


async def _no_summary() -> str:
    return "nothing"


CTX = ToolContext(key=KEY, author=None, summarize=_no_summary)


@tool
async def add(a: Annotated[int, Field(description="first number")], b: int = 2) -> dict[str, int]:
    """Add two numbers."""
    return {"sum": a + b}


@tool
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "slept"


@tool
async def broken() -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


@tool
async def polite_failure() -> str:
    """Fails with a message for the model."""
    raise ToolError("the calendar is closed on Sundays")


@tool
async def huge() -> str:
    """Returns a lot."""
    return "x" * 50_000


def registry() -> ToolRegistry:
    return ToolRegistry([*BUILTIN_TOOLS, add, slow, broken, polite_failure, huge])


def call(name: str, arguments: str, ident: str = "c1") -> ToolCall:
    return ToolCall(id=ident, name=name, arguments=arguments)


def test_schema_is_generated_from_type_hints() -> None:
    spec = {s.name: s for s in registry().specs()}["add"]
    assert spec.description == "Add two numbers."
    assert spec.parameters["properties"]["a"] == {"type": "integer", "description": "first number"}
    assert spec.parameters["required"] == ["a"]
    assert "title" not in json.dumps(spec.parameters)
    # ctx parameters are not part of the schema
    summary = {s.name: s for s in registry().specs()}["summarize_conversation"]
    assert summary.parameters["properties"] == {}


def test_bad_tool_definitions_are_refused() -> None:
    async def undocumented(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="description"):
        ToolRegistry([undocumented])

    def not_async(x: int) -> int:
        """Sync."""
        return x

    with pytest.raises(TypeError, match="async"):
        ToolRegistry([not_async])  # type: ignore[list-item]


async def test_every_failure_becomes_a_tool_result() -> None:
    calls = [
        call("add", '{"a": 40}', "1"),
        call("nope", "{}", "2"),
        call("add", '{"a": 4', "3"),
        call("add", '{"a": "many"}', "4"),
        call("broken", "{}", "5"),
        call("polite_failure", "{}", "6"),
        call("slow", '{"seconds": 5}', "7"),
        call("huge", "{}", "8"),
        call("current_time", '{"timezone": "Mars/Olympus_Mons"}', "9"),
        call("current_time", '{"timezone": "Europe/Paris"}', "10"),
    ]
    results = await run_tool_calls(calls, registry(), CTX, time_limit=0.3, max_chars=1000)
    by_id = {r.tool_call_id: r.content for r in results}
    assert [r.tool_call_id for r in results] == [c.id for c in calls]
    assert json.loads(by_id["1"]) == {"sum": 42}
    assert "no tool named 'nope'" in by_id["2"] and "current_time" in by_id["2"]
    assert "not valid JSON" in by_id["3"]
    assert "invalid arguments" in by_id["4"] and "a:" in by_id["4"]
    assert "RuntimeError: disk on fire" in by_id["5"]
    assert by_id["6"] == "Error: the calendar is closed on Sundays"
    assert "did not finish within 0.3 seconds" in by_id["7"]
    assert len(by_id["8"]) < 1100 and "truncated: 49000 more characters" in by_id["8"]
    assert "not an IANA time zone" in by_id["9"]
    assert json.loads(by_id["10"])["timezone"] == "Europe/Paris"


async def test_parallel_calls_run_concurrently() -> None:
    calls = [call("slow", '{"seconds": 0.3}', str(i)) for i in range(5)]
    started = time.monotonic()
    results = await run_tool_calls(calls, registry(), CTX, time_limit=5, max_chars=100)
    assert time.monotonic() - started < 1.0
    assert {r.content for r in results} == {"slept"}


def test_extra_modules_load_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path
    (folder / "team_tools_example.py").write_text(
        "from core.tools import tool\n\n"
        "@tool\nasync def ping(host: str) -> str:\n"
        "    '''Ping a host.'''\n    return 'pong ' + host\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    reg = ToolRegistry(BUILTIN_TOOLS)
    added = reg.load_module("team_tools_example")
    assert [t.name for t in added] == ["ping"]
    assert "ping" in reg.names()
    with pytest.raises(ValueError, match="cannot import"):
        reg.load_module("no_such_module_here")
    sys.modules.pop("team_tools_example", None)
