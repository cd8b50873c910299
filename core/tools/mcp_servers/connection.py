"""One MCP server's connection, kept up in the background.

A supervisor task per server owns the SDK `Client` (its anyio scopes are entered and left
in that one task): connect, list the tools, follow list changes, re-list every
MCP_REFRESH_SECONDS (which doubles as a health check), and on any failure drop the tools,
wait with exponential backoff and start again. A stdio server is a child process: when it
exits (its stderr reaches end of file) it is restarted the same way. Calls come from other
tasks through `call()`, which never waits for a connection: a server that is not connected
is a `CallFailed` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError, StdioServerParameters, stdio_client
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, Subscription, SubscriptionLost
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, Implementation

from core import metrics
from core.tools.mcp_servers.config import ServerConfig
from core.tools.registry import ToolError

__all__ = ["CallFailed", "McpOptions", "ServerConnection", "Status"]

log = logging.getLogger(__name__)

Status = Literal["connecting", "connected", "down", "stopped"]
_PAGES = 100  # most tools/list pages read from one server (a paginator that never ends)


@dataclass(frozen=True, slots=True)
class McpOptions:
    """Timings shared by every server (from the MCP_* settings)."""

    connect_timeout: float = 20.0
    retry_initial: float = 1.0
    retry_max: float = 60.0
    refresh_seconds: float = 60.0
    call_timeout: float = 20.0
    stop_grace: float = 5.0


class CallFailed(ToolError):
    """A call that did not reach the tool or got no answer; `kind` labels the metric."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Lost(Exception):
    """The connection broke while it was up (the reason is in `ServerConnection._lost`)."""


def _client_info() -> Implementation:
    try:
        version = importlib.metadata.version("teambot")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return Implementation(name="teambot", version=version)


def _innermost(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        real = [e for e in error.exceptions if not isinstance(e, asyncio.CancelledError)]
        error = (real or list(error.exceptions))[0]
    return error


class _StderrTail:
    """A stdio server's stderr through a pipe: lines go to the debug log, the last few are
    kept for the report, and end of file means the process has exited."""

    def __init__(self, name: str, on_exit: Callable[[str], None]) -> None:
        read_fd, write_fd = os.pipe()
        self.file: TextIO = os.fdopen(write_fd, "w")
        self._read = os.fdopen(read_fd, "rb", buffering=0)
        self._name = name
        self._on_exit = on_exit
        self._spawned = False
        self._transport: asyncio.ReadTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self.lines: deque[str] = deque(maxlen=5)

    async def start(self) -> None:
        reader = asyncio.StreamReader(limit=1 << 20)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._read
        )
        self._task = asyncio.create_task(self._pump(reader), name=f"mcp-stderr-{self._name}")

    def spawned(self) -> None:
        """The child holds its own copy of the write end: close ours, so that end of file
        on the pipe means the child has exited."""
        self._spawned = True
        self.file.close()

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await reader.readline()
            except (ValueError, OSError):  # an over-long line, a closed pipe
                raw = b"\n"
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.lines.append(line[:500])
                log.debug("MCP server %s: %s", self._name, line)
        if self._spawned:
            self._on_exit(self.lines[-1] if self.lines else "")

    async def close(self) -> None:
        if not self.file.closed:
            self.file.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
        else:
            self._read.close()


