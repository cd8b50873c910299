"""Tools from real MCP servers (the SDK's MCPServer): in-process, a stdio process and
Streamable HTTP on 127.0.0.1, through the registry, the dispatcher and Engine.reply against
the fake CometAPI on both protocols. No process may outlive its test."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import mcp
import pytest
from mcp.server.mcpserver import MCPServer

from core import metrics
from core.engine import Engine
from core.tools import BUILTIN_TOOLS, ToolContext, ToolRegistry, run_tool_calls
from core.tools.mcp_servers import (
    McpManager,
    McpOptions,
    McpTool,
    ServerConfig,
    connection,
    render_report,
)
from core.types import Author, ConversationKey, Incoming
from core.types import ToolCall as CoreToolCall
from tests.fakes.cometapi import FakeCometAPI, Reply, ToolCall
from tests.mcp_servers.demo_server import build
from tests.mcp_servers.harness import DEMO, HttpServer, child_pids
from tests.support import RecordingSink

GPT = "gpt-5.3-chat-latest"
FLASH = "gemini-3.1-flash-lite"
ROUTES = {"openai": f"openai:{GPT}", "gemini": f"gemini:{FLASH}"}
KEY = ConversationKey("console", "local", "me", "t1")
FAST = McpOptions(
    connect_timeout=10, retry_initial=0.05, retry_max=0.3, refresh_seconds=30, call_timeout=5
)
FAST_SETTINGS = {"mcp_retry_initial": 0.05, "mcp_retry_max": 0.3, "mcp_connect_timeout": 10}
STDIO = {"command": sys.executable, "args": [str(DEMO)]}

EngineWith = Callable[..., contextlib.AbstractAsyncContextManager[Engine]]


async def _no_summary() -> str:
    return ""


CTX = ToolContext(key=KEY, author=None, summarize=_no_summary)


@pytest.fixture(autouse=True)
def no_stray_processes() -> Iterator[None]:
    before = child_pids()
    yield
    # a stdio server is stopped before its manager's stop() returns
    left = child_pids() - before
    assert not left, f"MCP server processes left running: {left}"


@contextlib.asynccontextmanager
async def running(*servers: ServerConfig, options: McpOptions = FAST) -> AsyncIterator[McpManager]:
    manager = McpManager(servers, options)
    manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def ready(manager: McpManager, *names: str) -> None:
    async with asyncio.timeout(15):
        await manager.wait_for(*names)


async def call(registry: ToolRegistry, name: str, arguments: dict[str, Any]) -> str:
    (message,) = await run_tool_calls(
        [CoreToolCall(id="c1", name=name, arguments=json.dumps(arguments))],
        registry,
        CTX,
        time_limit=20,
        max_chars=2000,
    )
    return message.content


def write_config(tmp_path: Path, servers: dict[str, Any]) -> Path:
    path = tmp_path / ".mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def declared(request: Any) -> dict[str, dict[str, Any]]:
    """Function name -> parameters schema, as the request declared them."""
    found: dict[str, dict[str, Any]] = {}
    for entry in request.json["tools"]:
        if request.protocol == "openai":
            found[entry["function"]["name"]] = entry["function"]["parameters"]
        else:
            for declaration in entry["functionDeclarations"]:
                found[declaration["name"]] = declaration["parametersJsonSchema"]
    return found


async def ask(engine: Engine, text: str) -> RecordingSink:
    sink = RecordingSink()
    incoming = Incoming(key=KEY, event_id=f"ev-{text}", author=Author("U1", "Ana"), text=text)
    await engine.reply(incoming, sink)
    return sink


# --- through Engine.reply, both protocols -------------------------------------------------


@pytest.mark.parametrize("protocol", ["openai", "gemini"])
async def test_in_process_tools_reach_the_model_and_a_call_round_trips(
    engine_with: EngineWith, cometapi: FakeCometAPI, protocol: str
) -> None:
    server = build("demo")
    schema = {t.name: t.input_schema for t in await server.list_tools()}
    model = GPT if protocol == "openai" else FLASH
    cometapi.script(model, Reply("Adding.", tool_calls=[ToolCall("demo__add", {"a": 2, "b": 40})]))
    async with (
        engine_with(dialogue_route=ROUTES[protocol]) as engine,
        running(ServerConfig("demo", "memory", server=server)) as manager,
    ):
        engine.tools.add_source(manager)
        await ready(manager, "demo__add")
        sink = await ask(engine, "What is 2 + 40?")
    first, second = cometapi.requests_for(model)
    tools = declared(first)
    assert {"current_time", "demo__echo", "demo__add", "demo__write_note"} <= set(tools)
    assert tools["demo__echo"] == schema["echo"]  # the server's JSON Schema, as given
    ((_name, content),) = second.tool_results
    assert '"total": 42' in content.replace("\\", "")
    assert sink.final is not None and "42" in sink.final
    assert cometapi.rejected == []


@pytest.mark.parametrize("protocol", ["openai", "gemini"])
async def test_a_stdio_server_from_mcp_config_runs_with_the_engine(
    engine_with: EngineWith, cometapi: FakeCometAPI, tmp_path: Path, protocol: str
) -> None:
    path = write_config(tmp_path, {"files": {**STDIO, "exclude": ["crash", "grow"]}})
    model = GPT if protocol == "openai" else FLASH
    cometapi.script(model, Reply(tool_calls=[ToolCall("files__echo", {"text": "from stdio"})]))
    async with engine_with(
        mcp_config=str(path), dialogue_route=ROUTES[protocol], **FAST_SETTINGS
    ) as engine:
        assert engine.mcp is not None
        await ready(engine.mcp, "files__echo")
        sink = await ask(engine, "say it")
        pid = await call(engine.tools, "files__pid", {})
    first, second = cometapi.requests_for(model)
    names = set(declared(first))
    assert "files__echo" in names and "files__crash" not in names and "files__grow" not in names
    assert "from stdio" in second.tool_results[0][1]
    assert sink.final is not None and "from stdio" in sink.final
    assert int(pid) not in child_pids()  # Engine.close stopped the process


async def test_a_streamable_http_server_gets_its_headers_and_round_trips(
    engine_with: EngineWith, cometapi: FakeCometAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAMBOT_TEST_TOKEN", "tok-123456")
    http = HttpServer(lambda: build("web"))
    await http.start()
    path = write_config(
        tmp_path,
        {
            "web": {
                "type": "http",
                "url": http.url,
                "headers": {"Authorization": "Bearer ${TEAMBOT_TEST_TOKEN}"},
                "include": ["echo", "write_*"],
            }
        },
    )
    cometapi.script(GPT, Reply(tool_calls=[ToolCall("web__echo", {"text": "over http"})]))
    try:
        async with engine_with(mcp_config=str(path), **FAST_SETTINGS) as engine:
            assert engine.mcp is not None
            await ready(engine.mcp, "web__echo")
            sink = await ask(engine, "say it")
            (report,) = engine.mcp.report()
    finally:
        await http.stop()
    first, second = cometapi.requests_for(GPT)
    assert {n for n in declared(first) if n.startswith("web__")} == {"web__echo", "web__write_note"}
    assert "over http" in second.tool_results[0][1]
    assert sink.final is not None and "over http" in sink.final
    assert "Bearer tok-123456" in http.authorizations
    assert (report.status, report.transport, report.target) == ("connected", "http", http.url)
    assert report.needs_approval == {"web__write_note"}


# --- the manager, registry and dispatcher --------------------------------------------------


async def test_results_errors_approval_and_timeouts_from_a_server() -> None:
    servers = (
        ServerConfig("demo", "memory", server=build("demo")),
        ServerConfig("strict", "memory", server=build("strict"), approval="always", timeout=0.3),
        ServerConfig("lax", "memory", server=build("lax"), approval="never", include=("w*",)),
    )
    async with running(*servers) as manager:
        registry = ToolRegistry(BUILTIN_TOOLS)
        registry.add_source(manager)
        await ready(manager, "demo__echo", "strict__slow", "lax__write_note")
        assert await call(registry, "demo__echo", {"text": "hi"}) == "hi"
        picture = await call(registry, "demo__picture", {})
        assert picture.splitlines() == [
            "[image: image/png, 69 bytes (not shown)]",
            "a tiny transparent square",
            "[resource <notes://1>]",
            "the note's text",
            "[resource link: spec <https://example.com/spec> (text/html)]",
        ]
        assert await call(registry, "demo__fail", {"reason": "no disk"}) == (
            "Error: fail (MCP server demo) failed: Error executing tool fail: cannot do it: no disk"
        )
        bad = await call(registry, "demo__add", {"a": "many"})
        assert bad.startswith("Error: add (MCP server demo) failed:") and "b" in bad
        slow = await call(registry, "strict__slow", {"seconds": 3})
        assert slow == "Error: The MCP server strict did not answer slow within 0.3 seconds."
        huge = await call(registry, "demo__echo", {"text": "x" * 5000})
        assert huge.endswith("[truncated: 3000 more characters]")
        approval = {n: t.needs_approval for n, t in manager.tools().items()}
    assert approval["demo__echo"] is False  # readOnlyHint
    assert approval["demo__write_note"] is True  # no hint: asks first
    assert approval["strict__echo"] is True  # "always"
    assert approval["lax__write_note"] is False  # "never"
    assert [n for n in approval if n.startswith("lax__")] == ["lax__write_note"]
    note = manager.find("demo__write_note")
    assert isinstance(note, McpTool)
    assert note.describe('{"title": "Q3"}') == (
        'MCP server: demo\nTool: write_note (Write a note)\nArguments:\n{\n  "title": "Q3"\n}'
    )


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def test_calls_errors_and_latency_are_counted_per_server_and_tool() -> None:
    before = (
        sample("teambot_mcp_calls_total", server="counted", tool="echo"),
        sample("teambot_mcp_errors_total", server="counted", tool="fail", kind="tool"),
        sample("teambot_mcp_call_seconds_count", server="counted", tool="echo"),
    )
    async with running(ServerConfig("counted", "memory", server=build("counted"))) as manager:
        registry = ToolRegistry()
        registry.add_source(manager)
        await ready(manager, "counted__echo")
        assert sample("teambot_mcp_server_up", server="counted") == 1
        for _ in range(3):
            await call(registry, "counted__echo", {"text": "x"})
        await call(registry, "counted__fail", {"reason": "x"})
    after = (
        sample("teambot_mcp_calls_total", server="counted", tool="echo"),
        sample("teambot_mcp_errors_total", server="counted", tool="fail", kind="tool"),
        sample("teambot_mcp_call_seconds_count", server="counted", tool="echo"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 3]
    assert sample("teambot_mcp_server_up", server="counted") == 0
    assert b'teambot_mcp_calls_total{server="counted",tool="echo"}' in metrics.render()


def named(name: str, tools: Sequence[str]) -> MCPServer:
    server = MCPServer(name)
    for tool_name in tools:

        def handler(text: str = "") -> str:
            return f"{name}:{text}"

        server.add_tool(handler, name=tool_name, description=f"{tool_name} of {name}")
    return server


async def test_two_servers_never_share_a_tool_name() -> None:
    servers = (
        ServerConfig("one", "memory", server=named("one", ["echo"])),
        ServerConfig("two", "memory", server=named("two", ["echo"])),
        ServerConfig("a", "memory", server=named("a", ["b__c"])),
        ServerConfig("a__b", "memory", server=named("a__b", ["c"])),
        ServerConfig("odd.name", "memory", server=named("odd", ["x" * 70])),
    )
    async with running(*servers) as manager:
        registry = ToolRegistry()
        registry.add_source(manager)
        async with asyncio.timeout(10):
            await manager.settle()
        names = registry.names()
        assert len(names) == 5
        assert await call(registry, "one__echo", {"text": "hi"}) == "one:hi"
        assert await call(registry, "two__echo", {"text": "hi"}) == "two:hi"
        split = [n for n in names if n.startswith("a__b__c_")]
        assert len(split) == 2 and "a__b__c" not in names
        assert sorted([await call(registry, n, {"text": "z"}) for n in split]) == ["a:z", "a__b:z"]
    (odd,) = [n for n in names if n.startswith("odd_name__")]
    assert len(odd) == 64 and all(len(n) <= 64 for n in names)


async def test_a_server_down_at_start_up_comes_back_with_its_tools(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="core")
    http = HttpServer(lambda: build("late"))
    secret_url = http.url + "?api_key=very-secret-key"
    servers = (
        ServerConfig("late", "http", url=secret_url, headers={"X-Key": "hdr-secret-value"}),
        ServerConfig("ghost", "stdio", command="/nonexistent/mcp-server"),
    )
    async with running(*servers) as manager:
        registry = ToolRegistry()
        registry.add_source(manager)
        async with asyncio.timeout(10):
            await manager.settle()  # start-up is never blocked by a server that is down
        late, ghost = manager.report()
        assert (late.status, ghost.status) != ("connected", "connected")
        assert ghost.error == "command not found: /nonexistent/mcp-server"
        assert late.error is not None and "ConnectError" in late.error
        assert registry.names() == []
        await http.start()
        try:
            await ready(manager, "late__echo")
            assert await call(registry, "late__echo", {"text": "back"}) == "back"
            # the server goes away: its tools disappear, a call explains why
            await http.stop()
            async with asyncio.timeout(10):
                while "late__echo" in registry.names():
                    await manager.changed()
            down = await call(registry, "late__echo", {"text": "again"})
            assert down.startswith("Error: The MCP server late ")
            assert "it is being retried in the background" in down
            report = render_report(manager.report())
        finally:
            await http.stop()
    assert "- late (http http://127.0.0.1:" in report and "ghost (stdio " in report
    logged = caplog.text + report
    assert "very-secret-key" not in logged and "hdr-secret-value" not in logged


async def test_a_stdio_server_that_crashes_mid_call_is_restarted() -> None:
    server = ServerConfig("demo", "stdio", command=sys.executable, args=(str(DEMO),))
    async with running(server) as manager:
        registry = ToolRegistry()
        registry.add_source(manager)
        await ready(manager, "demo__crash")
        first_pid = int(await call(registry, "demo__pid", {}))
        since = manager.report()[0].connected_since
        crashed = await call(registry, "demo__crash", {})
        assert crashed == (
            "Error: The MCP server demo stopped while running crash; it is being restarted, "
            "so the tool may work again in a moment."
        )
        async with asyncio.timeout(15):
            while (report := manager.report()[0]).connected_since in (None, since):
                await manager.changed()
        assert report.error is None
        second_pid = int(await call(registry, "demo__pid", {}))
        assert second_pid != first_pid
        assert first_pid not in child_pids() and second_pid in child_pids()
    assert manager.report()[0].status == "stopped"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_new_tool_appears_when_the_server_says_its_list_changed(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """2026 servers: a `subscriptions/listen` stream; handshake-era servers (most of those
    deployed today): the `notifications/tools/list_changed` notification."""
    monkeypatch.setattr(connection, "Client", functools.partial(mcp.Client, mode=mode))
    async with running(ServerConfig("demo", "memory", server=build("demo"))) as manager:
        registry = ToolRegistry()
        registry.add_source(manager)
        await ready(manager, "demo__grow")
        assert await call(registry, "demo__echo", {"text": mode}) == mode
        assert await call(registry, "demo__grow", {"tool_name": "fresh"}) == "added"
        await ready(manager, "demo__fresh")  # well before MCP_REFRESH_SECONDS
        assert await call(registry, "demo__fresh", {}) == "I am new"
