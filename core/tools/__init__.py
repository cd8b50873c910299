"""Tools the dialogue model can call."""

from core.tools.builtin import BUILTIN_TOOLS, current_time, summarize_conversation
from core.tools.dispatch import run_tool_calls
from core.tools.registry import Tool, ToolContext, ToolError, ToolRegistry, tool

__all__ = [
    "BUILTIN_TOOLS",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "current_time",
    "run_tool_calls",
    "summarize_conversation",
    "tool",
]
