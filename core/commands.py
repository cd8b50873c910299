"""Commands people type to the bot instead of a question ("@teambot summarize")."""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["Command", "is_stop", "parse_command"]


class Command(StrEnum):
    SUMMARIZE = "summarize"
    FORGET = "forget"
    HELP = "help"
    STOP = "stop"


_WORDS = {
    "summarize": Command.SUMMARIZE,
    "summarise": Command.SUMMARIZE,
    "summary": Command.SUMMARIZE,
    "tldr": Command.SUMMARIZE,
    "tl;dr": Command.SUMMARIZE,
    "forget": Command.FORGET,
    "help": Command.HELP,
    "stop": Command.STOP,
}
_FILLER = frozenset(
    {"this", "the", "thread", "conversation", "please", "pls", "it", "everything", "up", "now"}
)


def raw_command(text: str) -> Command | None:
    """The command in a raw platform message (mentions and all: "@teambot summarize")."""
    return parse_command(re.sub(r"<[^>]*>", " ", text))


def is_stop(text: str) -> bool:
    """Is a raw platform message a request to stop ("@teambot stop")?"""
    return raw_command(text) is Command.STOP


def parse_command(text: str) -> Command | None:
    """The command when the whole message is one (with a few filler words: "summarize
    this thread please"); None for anything else, which is a question."""
    words = re.findall(r"[a-z;']+", text.lower())
    if not words or len(words) > 5:
        return None
    command = _WORDS.get(words[0])
    if command and all(word in _FILLER for word in words[1:]):
        return command
    return None
