"""Summaries: structured on-demand summaries (map-reduce for long transcripts,
incremental on top of a cached summary) and the rolling summary that folds old
history out of the dialogue context."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from core.providers.base import ModelRequest
from core.tokens import estimate_text
from core.types import ChatMessage

__all__ = [
    "SUMMARY_SCHEMA",
    "ActionItem",
    "BrokenSummary",
    "StructuredSummary",
    "Summarizer",
    "message_hash",
    "render_markdown",
    "transcript_lines",
]

ModelCall = Callable[[ModelRequest], Awaitable[str]]


class ActionItem(BaseModel):
    owner: str = ""
    task: str
    due: str = ""


class StructuredSummary(BaseModel):
    tldr: str
    decisions: list[str] = Field(default_factory=list)
    action_items: list[ActionItem] = Field(default_factory=list)
    open_questions: list[str] = Field(default_factory=list)


class BrokenSummary(Exception):
    """The model's summary could not be read, twice."""


SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tldr": {"type": "string", "description": "Two or three sentences: what happened."},
        "decisions": {"type": "array", "items": {"type": "string"}},
        "action_items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "owner": {"type": "string", "description": "Person's name, or empty"},
                    "task": {"type": "string"},
                    "due": {"type": "string", "description": "Due date if stated, or empty"},
                },
                "required": ["owner", "task", "due"],
                "additionalProperties": False,
            },
        },
        "open_questions": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["tldr", "decisions", "action_items", "open_questions"],
    "additionalProperties": False,
}

_RULES = (
    "Keep people's names exactly as written and attribute statements, decisions and tasks "
    "to them. Keep numbers, dates, identifiers, links and code words verbatim. Do not invent "
    "anything that is not in the messages. Write in the language of the conversation."
)

SUMMARY_SYSTEM = (
    "You summarize team chat conversations for people who did not read them. "
    "Answer with JSON only, matching the schema: `tldr` (two or three sentences), "
    "`decisions` (what was agreed), `action_items` (task, owner, due date if any), "
    "`open_questions` (unresolved). Empty lists are fine. " + _RULES
)

UPDATE_SYSTEM = (
    "You maintain the summary of a team chat conversation. You get the current summary "
    "(JSON) and the messages posted since. Return the updated summary as JSON with the "
    "same schema, covering everything: keep what is still true, add what is new, mark "
    "questions that were answered by removing them, and move finished work out of the "
    "action items. " + _RULES
)

MERGE_SYSTEM = (
    "You merge partial summaries of consecutive parts of one team chat conversation into "
    "one summary (JSON, same schema). Remove duplicates, keep the chronology, keep every "
    "decision and action item. " + _RULES
)

FOLD_SYSTEM = (
    "You maintain the running memory of a long chat conversation so that an assistant can "
    "keep answering after old messages are dropped from its context. Merge the existing "
    "memory and the older messages into an updated memory: compact bullet points, at most "
    "about 350 words. Keep every name, number, date, decision, commitment, identifier, link, "
    "code word and open question verbatim; drop greetings and small talk. Output only the "
    "memory."
)


def message_hash(message: ChatMessage) -> str:
    digest = hashlib.sha256(f"{message.name}\x00{message.content}".encode()).hexdigest()
    return digest[:12]


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def transcript_lines(messages: Sequence[ChatMessage], bot_name: str = "teambot") -> list[str]:
    lines = []
    for message in messages:
        if message.role == "tool" or (message.role == "assistant" and not message.content):
            continue
        speaker = message.name or ("teambot" if message.role == "assistant" else "someone")
        if message.role == "assistant":
            speaker = bot_name
        lines.append(f"[{_clock(message.ts)}] {speaker}: {message.content}")
    return lines


def _chunks(lines: list[str], budget: int) -> list[list[str]]:
    """Split transcript lines into chunks of at most `budget` estimated tokens.
    A single line longer than the budget is cut into pieces, never dropped."""
    chunks: list[list[str]] = [[]]
    size = 0
    limit_chars = budget * 4
    for line in lines:
        pieces = [line[i : i + limit_chars] for i in range(0, len(line), limit_chars)] or [""]
        for piece in pieces:
            tokens = estimate_text(piece) + 1
            if chunks[-1] and size + tokens > budget:
                chunks.append([])
                size = 0
            chunks[-1].append(piece)
            size += tokens
    return [c for c in chunks if c]


def parse_summary(text: str) -> StructuredSummary:
    cleaned = text.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", cleaned, re.DOTALL)
    if fence:
        cleaned = fence.group(1)
    start, end = cleaned.find("{"), cleaned.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the answer")
    data = json.loads(cleaned[start : end + 1])
    return StructuredSummary.model_validate(data)


def render_markdown(summary: StructuredSummary, heading: str | None = None) -> str:
    out: list[str] = []
    if heading:
        out.append(f"**{heading}**")
    out.append(f"**TL;DR:** {summary.tldr.strip()}")
    if summary.decisions:
        out.append("**Decisions**\n" + "\n".join(f"- {d.strip()}" for d in summary.decisions))
    if summary.action_items:
        items = []
        for item in summary.action_items:
            owner = f"**{item.owner.strip()}**: " if item.owner.strip() else ""
            due = f" (due {item.due.strip()})" if item.due.strip() else ""
            items.append(f"- {owner}{item.task.strip()}{due}")
        out.append("**Action items**\n" + "\n".join(items))
    if summary.open_questions:
        out.append(
            "**Open questions**\n" + "\n".join(f"- {q.strip()}" for q in summary.open_questions)
        )
    return "\n\n".join(out)