class ServerConnection:
    """The shared connection to one server, for the whole process."""

    def __init__(
        self, config: ServerConfig, options: McpOptions, on_change: Callable[[], None]
    ) -> None:
        self.config = config
        self.options = options
        self.status: Status = "connecting"
        self.last_error: str | None = None
        self.tools: tuple[mcp_types.Tool, ...] = ()
        self.connected_since: float | None = None
        self.attempts = 0
        self._on_change = on_change
        self._client: Client | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._lost: str | None = None
        self._refresh = False
        self._stderr: _StderrTail | None = None
        self._task: asyncio.Task[None] | None = None
        self._secrets = config.secrets()

    @property
    def name(self) -> str:
        return self.config.name

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mcp-{self.name}")

    async def stop(self) -> None:
        """Leave the connection (a stdio server is shut down) within `stop_grace`."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            _done, pending = await asyncio.wait({task}, timeout=self.options.stop_grace)
            if pending:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._client = None
        self.tools = ()
        self.status = "stopped"
        metrics.MCP_SERVER_UP.labels(self.name).set(0)
        self._on_change()

    def _mark_lost(self, reason: str) -> None:
        if self._lost is None and not self._stopping:
            self._lost = reason
            self._wake.set()

    def _scrub(self, text: str) -> str:
        """Secrets (header and env values, the URL's query and credentials) never leave."""
        if self.config.url:
            text = text.replace(self.config.url, self.config.target)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:300]

    def _describe(self, error: BaseException) -> str:
        error = _innermost(error)
        if isinstance(error, TimeoutError):
            return f"no answer within {self.options.connect_timeout:g} seconds"
        if isinstance(error, FileNotFoundError) and self.config.transport == "stdio":
            return f"command not found: {self.config.command}"
        if isinstance(error, MCPError):
            text = error.message
        else:
            text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return self._scrub(text)

    async def _run(self) -> None:
        while not self._stopping:
            self._lost = None
            self._refresh = False
            self._stderr = None
            self._set_status("connecting")
            self.attempts += 1
            try:
                await self._session()
                reason = self._lost or "the connection ended"
            except asyncio.CancelledError:
                raise
            except Exception as error:
                reason = self._lost or self._describe(error)
            if self._stopping:
                break
            if self._stderr is not None and self._stderr.lines and "stderr" not in reason:
                reason += f" (stderr: {self._scrub(self._stderr.lines[-1])})"
            was_up = self.connected_since is not None
            self._set_status("down", reason)
            failures = 1 if was_up else self.attempts
            if was_up:
                self.attempts = 1
            delay = min(
                self.options.retry_max, self.options.retry_initial * 2 ** min(failures - 1, 30)
            )
            delay *= random.uniform(0.8, 1.0)
            log.warning(
                "MCP server %s is down (%s); trying again in %.1f s", self.name, reason, delay
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    while not self._stopping:
                        await self._wake.wait()
                        self._wake.clear()

    def _set_status(self, status: Status, error: str | None = None) -> None:
        self.status = status
        if status == "connected":
            self.connected_since = time.time()
            self.attempts = 0
            self.last_error = None
        elif status == "down":
            self.connected_since = None
            self.tools = ()
            self.last_error = error
        metrics.MCP_SERVER_UP.labels(self.name).set(1 if status == "connected" else 0)
        self._on_change()

    # --- one connection ------------------------------------------------------------------

    async def _session(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self.options.connect_timeout):
                client = await self._open(stack)
                tools = await self._list(client)
                await self._listen(stack, client)
            self.tools = tools
            self._client = client
            self._set_status("connected")
            log.info(
                "MCP server %s connected (%s), %d tool(s)",
                self.name,
                client.protocol_version,
                len(tools),
            )
            try:
                await self._watch(client)
            finally:
                self._client = None

    async def _open(self, stack: contextlib.AsyncExitStack) -> Client:
        config = self.config
        options: dict[str, Any] = {
            "cache": None,
            "message_handler": self._on_message,
            "client_info": _client_info(),
        }
        if config.transport == "memory":
            client = Client(config.server, **options)
        elif config.transport == "stdio":
            tail = _StderrTail(self.name, lambda last: self._mark_lost(self._scrub(_exited(last))))
            stack.push_async_callback(tail.close)
            await tail.start()
            self._stderr = tail
            parameters = StdioServerParameters(
                command=config.command,
                args=list(config.args),
                env=dict(config.env) or None,
                cwd=config.cwd,
            )
            client = Client(stdio_client(parameters, errlog=tail.file), **options)
        else:
            http = await stack.enter_async_context(
                httpx2.AsyncClient(
                    headers=dict(config.headers),
                    timeout=httpx2.Timeout(30.0, read=300.0),
                    follow_redirects=True,
                )
            )
            client = Client(streamable_http_client(config.url, http_client=http), **options)
        await stack.enter_async_context(client)
        if self._stderr is not None and config.transport == "stdio":
            self._stderr.spawned()
        return client

    async def _list(self, client: Client) -> tuple[mcp_types.Tool, ...]:
        found: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_PAGES):
            page = await client.list_tools(cursor=cursor)
            found.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tuple(t for t in found if self.config.allows(t.name))

    async def _listen(self, stack: contextlib.AsyncExitStack, client: Client) -> None:
        """Follow tool list changes where the server offers them: a `subscriptions/listen`
        stream (2026 protocol) or, on older connections, the notifications that reach
        `_on_message`."""
        capability = client.server_capabilities.tools
        if capability is None or not capability.list_changed:
            return
        try:
            subscription = await stack.enter_async_context(client.listen(tools_list_changed=True))
        except ListenNotSupportedError:
            return
        except MCPError as error:
            log.info("MCP server %s: no change stream (%s)", self.name, error.message)
            return
        follower = asyncio.create_task(self._follow(subscription), name=f"mcp-list-{self.name}")

        async def stop_following() -> None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

        stack.push_async_callback(stop_following)

    async def _follow(self, subscription: Subscription) -> None:
        try:
            async for _event in subscription:
                self._refresh = True
                self._wake.set()
            reason = "the server closed its change stream"
        except SubscriptionLost:
            reason = "the connection was lost"
        except Exception as error:
            reason = self._describe(error)
        self._mark_lost(reason)

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._refresh = True
            self._wake.set()
        elif isinstance(message, Exception):
            log.debug("MCP server %s sent something unreadable: %s", self.name, message)
        await anyio.lowlevel.checkpoint()

    async def _watch(self, client: Client) -> None:
        while True:
            try:
                async with asyncio.timeout(self.options.refresh_seconds):
                    await self._wake.wait()
            except TimeoutError:
                self._refresh = True
            self._wake.clear()
            if self._stopping:
                return
            if self._lost is not None:
                raise _Lost(self._lost)
            if self._refresh:
                self._refresh = False
                async with asyncio.timeout(self.options.connect_timeout):
                    tools = await self._list(client)
                if tools != self.tools:
                    self.tools = tools
                    log.info("MCP server %s now has %d tool(s)", self.name, len(tools))
                    self._on_change()

    # --- calls ---------------------------------------------------------------------------

    def unavailable(self) -> str:
        state = "is starting" if self.status == "connecting" else "is not reachable"
        if self.status == "stopped":
            state = "is stopped"
        why = f" ({self.last_error})" if self.last_error and self.status != "connected" else ""
        return (
            f"The MCP server {self.name} {state} right now{why}, so its tools cannot be used; "
            "it is being retried in the background."
        )

    async def call(self, tool: str, arguments: dict[str, Any], limit: float) -> CallToolResult:
        """Call `tool`; the server has `limit` seconds to answer."""
        client = self._client
        if client is None or self.status != "connected" or self._lost is not None:
            raise CallFailed(self.unavailable(), "unavailable")
        try:
            return await client.call_tool(tool, arguments, read_timeout_seconds=limit)
        except MCPError as error:
            if error.code == REQUEST_TIMEOUT:
                raise CallFailed(
                    f"The MCP server {self.name} did not answer {tool} within {limit:g} seconds.",
                    "timeout",
                ) from None
            if error.code == CONNECTION_CLOSED:
                self._mark_lost("the connection closed during a call")
                raise CallFailed(
                    f"The MCP server {self.name} stopped while running {tool}; it is being "
                    "restarted, so the tool may work again in a moment.",
                    "connection",
                ) from None
            raise CallFailed(
                f"The MCP server {self.name} refused the call to {tool}: "
                f"{self._scrub(error.message)}",
                "protocol",
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.TransportError) as e:
            reason = self._describe(e)
            self._mark_lost(reason)
            raise CallFailed(
                f"The connection to the MCP server {self.name} broke during {tool} ({reason}).",
                "connection",
            ) from None


def _exited(last_line: str) -> str:
    return "the process exited" + (f" (stderr: {last_line})" if last_line else "")
