"""The MCP servers of one process: their tools as a `ToolSource` for the registry, the
status report for `teambot doctor`, and the description of a call awaiting approval."""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types
from dotenv import dotenv_values

from core import metrics
from core.providers.base import ToolSpec
from core.settings import Settings
from core.tools.mcp_servers.config import ServerConfig, load_config
from core.tools.mcp_servers.connection import (
    CallFailed,
    McpOptions,
    ServerConnection,
    Status,
)
from core.tools.mcp_servers.render import describe_call, exposed_name, render_result
from core.tools.registry import AnyTool, ToolContext, ToolError

__all__ = ["McpManager", "McpTool", "ServerReport", "describe_pending", "render_report"]


@dataclass(frozen=True, slots=True, eq=False)
class McpTool:
    """One tool of one MCP server, as the registry and the approval flow see it."""

    name: str  # as the model sees it: SERVER__tool, made valid and unique
    server: str
    remote: str  # the server's own name for it
    description: str
    parameters: dict[str, Any]
    needs_approval: bool
    timeout: float
    title: str | None = None
    read_only: bool | None = None
    connection: ServerConnection | None = field(default=None, repr=False)

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    def describe(self, arguments: Mapping[str, Any] | str | None) -> str:
        """The pending call for the person who approves it (≤ 1,500 characters)."""
        return describe_call(self.server, self.remote, arguments, title=self.title)

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        """Call the tool on its server; every failure is a ToolError the model can read."""
        assert self.connection is not None
        metrics.MCP_CALLS.labels(self.server, self.remote).inc()
        started = time.monotonic()
        try:
            # The SDK's own timeout answers first; the dispatcher's (0.5 s later) is a backstop.
            result = await self.connection.call(self.remote, arguments, self.timeout - 0.5)
        except CallFailed as error:
            metrics.MCP_ERRORS.labels(self.server, self.remote, error.kind).inc()
            raise
        except asyncio.CancelledError:  # the dispatcher's time limit, or shutting down
            metrics.MCP_ERRORS.labels(self.server, self.remote, "cancelled").inc()
            raise
        finally:
            metrics.MCP_CALL_SECONDS.labels(self.server, self.remote).observe(
                time.monotonic() - started
            )
        text = render_result(result)
        if result.is_error:
            metrics.MCP_ERRORS.labels(self.server, self.remote, "tool").inc()
            raise ToolError(f"{self.remote} (MCP server {self.server}) failed: {text}")
        return text


@dataclass(frozen=True, slots=True)
class ServerReport:
    """One server's state, for `teambot doctor`."""

    name: str
    transport: str
    target: str  # the command, or the URL without credentials or query
    status: Status
    error: str | None  # why it is down (or was, while connecting again)
    tools: tuple[str, ...]  # names as the model sees them
    needs_approval: frozenset[str]
    connected_since: float | None

    def render(self) -> str:
        head = f"{self.name} ({self.transport} {self.target}): {self.status}"
        if self.status != "connected" and self.error:
            head += f", last error: {self.error}"
        if self.status != "connected":
            return head
        if not self.tools:
            return head + ", no tools"
        listed = ", ".join(
            name + (" (asks first)" if name in self.needs_approval else "") for name in self.tools
        )
        return f"{head}, {len(self.tools)} tool(s): {listed}"


def describe_pending(tool: AnyTool, arguments: Mapping[str, Any] | str | None) -> str:
    """What a person approves: for an MCP tool its server, tool and the arguments
    pretty-printed; for a built-in tool the same without a server (≤ 1,500 characters)."""
    if isinstance(tool, McpTool):
        return tool.describe(arguments)
    return describe_call(None, tool.name, arguments)


def render_report(reports: Sequence[ServerReport]) -> str:
    """Plain lines, one per server."""
    if not reports:
        return "MCP servers: none configured (MCP_CONFIG is not set)."
    return "\n".join(["MCP servers:", *(f"- {report.render()}" for report in reports)])


def _schema(tool: mcp_types.Tool) -> dict[str, Any]:
    schema = dict(tool.input_schema)
    schema.setdefault("type", "object")
    return schema