class Summarizer:
    """Summaries on the summary route. `call` runs one request and returns its text."""

    def __init__(
        self,
        call: ModelCall,
        *,
        chunk_tokens: int,
        max_output_tokens: int,
        thinking_level: str | None,
        bot_name: str = "teambot",
        concurrency: int = 4,
        language: str = "",
    ) -> None:
        self._call = call
        #: The channel's summary language ("" = the conversation's own).
        self.language = language
        self.chunk_tokens = chunk_tokens
        self.max_output_tokens = max_output_tokens
        self.thinking_level = thinking_level
        self.bot_name = bot_name
        self._limit = asyncio.Semaphore(concurrency)

    async def complete(self, request: ModelRequest) -> str:
        """One request on the summary route as given (budgeted and billed like the rest)."""
        async with self._limit:
            return await self._call(request)

    def _request(self, system: str, text: str, *, structured: bool, max_out: int) -> ModelRequest:
        return ModelRequest(
            system=system,
            messages=[ChatMessage.user(text)],
            max_output_tokens=max_out,
            thinking_level=self.thinking_level,
            json_schema=SUMMARY_SCHEMA if structured else None,
            schema_name="conversation_summary",
        )

    async def _structured(self, system: str, text: str) -> StructuredSummary:
        if self.language:
            system += f" Write the summary in {self.language}, whatever the messages' language."
        request = self._request(system, text, structured=True, max_out=self.max_output_tokens)
        problem = ""
        for _ in range(2):
            async with self._limit:
                answer = await self._call(request)
            try:
                return parse_summary(answer)
            except (ValueError, ValidationError) as error:
                problem = str(error)[:200]
        raise BrokenSummary(f"the summary model twice returned unreadable output ({problem})")

    async def summarize(
        self,
        messages: Sequence[ChatMessage],
        previous: StructuredSummary | None = None,
        context: str | None = None,
    ) -> StructuredSummary:
        """Summarize `messages`; with `previous`, update that summary with them.
        `context` (e.g. a rolling summary of older history) is given as background."""
        lines = transcript_lines(messages, self.bot_name)
        background = (
            f"Background from earlier in the conversation:\n{context}\n\n" if context else ""
        )
        if previous is not None:
            head = f"{background}Current summary:\n{previous.model_dump_json()}\n\nNew messages:\n"
            room = self.chunk_tokens - estimate_text(head)
            if sum(estimate_text(line) + 1 for line in lines) <= room:
                return await self._structured(UPDATE_SYSTEM, head + "\n".join(lines))
            fresh = await self._map_reduce(lines, "")
            return await self._merge([previous, fresh])
        return await self._map_reduce(lines, background)

    async def _map_reduce(self, lines: list[str], background: str) -> StructuredSummary:
        chunks = _chunks(lines, max(200, self.chunk_tokens - estimate_text(background)))
        if len(chunks) <= 1:
            body = "\n".join(chunks[0]) if chunks else "(no messages)"
            return await self._structured(SUMMARY_SYSTEM, f"{background}Conversation:\n{body}")
        total = len(chunks)
        partials = await asyncio.gather(
            *(
                self._structured(
                    SUMMARY_SYSTEM,
                    f"{background}Part {i} of {total} of the conversation:\n" + "\n".join(chunk),
                )
                for i, chunk in enumerate(chunks, 1)
            )
        )
        return await self._merge(list(partials))

    async def _merge(self, parts: list[StructuredSummary]) -> StructuredSummary:
        while len(parts) > 1:
            groups: list[list[StructuredSummary]] = [[]]
            size = 0
            for part in parts:
                tokens = estimate_text(part.model_dump_json())
                if groups[-1] and size + tokens > self.chunk_tokens:
                    groups.append([])
                    size = 0
                groups[-1].append(part)
                size += tokens
            if len(groups) == len(parts):  # every part is huge; merge pairwise
                groups = [parts[i : i + 2] for i in range(0, len(parts), 2)]
            parts = list(
                await asyncio.gather(
                    *(
                        self._structured(
                            MERGE_SYSTEM,
                            "\n\n".join(
                                f"Summary of part {i}:\n{p.model_dump_json()}"
                                for i, p in enumerate(group, 1)
                            ),
                        )
                        if len(group) > 1
                        else _same(group[0])
                        for group in groups
                    )
                )
            )
        return parts[0]

    async def fold(self, memory: str | None, messages: Sequence[ChatMessage]) -> str:
        """The rolling summary: the previous memory merged with the messages to fold."""
        lines = transcript_lines(messages, self.bot_name)
        current = memory or "(empty)"
        for chunk in _chunks(lines, max(500, self.chunk_tokens - estimate_text(current))):
            text = f"Existing memory:\n{current}\n\nOlder messages to fold in:\n" + "\n".join(chunk)
            request = self._request(FOLD_SYSTEM, text, structured=False, max_out=1200)
            async with self._limit:
                answer = (await self._call(request)).strip()
            if answer:
                current = answer
        return current


async def _same(summary: StructuredSummary) -> StructuredSummary:
    return summary
