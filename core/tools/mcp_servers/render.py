"""Text in and out of MCP tools: the names the models see, results as the text the model
reads, and a pending call described for the person who approves it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

__all__ = ["describe_call", "exposed_name", "render_result"]

#: What both model APIs accept as a function name (OpenAI: [A-Za-z0-9_-]{1,64}; Gemini
#: also starts with a letter or underscore).
VALID_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
DESCRIBE_LIMIT = 1500


def exposed_name(server: str, tool: str, *, hashed: bool = False) -> str:
    """`SERVER__tool` when that is a valid name; otherwise (or when `hashed`, to split a
    collision) sanitised and cut to fit 64 characters, with a short hash of the original
    pair so two different pairs never share a name."""
    raw = f"{server}__{tool}"
    if not hashed and VALID_NAME.match(raw):
        return raw
    digest = hashlib.sha256(f"{server}\x00{tool}".encode()).hexdigest()[:8]
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", raw)
    if not re.match(r"[A-Za-z_]", clean):
        clean = "_" + clean
    return f"{clean[: 64 - len(digest) - 1]}_{digest}"


def _size(data: str) -> str:
    """Approximate decoded size of base64 data, for people and models."""
    n = len(data) * 3 // 4
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _block(block: Any) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent):
        return f"[image: {block.mime_type}, {_size(block.data)} (not shown)]"
    if isinstance(block, AudioContent):
        return f"[audio: {block.mime_type}, {_size(block.data)} (not shown)]"
    if isinstance(block, ResourceLink):
        line = f"[resource link: {block.name} <{block.uri}>"
        if block.mime_type:
            line += f" ({block.mime_type})"
        line += "]"
        if block.description:
            line += f" {block.description}"
        return line
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return f"[resource <{resource.uri}>]\n{resource.text}"
        if isinstance(resource, BlobResourceContents):
            mime = resource.mime_type or "binary"
            return f"[resource <{resource.uri}>: {mime}, {_size(resource.blob)} (not shown)]"
    kind = getattr(block, "type", type(block).__name__)
    return f"[{kind} content (not shown)]"


def render_result(result: CallToolResult) -> str:
    """The text the model reads. Content blocks in order (text as is, media and binary
    resources as a short note); the structured result, as JSON, when no text says it
    already. The dispatcher caps the length (TOOL_RESULT_MAX_CHARS)."""
    parts = [_block(block) for block in result.content]
    has_text = any(isinstance(b, TextContent | EmbeddedResource) for b in result.content)
    if result.structured_content is not None and not has_text:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(part for part in parts if part)
    return text or ("The tool reported an error without details." if result.is_error else "")


def _shorten(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… ({len(value) - limit} more characters)"
    if isinstance(value, dict):
        return {k: _shorten(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, limit) for v in value]
    return value


def describe_call(
    server: str | None,
    tool: str,
    arguments: Mapping[str, Any] | str | None,
    *,
    title: str | None = None,
    limit: int = DESCRIBE_LIMIT,
) -> str:
    """A pending call for the person who approves it: server, tool and the arguments
    pretty-printed, at most `limit` characters. `arguments` as the model sent them (a JSON
    string, possibly invalid) or already decoded. `server` None: a built-in tool."""
    head = f"MCP server: {server}\nTool: {tool}" if server else f"Tool: {tool}"
    if title and title != tool:
        head += f" ({title})"
    decoded: Any = arguments
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            decoded = None
    if decoded is None and isinstance(arguments, str):
        body = arguments
    elif not decoded:
        body = "(no arguments)"
    else:
        body = json.dumps(_shorten(decoded, 300), ensure_ascii=False, indent=2, default=str)
    text = f"{head}\nArguments:\n{body}"
    if len(text) > limit:
        cut = limit - 40
        text = text[:cut] + f"\n… ({len(text) - cut} more characters)"
    return text
