"""A tool module for the approval tests (loaded through TOOL_MODULES): one tool that
changes something and must be approved, one that only reads."""

from __future__ import annotations

from core import tool

CREATED: list[str] = []


@tool(needs_approval=True)
async def create_ticket(title: str) -> str:
    """Create a ticket in the team's tracker."""
    CREATED.append(title)
    return f"created ticket T-{len(CREATED)}: {title}"


@tool
async def find_ticket(title: str) -> str:
    """Look a ticket up (read only)."""
    return f"no ticket named {title!r}"
