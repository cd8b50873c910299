"""Logging: one JSON object per line (or plain text), with secrets scrubbed.

`LOG_FORMAT=auto` (the default) writes text for a person when stderr is a terminal and
JSON for a log collector otherwise (containers, systemd, pipes)."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

__all__ = ["bind", "configure_logging", "log_context", "resolve_format"]

log_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "teambot_log_context", default=None
)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def bind(**fields: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Add fields (conversation key, event id, ...) to every log line of this task."""
    current = dict(log_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    return log_context.set(current)


class _Redactor(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "**********")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(log_context.get() or {})
        for name, value in vars(record).items():
            if name not in _RESERVED and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = log_context.get()
        if context:
            text += " " + " ".join(f"{k}={v}" for k, v in context.items())
        return text


def resolve_format(fmt: str, stream: Any = None) -> str:
    """ "auto" becomes "text" on a terminal and "json" elsewhere; others stay as they are."""
    if fmt != "auto":
        return fmt
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure_logging(
    level: str = "INFO",
    fmt: str = "auto",
    secrets: Iterable[SecretStr | None] = (),
    quiet: Iterable[str] = (),
) -> None:
    """Root logging to stderr. `quiet` names chatty libraries' loggers that are kept at
    WARNING or above whatever the level."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = resolve_format(fmt, sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Redactor(s.get_secret_value() for s in secrets if s is not None))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "aiohttp.access", *quiet):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
