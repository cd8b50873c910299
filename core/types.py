"""Neutral types shared by the core and the adapters.

Adapters translate platform events into `Incoming` and chat history into
`ChatMessage`; nothing here knows about Slack, Discord or a model vendor.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

__all__ = [
    "Attachment",
    "Author",
    "ChatMessage",
    "ConversationKey",
    "Fetch",
    "Incoming",
    "MediaPart",
    "Modality",
    "ToolCall",
]

Modality = Literal["image", "audio", "video", "pdf"]


def _escape(part: str) -> str:
    return quote(part, safe="")


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Opaque, namespaced conversation id: `platform:workspace:channel:thread`.

    Every component is percent-escaped, so no id can contain the separator
    and reach into another workspace's or channel's keys.
    """

    platform: str
    workspace: str
    channel: str
    thread: str = "-"

    def __post_init__(self) -> None:
        for name in ("platform", "workspace", "channel", "thread"):
            if not getattr(self, name):
                raise ValueError(f"ConversationKey.{name} must not be empty")

    def __str__(self) -> str:
        return ":".join(
            _escape(p) for p in (self.platform, self.workspace, self.channel, self.thread)
        )

    @classmethod
    def parse(cls, text: str) -> ConversationKey:
        parts = text.split(":")
        if len(parts) != 4:
            raise ValueError(f"not a conversation key: {text!r}")
        return cls(*(unquote(p) for p in parts))

    def channel_key(self) -> ConversationKey:
        """The key of the whole channel this conversation lives in."""
        return ConversationKey(self.platform, self.workspace, self.channel, "*")

    @property
    def tenant(self) -> str:
        """`platform:workspace`, the unit budgets and usage are counted in."""
        return f"{_escape(self.platform)}:{_escape(self.workspace)}"


@dataclass(frozen=True, slots=True)
class Author:
    id: str
    name: str
    is_bot: bool = False


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file on a message. `fetch()` downloads it (the adapter knows how)."""

    name: str
    mime: str
    size: int
    fetch: Callable[[], Awaitable[bytes]] = field(compare=False, repr=False)


Fetch = Callable[[], Awaitable[Sequence["ChatMessage"]]]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message that may be answered, as an adapter hands it to core's intake.

    `position` is where the platform put it (Slack `ts` in microseconds, a Discord
    snowflake): a conversation is answered in that order, across processes.
    `addressed`: a mention, a DM, a reply to the bot, a command; otherwise the message is
    answered only in a conversation the bot follows. `follow`: admitting it makes the
    bot follow the conversation (a thread it was mentioned in).

    The adapter's slow work runs only when it is the message's turn: `prepare` returns
    the message completed (names looked up, text converted), `backfill` the earlier
    messages of an existing thread (read once, on first contact), `transcript` the whole
    conversation for a summary.
    """

    key: ConversationKey
    event_id: str
    author: Author
    text: str
    attachments: tuple[Attachment, ...] = ()
    message_id: str | None = None
    ts: float = field(default_factory=time.time)
    position: int | None = None
    addressed: bool = True
    follow: bool = False
    prepare: Callable[[Incoming], Awaitable[Incoming]] | None = field(
        default=None, compare=False, repr=False
    )
    backfill: Fetch | None = field(default=None, compare=False, repr=False)
    transcript: Fetch | None = field(default=None, compare=False, repr=False)
    #: Where the adapter answers (serializable): a turn paused for approval may be
    #: finished by another process, which opens its reply from this.
    reply_to: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: Tells the author something only they see (Slack ephemeral); None: a reply.
    notify: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False, repr=False)

    @property
    def place(self) -> int:
        """The platform position (from `ts` when the adapter gave none)."""
        return self.position if self.position is not None else int(self.ts * 1_000_000)


class MediaPart(BaseModel):
    """Binary input for the model: image, audio, video or PDF."""

    model_config = ConfigDict(frozen=True)

    kind: Modality
    mime: str
    data: bytes
    name: str = ""

    @field_serializer("data")
    def _b64(self, data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    @field_validator("data", mode="before")
    @classmethod
    def _unb64(cls, value: Any) -> Any:
        if isinstance(value, str):
            return base64.b64decode(value)
        return value

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


class ToolCall(BaseModel):
    """A function call requested by the model; `extra` keeps provider data to echo back
    (e.g. Gemini's `thoughtSignature`)."""

    id: str
    name: str
    arguments: str = "{}"
    extra: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    """One entry of conversation history, as stored in memory."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    name: str | None = None
    parts: list[MediaPart] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None
    id: str | None = None
    ts: float = Field(default_factory=time.time)

    @classmethod
    def user(
        cls,
        text: str,
        name: str | None = None,
        *,
        id: str | None = None,
        ts: float | None = None,
        parts: list[MediaPart] | None = None,
    ) -> ChatMessage:
        return cls(
            role="user",
            content=text,
            name=name,
            id=id,
            ts=time.time() if ts is None else ts,
            parts=parts or [],
        )

    @classmethod
    def assistant(cls, text: str, tool_calls: list[ToolCall] | None = None) -> ChatMessage:
        return cls(role="assistant", content=text, tool_calls=tool_calls or [])

    @classmethod
    def tool_result(cls, call: ToolCall, content: str) -> ChatMessage:
        return cls(role="tool", content=content, tool_call_id=call.id, tool_name=call.name)

    def speaker_text(self) -> str:
        """Text as the model sees it: user messages carry the speaker's name."""
        if self.role == "user" and self.name:
            return f"[{self.name}] {self.content}"
        return self.content

    def modalities(self) -> set[Modality]:
        return {part.kind for part in self.parts}

    def for_storage(self) -> ChatMessage:
        """A copy without binary parts: memory keeps a note of each file instead."""
        if not self.parts:
            return self
        notes = " ".join(f"[attached {p.kind}: {p.name or p.mime}]" for p in self.parts)
        text = f"{self.content}\n{notes}" if self.content else notes
        return self.model_copy(update={"parts": [], "content": text})
