"""teambot's core: everything the adapters in `bots/` may use, and nothing else.

Adapters import from `core` only (a test checks it): they turn platform events into
`Incoming` and hand them to `Intake`, show answers through a `ReplySink`, and call the
`Engine` for summaries, memory and usage.
"""

from core import metrics
from core.commands import Command, parse_command
from core.engine import Engine, Outcome, UsageReport
from core.failures import RESTARTING, oops
from core.intake import Intake, OpenSink
from core.logs import bind, configure_logging, log_context
from core.memory import MessageRef
from core.queue import Admission
from core.settings import ConfigError, Settings, load_settings
from core.sink import CollectingSink, ReplySink
from core.store import KeyedLocks
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
    "RESTARTING",
    "Admission",
    "Attachment",
    "Author",
    "ChatMessage",
    "CollectingSink",
    "Command",
    "ConfigError",
    "ConversationKey",
    "Engine",
    "Fetch",
    "Incoming",
    "Intake",
    "KeyedLocks",
    "MediaPart",
    "MessageRef",
    "OpenSink",
    "Outcome",
    "ReplySink",
    "Settings",
    "UsageReport",
    "bind",
    "configure_logging",
    "load_settings",
    "log_context",
    "metrics",
    "oops",
    "parse_command",
]
