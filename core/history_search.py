"""Answers from channel history, with sources: the core of the `search_history` tool.

The dialogue model calls `search_history(question, channel?, days?)`. The asker's right to
read the channel is checked first (a refusal reads nothing and calls no model); then up to
`HISTORY_SEARCH_MAX_MESSAGES` messages of the window are read, newest first, and given,
numbered, with the question to the summary route (Gemini 3.1 Flash-Lite reads a long window
cheaply). Its JSON answer cites message numbers; the tool returns the answer with those
messages as sources (link, author, time) for the dialogue model to cite.

Adapters implement `HistorySource`; the lead registers `search_history_tool(search)`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field, ValidationError

from core.providers.base import ModelRequest
from core.summaries import Summarizer
from core.tokens import estimate_text
from core.tools.registry import ToolContext, ToolError, tool
from core.types import Author, ChatMessage, ConversationKey

__all__ = [
    "HistoryMessage",
    "HistorySearch",
    "HistorySource",
    "SearchAnswer",
    "search_history_tool",
]

log = logging.getLogger(__name__)

MAX_DAYS = 90
MAX_SOURCES = 8
# One message's text in the transcript; the rest is cut (a pasted log, a long README).
MESSAGE_CHARS = 2000
# The transcript stays well inside Flash-Lite's 1M-token window (and about $0.15 a search).
TRANSCRIPT_TOKENS = 600_000


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """One message as the source reads it. `link` is its permalink or jump URL."""

    id: str
    author: str
    ts: float
    text: str
    link: str = ""


@runtime_checkable
class HistorySource(Protocol):
    """What an adapter gives `search_history` for its platform."""

    async def resolve(self, current: ConversationKey, channel: str) -> ConversationKey | None:
        """The channel the model named (`#general`, an id, a mention), in `current`'s
        workspace; None if there is none."""
        ...

    async def may_read(self, asker: Author, channel: ConversationKey) -> bool | str:
        """True if `asker` may read `channel` (checked as `/summarize` does); otherwise
        False or the reason, one sentence, for the model to pass on."""
        ...

    def read(
        self, channel: ConversationKey, oldest_ts: float, limit: int
    ) -> AsyncIterator[Sequence[HistoryMessage]]:
        """Pages of the channel's messages posted after `oldest_ts`, newest first, until
        `limit` messages or the window's start."""
        ...


class _Found(BaseModel):
    answer: str
    sources: list[int] = Field(default_factory=list)
    found: bool = True


ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {
            "type": "string",
            "description": "The answer, from the messages only; say so if they do not tell.",
        },
        "sources": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "Numbers of the messages the answer rests on, most important first.",
        },
        "found": {"type": "boolean", "description": "Whether the messages answer it."},
    },
    "required": ["answer", "sources", "found"],
    "additionalProperties": False,
}

