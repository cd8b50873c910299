"""Run the tool calls of one model round: concurrently, each with a timeout, with
every failure reported to the model as the tool's result (never raised)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from core import metrics
from core.tools.registry import ToolArgumentsError, ToolContext, ToolError, ToolRegistry
from core.types import ChatMessage, ToolCall

__all__ = ["run_tool_calls"]

log = logging.getLogger(__name__)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n…[truncated: {len(text) - limit} more characters]"


async def _run_one(
    call: ToolCall, registry: ToolRegistry, context: ToolContext, time_limit: float
) -> str:
    tool = registry.get(call.name)
    if tool is None:
        available = ", ".join(registry.names()) or "none"
        return f"Error: there is no tool named {call.name!r}. Available tools: {available}."
    try:
        raw = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as error:
        return f"Error: the arguments were not valid JSON ({error.msg} at position {error.pos})."
    if not isinstance(raw, dict):
        return "Error: the arguments must be a JSON object."
    limit = tool.timeout or time_limit
    try:
        async with asyncio.timeout(limit):
            result = await tool.invoke(raw, context)
    except TimeoutError:
        return f"Error: {call.name} did not finish within {limit:g} seconds."
    except ToolArgumentsError as error:
        return f"Error: invalid arguments for {call.name}: {error}."
    except ToolError as error:
        return f"Error: {error}"
    except Exception as error:
        log.exception("tool %s raised", call.name)
        return f"Error: {call.name} failed ({type(error).__name__}: {error})."
    return _render(result)


async def run_tool_calls(
    calls: Sequence[ToolCall],
    registry: ToolRegistry,
    context: ToolContext,
    *,
    time_limit: float,
    max_chars: int,
) -> list[ChatMessage]:
    """One tool-result message per call, in the order of the calls."""
    results = await asyncio.gather(*(_run_one(c, registry, context, time_limit) for c in calls))
    for call, result in zip(calls, results, strict=True):
        outcome = "error" if result.startswith("Error:") else "ok"
        metrics.TOOL_CALLS.labels(
            call.name if registry.get(call.name) else "unknown", outcome
        ).inc()
    return [
        ChatMessage.tool_result(call, _cap(result, max_chars))
        for call, result in zip(calls, results, strict=True)
    ]
