"""Tools every teambot has."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from core.tools.registry import ToolContext, ToolError, tool

__all__ = ["current_time", "summarize_conversation"]


@tool
async def current_time(
    timezone: Annotated[
        str, Field(description="IANA time zone name, for example Europe/Paris or UTC")
    ] = "UTC",
) -> dict[str, Any]:
    """The current date and time in a time zone."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(
            f"{timezone!r} is not an IANA time zone name; use one like Europe/Paris, "
            "America/New_York or UTC."
        ) from None
    now = dt.datetime.now(zone)
    return {
        "timezone": timezone,
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "utc_offset": now.strftime("%z"),
    }


@tool
async def summarize_conversation(ctx: ToolContext) -> str:
    """Summary of this whole conversation, including parts too old for your context."""
    return await ctx.summarize()


BUILTIN_TOOLS = (current_time, summarize_conversation)
