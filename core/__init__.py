"""teambot's core: everything the adapters in `bots/` may use, and nothing else.

Adapters import from `core` only (a test checks it): they turn platform events into
`Incoming` and hand them to `Intake`, show answers through a `ReplySink`, and call the
`Engine` for summaries, memory and usage.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core import metrics
    from core.commands import Command, parse_command, raw_command
    from core.diagnostics import (
        GatewayReport,
        ProbeResult,
        inspect_mcp,
        inspect_redis,
        list_models,
        probe_targets,
    )
    from core.downloads import capped_download
    from core.engine import Engine, Outcome, UsageReport
    from core.failures import RESTARTING, oops, reported
    from core.history_search import HistoryMessage
    from core.intake import RESTARTING_SOON, Intake, OpenSink
    from core.knowledge import Knowledge
    from core.logs import bind, configure_logging, log_context
    from core.memory import MessageRef
    from core.names import NameDirectory
    from core.outbound import (
        MentionGuard,
        NativeStream,
        PagedReply,
        Rate,
        RateReport,
        Surface,
        SurfaceExpired,
        WritePacer,
        defuse,
        open_fence,
        split_pages,
    )
    from core.queue import Admission
    from core.recaps import RecapPost
    from core.settings import ENV_FILE_VARIABLE, ConfigError, Settings, load_settings
    from core.shares import Shareable, SummaryShares
    from core.sink import CollectingSink, ReplySink
    from core.store import KeyedLocks
    from core.summaries import ActionItem, StructuredSummary
    from core.summary_cache import Summary
    from core.tools import tool
    from core.tools.approval import ApprovalCard, ApprovalUI, Decision
    from core.types import (
        Attachment,
        Author,
        ChatMessage,
        ConversationKey,
        Fetch,
        Incoming,
        MediaPart,
    )

__all__ = [
    "ENV_FILE_VARIABLE",
    "RESTARTING",
    "RESTARTING_SOON",
    "ActionItem",
    "Admission",
    "ApprovalCard",
    "ApprovalUI",
    "Attachment",
    "Author",
    "ChatMessage",
    "CollectingSink",
    "Command",
    "ConfigError",
    "ConversationKey",
    "Decision",
    "Engine",
    "Fetch",
    "GatewayReport",
    "HistoryMessage",
    "Incoming",
    "Intake",
    "KeyedLocks",
    "Knowledge",
    "MediaPart",
    "MentionGuard",
    "MessageRef",
    "NameDirectory",
    "NativeStream",
    "OpenSink",
    "Outcome",
    "PagedReply",
    "ProbeResult",
    "Rate",
    "RateReport",
    "RecapPost",
    "ReplySink",
    "Settings",
    "Shareable",
    "StructuredSummary",
    "Summary",
    "SummaryShares",
    "Surface",
    "SurfaceExpired",
    "UsageReport",
    "WritePacer",
    "bind",
    "capped_download",
    "configure_logging",
    "defuse",
    "inspect_mcp",
    "inspect_redis",
    "list_models",
    "load_settings",
    "log_context",
    "metrics",
    "oops",
    "open_fence",
    "parse_command",
    "probe_targets",
    "raw_command",
    "reported",
    "split_pages",
    "tool",
]

# Loaded on first use, so `teambot --version` (or an adapter) imports only what it needs.
_WHERE: dict[str, str] = {
    "ApprovalCard": "core.tools.approval",
    "ApprovalUI": "core.tools.approval",
    "Decision": "core.tools.approval",
    "tool": "core.tools",
    "ActionItem": "core.summaries",
    "StructuredSummary": "core.summaries",
    "Summary": "core.summary_cache",
    "MentionGuard": "core.outbound",
    "NativeStream": "core.outbound",
    "PagedReply": "core.outbound",
    "Rate": "core.outbound",
    "RateReport": "core.outbound",
    "Surface": "core.outbound",
    "SurfaceExpired": "core.outbound",
    "WritePacer": "core.outbound",
    "defuse": "core.outbound",
    "open_fence": "core.outbound",
    "split_pages": "core.outbound",
    "Admission": "core.queue",
    "Attachment": "core.types",
    "Author": "core.types",
    "ChatMessage": "core.types",
    "CollectingSink": "core.sink",
    "Command": "core.commands",
    "ConfigError": "core.settings",
    "ConversationKey": "core.types",
    "ENV_FILE_VARIABLE": "core.settings",
    "Engine": "core.engine",
    "Fetch": "core.types",
    "GatewayReport": "core.diagnostics",
    "Incoming": "core.types",
    "HistoryMessage": "core.history_search",
    "Knowledge": "core.knowledge",
    "RecapPost": "core.recaps",
    "Intake": "core.intake",
    "KeyedLocks": "core.store",
    "MediaPart": "core.types",
    "MessageRef": "core.memory",
    "NameDirectory": "core.names",
    "OpenSink": "core.intake",
    "Outcome": "core.engine",
    "ProbeResult": "core.diagnostics",
    "RESTARTING": "core.failures",
    "RESTARTING_SOON": "core.intake",
    "Shareable": "core.shares",
    "SummaryShares": "core.shares",
    "reported": "core.failures",
    "ReplySink": "core.sink",
    "Settings": "core.settings",
    "UsageReport": "core.ledger",
    "bind": "core.logs",
    "capped_download": "core.downloads",
    "configure_logging": "core.logs",
    "inspect_mcp": "core.diagnostics",
    "inspect_redis": "core.diagnostics",
    "list_models": "core.diagnostics",
    "load_settings": "core.settings",
    "log_context": "core.logs",
    "metrics": "core.metrics",
    "oops": "core.failures",
    "parse_command": "core.commands",
    "probe_targets": "core.diagnostics",
    "raw_command": "core.commands",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    if module == "core.metrics":
        return importlib.import_module(module)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
