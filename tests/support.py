"""Helpers shared by tests (importable, unlike conftest)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from core.settings import Settings, load_settings

API_KEY = "sk-test-cometapi-key-123456"


def make_settings(**overrides: Any) -> Settings:
    """Settings that ignore the developer's .env and environment for the given fields."""
    values: dict[str, Any] = {
        "cometapi_api_key": API_KEY,
        "retry_base_delay": 0.01,
        "retry_max_wait": 3.0,
        "breaker_cooldown": 30.0,
        "first_token_timeout": 5.0,
        "idle_timeout": 5.0,
        "total_timeout": 30.0,
        "lock_ttl_seconds": 3.0,
        # bursts from one test user are the point of many tests; the limit has its own
        "user_rate_limit": "off",
        "log_format": "text",
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)


class RecordingSink:
    """A ReplySink that records every call, in order, as a user's screen would see it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.shown = ""
        self.final: str | None = None
        self.error: str | None = None
        self.done = asyncio.Event()

    async def status(self, text: str) -> None:
        self.calls.append(("status", text))

    async def append(self, delta: str) -> None:
        self.calls.append(("append", delta))
        self.shown += delta

    async def reset(self) -> None:
        self.calls.append(("reset", ""))
        self.shown = ""

    async def finish(self, text: str) -> None:
        self.calls.append(("finish", text))
        self.final = text
        self.done.set()

    async def fail(self, message: str) -> None:
        self.calls.append(("fail", message))
        self.error = message
        self.done.set()

    @property
    def appends(self) -> list[str]:
        return [text for kind, text in self.calls if kind == "append"]

    @property
    def statuses(self) -> list[str]:
        return [text for kind, text in self.calls if kind == "status"]


_LINE = re.compile(r"^\[[^\]]*\] ([^:]+): (.*)$")


def _transcript(text: str) -> list[tuple[str, str]]:
    found = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def _summary_from(lines: list[tuple[str, str]], previous: dict[str, Any] | None) -> dict[str, Any]:
    summary: dict[str, Any] = previous or {
        "tldr": "",
        "decisions": [],
        "action_items": [],
        "open_questions": [],
    }
    names = sorted({name for name, _ in lines})
    count = int(summary.get("_count", 0)) + len(lines) if previous else len(lines)
    summary["tldr"] = f"{count} messages; speakers: {', '.join(names) or 'none'}."
    for name, text in lines:
        lowered = text.lower()
        if "decided" in lowered or "decision" in lowered:
            summary["decisions"].append(f"{name}: {text}")
        if lowered.startswith(("i will", "i'll", "todo")):
            summary["action_items"].append({"owner": name, "task": text, "due": ""})
        if text.endswith("?"):
            summary["open_questions"].append(f"{name} asked: {text}")
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def team_model(request: Any) -> Any:
    """A deterministic stand-in for the real models, good enough to test plumbing:
    dialogue echoes; structured summary requests get JSON built from the transcript
    (decisions, "I will" action items, questions); folding keeps every line with a digit
    or an upper-case code word, so facts survive as they would with a good summarizer."""
    from tests.fakes.cometapi import Reply, default_responder

    system = request.system_text
    user = request.last_user_text
    if "running memory" in system:
        kept: list[str] = []
        memory, _, older = user.partition("Older messages to fold in:")
        for line in memory.replace("Existing memory:", "").splitlines():
            if line.strip() and line.strip() != "(empty)":
                kept.append(line.strip())
        for name, text in _transcript(older):
            if re.search(r"\d|\b[A-Z]{4,}\b", text):
                kept.append(f"- {name}: {text}")
        return Reply("\n".join(kept) or "- (nothing notable)")
    if "summary of a team chat" in system.lower() and "Current summary:" in user:
        current, _, new = user.partition("New messages:")
        previous = json.loads(current.split("Current summary:", 1)[1].strip())
        return Reply(json.dumps(_summary_from(_transcript(new), previous)))
    if "merge partial summaries" in system:
        merged: dict[str, Any] = {
            "tldr": "",
            "decisions": [],
            "action_items": [],
            "open_questions": [],
        }
        tldrs = []
        for block in re.findall(
            r"Summary of part \d+:\n(\{.*?\})(?=\n\nSummary of part|\Z)", user, re.S
        ):
            part = json.loads(block)
            tldrs.append(part["tldr"])
            for field_name in ("decisions", "action_items", "open_questions"):
                merged[field_name].extend(part[field_name])
        merged["tldr"] = " / ".join(tldrs)
        return Reply(json.dumps(merged))
    if "summarize team chat" in system:
        return Reply(json.dumps(_summary_from(_transcript(user), None)))
    return default_responder(request)