SEARCH_SYSTEM = (
    "You answer a question about what a team wrote in a chat channel, using only the "
    "numbered messages you are given (oldest first, times in UTC). Answer with JSON only: "
    "`answer` (a short, direct answer; name who said or decided what, and when; keep numbers, "
    "dates, names and links verbatim), `sources` (the numbers of the messages the answer "
    f"rests on, at most {MAX_SOURCES}, most important first), `found` (false if the messages "
    "do not answer the question; then say so in `answer` and cite nothing). Later messages "
    "override earlier ones when a decision changed. Never invent anything."
)


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    """The answer and the messages it rests on."""

    answer: str
    found: bool
    sources: list[HistoryMessage]
    channel: ConversationKey
    days: int
    searched: int
    notes: list[str] = field(default_factory=list)

    def for_model(self) -> dict[str, Any]:
        """The tool result: the answer and sources, with how to cite them."""
        return {
            "answer": self.answer,
            "found": self.found,
            "sources": [
                {
                    "author": m.author,
                    "time": _when(m.ts),
                    "link": m.link,
                    "quote": _quote(m.text),
                }
                for m in self.sources
            ],
            "searched": f"{self.searched:,} messages from the last {self.days} days",
            "notes": self.notes,
            "how_to_cite": (
                "Answer from this and cite each source you rely on as a Markdown link "
                "[author, time](link) so the user can click through."
            ),
        }


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _quote(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _parse(text: str, count: int) -> _Found:
    cleaned = text.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", cleaned, re.DOTALL)
    if fence:
        cleaned = fence.group(1)
    start, end = cleaned.find("{"), cleaned.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the answer")
    found = _Found.model_validate(json.loads(cleaned[start : end + 1]))
    if not found.answer.strip():
        raise ValueError("an empty answer")
    numbers = [n for n in dict.fromkeys(found.sources) if 1 <= n <= count]
    return found.model_copy(update={"sources": numbers[:MAX_SOURCES]})


class HistorySearch:
    """Searches one platform's history per call. `summarizer_for(tenant)` gives the summary
    route billed to that tenant (`Engine.summarizer`)."""

    def __init__(
        self,
        sources: Mapping[str, HistorySource],
        summarizer_for: Callable[[str], Summarizer],
        *,
        max_messages: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = dict(sources)
        self.summarizer_for = summarizer_for
        self.max_messages = max_messages
        self.clock = clock

    async def search(
        self,
        *,
        asker: Author | None,
        current: ConversationKey,
        question: str,
        channel: str = "",
        days: int = 7,
    ) -> SearchAnswer:
        """Raises ToolError (a sentence for the model) when the search may not or cannot run."""
        question = question.strip()
        if not question:
            raise ToolError("Say what to look for: the question is empty.")
        days = max(1, min(MAX_DAYS, days))
        source = self.sources.get(current.platform)
        if source is None:
            raise ToolError("Channel history can't be searched on this platform.")
        target = current.channel_key()
        if channel.strip():
            resolved = await source.resolve(current, channel.strip())
            if resolved is None:
                raise ToolError(f"There is no channel {channel.strip()!r} that I can see.")
            if (resolved.platform, resolved.workspace) != (current.platform, current.workspace):
                raise ToolError("I only search channels of this workspace.")
            target = resolved.channel_key()
        if asker is None:
            raise ToolError("I don't know who is asking, so I can't check who may read it.")
        access = await source.may_read(asker, target)
        if access is not True:
            reason = access if isinstance(access, str) and access else ""
            raise ToolError(
                reason or "The person asking can't read that channel, so I won't search it."
            )
        messages = await self._read(source, target, self.clock() - days * 86_400)
        notes: list[str] = []
        if len(messages) >= self.max_messages:
            notes.append(
                f"Only the newest {self.max_messages:,} messages of the window were searched."
            )
        if not any(m.text.strip() for m in messages):
            return SearchAnswer(
                f"Nobody wrote anything there in the last {days} days.",
                False,
                [],
                target,
                days,
                0,
                notes,
            )
        messages, dropped = _fit(messages)
        if dropped:
            notes.append(
                f"The {dropped:,} oldest messages were too many to read and were left out."
            )
        found = await self._ask(current.tenant, question, messages, days)
        sources = [messages[n - 1] for n in found.sources]
        log.info(
            "search_history in %s: %d messages, %d sources", target, len(messages), len(sources)
        )
        return SearchAnswer(
            found.answer.strip(), found.found, sources, target, days, len(messages), notes
        )

    async def _read(
        self, source: HistorySource, channel: ConversationKey, oldest: float
    ) -> list[HistoryMessage]:
        newest_first: list[HistoryMessage] = []
        seen: set[str] = set()
        async for page in source.read(channel, oldest, self.max_messages):
            for message in page:
                if message.ts > oldest and message.id not in seen:
                    seen.add(message.id)
                    newest_first.append(message)
            if len(newest_first) >= self.max_messages:
                break
        return sorted(newest_first[: self.max_messages], key=lambda m: m.ts)

    async def _ask(
        self, tenant: str, question: str, messages: Sequence[HistoryMessage], days: int
    ) -> _Found:
        summarizer = self.summarizer_for(tenant)
        request = ModelRequest(
            system=SEARCH_SYSTEM,
            messages=[ChatMessage.user(build_prompt(question, messages, days))],
            max_output_tokens=min(2048, summarizer.max_output_tokens),
            thinking_level=summarizer.thinking_level,
            json_schema=ANSWER_SCHEMA,
            schema_name="history_answer",
        )
        problem = ""
        for _ in range(2):
            text = await summarizer.complete(request)
            try:
                return _parse(text, len(messages))
            except (ValueError, ValidationError) as error:
                problem = str(error)[:200]
        raise ToolError(f"The search model twice returned an unreadable answer ({problem}).")


def _line(number: int, message: HistoryMessage) -> str:
    text = " ".join(message.text.split())
    if len(text) > MESSAGE_CHARS:
        text = text[:MESSAGE_CHARS] + " […]"
    stamp = dt.datetime.fromtimestamp(message.ts, dt.UTC).strftime("%Y-%m-%d %H:%M")
    return f"[{number}] {stamp} {message.author}: {text}"


def _fit(messages: list[HistoryMessage]) -> tuple[list[HistoryMessage], int]:
    """Drop the oldest messages past TRANSCRIPT_TOKENS; (kept, how many dropped)."""
    total = 0
    keep = len(messages)
    for index in range(len(messages) - 1, -1, -1):
        total += estimate_text(_line(index + 1, messages[index])) + 1
        if total > TRANSCRIPT_TOKENS:
            keep = len(messages) - 1 - index
            break
    dropped = len(messages) - keep
    return messages[dropped:], dropped


def build_prompt(question: str, messages: Sequence[HistoryMessage], days: int) -> str:
    lines = [_line(number, message) for number, message in enumerate(messages, 1)]
    return (
        f"Question: {question}\n\n"
        f"The channel's messages of the last {days} days ({len(messages):,}, oldest first):\n"
        + "\n".join(lines)
        + f"\n\nQuestion again: {question}"
    )


def search_history_tool(search: HistorySearch, *, time_limit: float = 120.0) -> Any:
    """The `search_history` tool over `search`, for `ToolRegistry.add()`."""

    async def search_history(
        ctx: ToolContext,
        question: Annotated[
            str, Field(description="What to find out, as a full question", min_length=1)
        ],
        channel: Annotated[
            str,
            Field(description="Another channel to search (#name); empty: this conversation's"),
        ] = "",
        days: Annotated[
            int, Field(description="How many days back to search", ge=1, le=MAX_DAYS)
        ] = 7,
    ) -> dict[str, Any]:
        """Search what the team wrote in a channel's history and answer a question about
        it, e.g. what was decided about something last week. Returns the answer with the
        messages it rests on as links; cite them."""
        answer = await search.search(
            asker=ctx.author, current=ctx.key, question=question, channel=channel, days=days
        )
        return answer.for_model()

    return tool(search_history, time_limit=time_limit)
