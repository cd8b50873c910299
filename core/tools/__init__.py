"""Tools the dialogue model can call."""

from core.tools.builtin import BUILTIN_TOOLS, current_time, summarize_conversation
from core.tools.dispatch import run_tool_calls
from core.tools.registry import (
    AnyTool,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolSource,
    tool,
)

__all__ = [
    "BUILTIN_TOOLS",
    "AnyTool",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolSource",
    "current_time",
    "run_tool_calls",
    "summarize_conversation",
    "tool",
]
