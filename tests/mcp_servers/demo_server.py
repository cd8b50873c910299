"""A demo MCP server (the SDK's MCPServer): in-process via `build()`, as a stdio process
(`python demo_server.py [NAME]`), or over Streamable HTTP (see `harness.py`).

Tools: `echo` (read-only), `add` (structured result), `write_note` (changes something),
`fail` (an error result), `picture` (image content), `pid`, `slow`, `crash` (the process
exits mid-call), `secret_env` (reads an environment variable), `grow` (adds a tool and
says so on the change stream)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
    ToolAnnotations,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

READ_ONLY = ToolAnnotations(read_only_hint=True)
# The smallest valid PNG (1x1, transparent).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6300010000050001"
    "0d0a2db40000000049454e44ae426082"
)


class Sum(BaseModel):
    total: int
    terms: list[int]


def build(name: str = "demo") -> MCPServer:
    server = MCPServer(name)

    @server.tool(annotations=READ_ONLY)
    def echo(text: Annotated[str, Field(description="what to say back")]) -> str:
        """Say the text back."""
        return text

    @server.tool(annotations=READ_ONLY)
    def add(a: int, b: int) -> Sum:
        """Add two integers."""
        return Sum(total=a + b, terms=[a, b])

    @server.tool(title="Write a note")
    def write_note(title: str, body: str = "") -> str:
        """Store a note (changes something)."""
        return f"saved {title!r} ({len(body)} characters)"

    @server.tool(annotations=READ_ONLY)
    def fail(reason: str) -> str:
        """Always fails."""
        raise ToolError(f"cannot do it: {reason}")

    @server.tool(annotations=READ_ONLY)
    def picture() -> CallToolResult:
        """A picture, its caption, an embedded text resource and a link."""
        return CallToolResult(
            content=[
                ImageContent(data=base64.b64encode(PNG).decode(), mime_type="image/png"),
                TextContent(text="a tiny transparent square"),
                EmbeddedResource(
                    resource=TextResourceContents(uri="notes://1", text="the note's text")
                ),
                ResourceLink(name="spec", uri="https://example.com/spec", mime_type="text/html"),
            ]
        )

    @server.tool(annotations=READ_ONLY)
    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    @server.tool(annotations=READ_ONLY)
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "slept"

    @server.tool()
    def crash() -> str:
        """The server process exits in the middle of the call."""
        print("demo server: crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)

    @server.tool(annotations=READ_ONLY)
    def secret_env(variable: str) -> str:
        """The value of an environment variable of the server process."""
        return os.environ.get(variable, "(unset)")

    @server.tool()
    async def grow(tool_name: str, ctx: Context) -> str:
        """Add a tool named `tool_name`, and tell the clients that the list changed."""

        def extra() -> str:
            return "I am new"

        server.add_tool(extra, name=tool_name, description="A tool added at run time.")
        await ctx.notify_tools_changed()  # to `subscriptions/listen` streams (2026 protocol)
        if ctx.session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await ctx.session.send_tool_list_changed()  # a notification, to older clients
        return "added"

    return server


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "demo").run()