class McpManager:
    """One shared connection per configured server, started in the background."""

    def __init__(self, servers: Sequence[ServerConfig], options: McpOptions | None = None) -> None:
        self.options = options or McpOptions()
        names = [server.name for server in servers]
        duplicates = [name for name, n in collections.Counter(names).items() if n > 1]
        if duplicates:
            raise ValueError(f"two MCP servers are named {duplicates[0]!r}")
        self._connections = [ServerConnection(s, self.options, self._changed) for s in servers]
        self._offered: dict[str, McpTool] = {}
        self._known: dict[str, McpTool] = {}
        self._change = asyncio.Event()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, environ: Mapping[str, str] | None = None
    ) -> McpManager | None:
        """The servers of MCP_CONFIG (None when it is unset). `${VAR}` comes from `environ`,
        by default the process environment over `.env`. Raises ConfigError."""
        if settings.mcp_config is None:
            return None
        if environ is None:
            env_file = settings.model_config.get("env_file")
            values: dict[str, str] = {}
            if isinstance(env_file, str | Path) and Path(env_file).is_file():
                values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
            environ = {**values, **os.environ}
        servers = load_config(settings.mcp_config, environ)
        return cls(servers, options_from(settings))

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Connect to every server in the background; returns at once."""
        for connection in self._connections:
            connection.start()

    async def stop(self) -> None:
        """Disconnect from every server and stop the stdio servers' processes."""
        await asyncio.gather(*(c.stop() for c in self._connections))

    async def settle(self) -> None:
        """Wait until every server has connected or failed at least once (`doctor` and
        tests; bound it with `asyncio.timeout`)."""
        while any(c.status == "connecting" and c.last_error is None for c in self._connections):
            await self.changed()

    async def wait_for(self, *names: str) -> None:
        """Wait until the named tools (as the model sees them) are offered."""
        while not all(name in self._offered for name in names):
            await self.changed()

    async def changed(self) -> None:
        """Wait for the next change of a server's status or tools."""
        self._change.clear()
        await self._change.wait()

    # --- the registry's view -------------------------------------------------------------

    def tools(self) -> Mapping[str, McpTool]:
        return self._offered

    def find(self, name: str) -> McpTool | None:
        return self._offered.get(name) or self._known.get(name)

    def report(self) -> list[ServerReport]:
        by_server: dict[str, list[McpTool]] = collections.defaultdict(list)
        for item in self._offered.values():
            by_server[item.server].append(item)
        return [
            ServerReport(
                name=c.name,
                transport=c.config.transport,
                target=c.config.target,
                status=c.status,
                error=c.last_error,
                tools=tuple(sorted(t.name for t in by_server[c.name])),
                needs_approval=frozenset(t.name for t in by_server[c.name] if t.needs_approval),
                connected_since=c.connected_since,
            )
            for c in self._connections
        ]

    def _changed(self) -> None:
        pairs = [(c, t) for c in self._connections for t in c.tools]
        names = [exposed_name(c.name, t.name) for c, t in pairs]
        counts = collections.Counter(names)
        offered: dict[str, McpTool] = {}
        for (connection, remote), name in zip(pairs, names, strict=True):
            if counts[name] > 1:
                name = exposed_name(connection.name, remote.name, hashed=True)
            offered[name] = self._tool(connection, remote, name)
        self._offered = offered
        self._known.update(offered)
        self._change.set()

    def _tool(self, connection: ServerConnection, remote: mcp_types.Tool, name: str) -> McpTool:
        config = connection.config
        annotations = remote.annotations
        read_only = annotations.read_only_hint if annotations else None
        title = remote.title or (annotations.title if annotations else None)
        description = (remote.description or "").strip() or (
            f"{title or remote.name} (a tool of the MCP server {config.name})"
        )
        return McpTool(
            name=name,
            server=config.name,
            remote=remote.name,
            description=description,
            parameters=_schema(remote),
            needs_approval=config.needs_approval(read_only),
            timeout=(config.timeout or self.options.call_timeout) + 0.5,
            title=title,
            read_only=read_only,
            connection=connection,
        )


def options_from(settings: Settings) -> McpOptions:
    return McpOptions(
        connect_timeout=settings.mcp_connect_timeout,
        retry_initial=settings.mcp_retry_initial,
        retry_max=settings.mcp_retry_max,
        refresh_seconds=settings.mcp_refresh_seconds,
        call_timeout=settings.tool_timeout_seconds,
    )
