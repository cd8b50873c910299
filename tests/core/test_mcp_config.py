"""MCP_CONFIG parsing, tool names, result rendering, call descriptions and the dynamic
registry: no server needed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    TextContent,
)

from core.engine import Engine
from core.providers.base import ToolSpec
from core.settings import ConfigError
from core.tools import BUILTIN_TOOLS, ToolRegistry
from core.tools.mcp_servers import (
    McpManager,
    McpTool,
    ServerConfig,
    describe_call,
    describe_pending,
    exposed_name,
    load_config,
    render_result,
)
from core.tools.registry import AnyTool
from tests.support import make_settings

SECRET = "ghp_SuperSecretToken123"
ENV = {"GITHUB_TOKEN": SECRET, "EMPTY": "", "HOST": "mcp.example.com"}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / ".mcp.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_full_file_is_read_with_variables_expanded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "mcpServers": {
                "files": {
                    "command": "npx",
                    "args": ["-y", "files-server", "--root=${ROOT:-/srv/files}"],
                    "env": {"TOKEN": "${GITHUB_TOKEN}", "MODE": "${EMPTY:-fallback}"},
                    "exclude": ["delete_*"],
                },
                "issues": {
                    "type": "http",
                    "url": "https://${HOST}/mcp?key=${GITHUB_TOKEN}",
                    "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}"},
                    "include": ["search_*", "get_issue"],
                    "approval": "always",
                    "timeout": 45,
                },
                "old": {"command": "old-server", "disabled": True},
                "remote": {"type": "streamable-http", "url": "http://127.0.0.1:9000/mcp"},
            }
        },
    )
    files, issues, remote = load_config(path, ENV)
    assert files == ServerConfig(
        "files",
        "stdio",
        command="npx",
        args=("-y", "files-server", "--root=/srv/files"),
        env={"TOKEN": SECRET, "MODE": "fallback"},
        exclude=("delete_*",),
    )
    assert issues.transport == "http"
    assert issues.url == f"https://mcp.example.com/mcp?key={SECRET}"
    assert issues.headers == {"Authorization": f"Bearer {SECRET}"}
    assert (issues.approval, issues.timeout, issues.include) == (
        "always",
        45.0,
        ("search_*", "get_issue"),
    )
    assert remote.transport == "http"
    # secrets stay out of reprs and of what a person is shown
    assert SECRET not in repr(files) + repr(issues)
    assert issues.target == "https://mcp.example.com/mcp"
    assert SECRET in issues.secrets() and f"key={SECRET}" in issues.secrets()
    assert files.secrets() == [SECRET, "fallback"]  # values from ${VAR} and of env
    assert files.target == "npx"


def test_include_exclude_and_approval_rules() -> None:
    server = ServerConfig(
        "s", "stdio", command="x", include=("get_*", "list_*"), exclude=("*_all",)
    )
    assert [n for n in ("get_a", "list_b", "list_all", "delete") if server.allows(n)] == [
        "get_a",
        "list_b",
    ]
    auto = ServerConfig("s", "stdio", command="x")
    assert auto.needs_approval(None) and auto.needs_approval(False)
    assert not auto.needs_approval(True)
    assert ServerConfig("s", "stdio", command="x", approval="always").needs_approval(True)
    assert not ServerConfig("s", "stdio", command="x", approval="never").needs_approval(False)


def _server(**entry: Any) -> dict[str, Any]:
    return {"mcpServers": {"tools": entry}}


BAD_FILES: list[tuple[Any, str]] = [
    ("{not json", "is not valid JSON: Expecting property name enclosed in double quotes at line 1"),
    ([1, 2], 'it must be a JSON object with an "mcpServers" object'),
    ({"servers": {}}, 'it must be a JSON object with an "mcpServers" object'),
    ({"mcpServers": {"tools": "npx"}}, 'server "tools" must be an object'),
    (_server(type="websocket", url="ws://x"), "unknown type 'websocket'"),
    (_server(type="sse", url="http://x/sse"), 'type "sse", which teambot does not support'),
    (_server(args=["x"]), 'server "tools" needs a "command"'),
    (_server(command="x", args="--flag"), '"args" must be a list of strings'),
    (_server(command="x", env={"N": 1}), '"env" must be an object whose values are strings'),
    (_server(type="http"), 'server "tools" needs a "url"'),
    (_server(type="http", url="ftp://x"), '"url" must be an http:// or https:// address'),
    (_server(type="http", url="https://x", headers=["a"]), '"headers" must be an object'),
    (_server(command="x", env={"T": "${NOT_SET_ANYWHERE}"}), "uses ${NOT_SET_ANYWHERE}, which"),
    (_server(command="x", approval="sometimes"), '"approval" must be "always", "never"'),
    (_server(command="x", timeout=0), '"timeout" must be a positive number'),
    (_server(command="x", include="get_*"), '"include" must be a list of strings'),
    (_server(command="x", exlude=["a"]), "has unknown key 'exlude'"),
]


@pytest.mark.parametrize(("data", "expected"), BAD_FILES)
def test_a_bad_file_is_one_sentence_naming_mcp_config(
    tmp_path: Path, data: Any, expected: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    message = str(caught.value)
    assert message.startswith(f"MCP_CONFIG ({path})")
    assert expected in message
    assert "\n" not in message and message.endswith(".")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_missing_file_and_secrets_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^MCP_CONFIG \(.*nope\.json\) does not exist\.$"):
        load_config(tmp_path / "nope.json", ENV)
    path = write(
        tmp_path,
        _server(type="http", url="ftp://${GITHUB_TOKEN}", headers={"A": "${GITHUB_TOKEN}"}),
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert SECRET not in str(caught.value)


async def test_engine_start_refuses_a_bad_mcp_config(tmp_path: Path) -> None:
    path = write(tmp_path, _server(command="x", env={"T": "${NOT_SET_ANYWHERE}"}))
    settings = make_settings(mcp_config=str(path))
    with pytest.raises(ConfigError, match=r"^MCP_CONFIG"):
        await Engine.start(settings)
    assert McpManager.from_settings(make_settings()) is None


def test_mcp_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_CONFIG", "/etc/teambot/mcp.json")
    monkeypatch.setenv("MCP_RETRY_MAX", "5")
    settings = make_settings()
    assert str(settings.mcp_config) == "/etc/teambot/mcp.json"
    assert settings.mcp_retry_max == 5.0
    with pytest.raises(ConfigError, match=r"^MCP_CONNECT_TIMEOUT is invalid"):
        make_settings(mcp_connect_timeout=0)


NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def test_exposed_names_fit_both_model_apis_and_stay_unique() -> None:
    assert exposed_name("github", "create_issue") == "github__create_issue"
    odd = exposed_name("my.server", "do thing/now")
    assert NAME.match(odd) and odd.startswith("my_server__do_thing_now_")
    digit = exposed_name("9lives", "x")
    assert NAME.match(digit) and digit.startswith("_9lives__x_")
    long_one = exposed_name("s" * 40, "t" * 40)
    long_two = exposed_name("s" * 40, "t" * 39 + "u")
    assert len(long_one) == 64 and NAME.match(long_one)
    assert long_one != long_two
    # a collision is split by hashing both pairs
    assert exposed_name("a", "b__c") == exposed_name("a__b", "c")
    assert exposed_name("a", "b__c", hashed=True) != exposed_name("a__b", "c", hashed=True)


def test_results_are_rendered_as_text_for_the_model() -> None:
    text = render_result(CallToolResult(content=[TextContent(text="hello")]))
    assert text == "hello"
    structured = render_result(CallToolResult(content=[], structured_content={"n": 1}))
    assert json.loads(structured) == {"n": 1}
    both = render_result(
        CallToolResult(content=[TextContent(text='{"n": 1}')], structured_content={"n": 1})
    )
    assert both == '{"n": 1}'  # said once
    media = render_result(
        CallToolResult(
            content=[
                ImageContent(data="A" * 4000, mime_type="image/png"),
                EmbeddedResource(
                    resource=BlobResourceContents(uri="file:///a.bin", blob="AAAA", mime_type=None)
                ),
            ]
        )
    )
    assert media == (
        "[image: image/png, 2.9 KB (not shown)]\n"
        "[resource <file:///a.bin>: binary, 3 bytes (not shown)]"
    )
    assert render_result(CallToolResult(content=[], is_error=True)).startswith("The tool reported")


def test_a_pending_call_is_described_for_a_person() -> None:
    text = describe_call("github", "create_issue", '{"title": "Bug", "labels": ["p1"]}')
    assert text == (
        "MCP server: github\nTool: create_issue\nArguments:\n"
        '{\n  "title": "Bug",\n  "labels": [\n    "p1"\n  ]\n}'
    )
    assert describe_call("s", "t", "{}").endswith("(no arguments)")
    assert describe_call("s", "t", "{broken").endswith("Arguments:\n{broken")
    huge = describe_call("s", "t", {"body": "x" * 5000, "more": ["y" * 400] * 10})
    assert len(huge) <= 1500 and "more characters" in huge
    titled = describe_call("s", "write_note", {"a": 1}, title="Write a note")
    assert "Tool: write_note (Write a note)" in titled
    current_time = ToolRegistry(BUILTIN_TOOLS).get("current_time")
    assert current_time is not None
    builtin = describe_pending(current_time, '{"timezone": "UTC"}')
    assert builtin == 'Tool: current_time\nArguments:\n{\n  "timezone": "UTC"\n}'


class Source:
    """A ToolSource whose tools the test changes."""

    def __init__(self) -> None:
        self.offered: dict[str, AnyTool] = {}
        self.known: dict[str, AnyTool] = {}

    def tools(self) -> Mapping[str, AnyTool]:
        return self.offered

    def find(self, name: str) -> AnyTool | None:
        return self.offered.get(name) or self.known.get(name)


def mcp_tool(name: str) -> McpTool:
    return McpTool(
        name=name,
        server="s",
        remote=name,
        description="d",
        parameters={"type": "object", "properties": {"q": {"type": "string"}}},
        needs_approval=True,
        timeout=5.0,
    )


def test_the_registry_follows_its_sources() -> None:
    registry = ToolRegistry(BUILTIN_TOOLS)
    source = Source()
    registry.add_source(source)
    assert registry.names() == ["current_time", "summarize_conversation"]
    source.offered = {"s__search": mcp_tool("s__search"), "current_time": mcp_tool("current_time")}
    assert registry.names() == ["current_time", "s__search", "summarize_conversation"]
    specs = registry.specs()
    assert [s.name for s in specs] == registry.names()
    assert specs[1] == ToolSpec("s__search", "d", mcp_tool("x").parameters)
    # a source never hides a Python tool of the same name
    builtin = registry.get("current_time")
    assert builtin is not None and not builtin.needs_approval
    assert len(registry) == 3
    # a tool of a server that went down is no longer offered, but still found
    source.known, source.offered = dict(source.offered), {}
    assert registry.names() == ["current_time", "summarize_conversation"]
    found = registry.get("s__search")
    assert isinstance(found, McpTool) and found.needs_approval
    registry.remove_source(source)
    assert registry.get("s__search") is None
