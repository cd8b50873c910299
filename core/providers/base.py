"""What every provider shares: the neutral request and events, classified errors,
and the HTTP/SSE plumbing with its four timeouts.

A provider knows HTTP and one wire format; nothing here knows Redis or chat.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import httpx
from httpx_sse import EventSource, ServerSentEvent

from core.types import ChatMessage, Modality, ToolCall

__all__ = [
    "ErrorKind",
    "Event",
    "Finish",
    "ModelRequest",
    "Provider",
    "ProviderError",
    "Target",
    "TextDelta",
    "Timeouts",
    "ToolCallEvent",
    "ToolSpec",
    "Usage",
    "parse_retry_after",
]

Protocol = Literal["openai", "gemini"]


@dataclass(frozen=True, slots=True)
class Target:
    """One model reachable over one protocol, with what it can take."""

    protocol: Protocol
    model: str
    context_window: int
    max_output: int
    modalities: frozenset[Modality]
    price_input: float = 0.0  # USD per million tokens
    price_output: float = 0.0
    price_cached_input: float | None = None  # None: a tenth of price_input

    @property
    def name(self) -> str:
        return f"{self.protocol}:{self.model}"

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """USD for a call; `cached_input_tokens` (part of `input_tokens`) were served from
        the provider's prompt cache and bill at the cached price."""
        cached = min(max(cached_input_tokens, 0), input_tokens)
        cached_price = (
            self.price_input / 10 if self.price_cached_input is None else self.price_cached_input
        )
        return (
            (input_tokens - cached) * self.price_input
            + cached * cached_price
            + output_tokens * self.price_output
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(slots=True)
class ModelRequest:
    system: str
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: Literal["auto", "none"] = "auto"
    max_output_tokens: int = 4096
    thinking_level: str | None = None
    json_schema: dict[str, Any] | None = None
    schema_name: str = "result"

    def modalities(self) -> set[Modality]:
        found: set[Modality] = set()
        for message in self.messages:
            found |= message.modalities()
        return found


# --- neutral events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    call: ToolCall


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0  # of input_tokens, served from the provider's prompt cache


@dataclass(frozen=True, slots=True)
class Finish:
    reason: Literal["stop", "tool_calls", "length", "content_filter"]


Event = TextDelta | ToolCallEvent | Usage | Finish


# --- errors -------------------------------------------------------------------------


class ErrorKind(StrEnum):
    RETRY = "retry"  # same target again, after a pause
    FALLBACK = "fallback"  # this target will not do; try the next one
    FATAL = "fatal"  # no target will do (bad request, bad key)


class ProviderError(Exception):
    """A classified failure of one model call."""

    def __init__(
        self,
        kind: ErrorKind,
        category: str,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{category}: {detail}")
        self.kind = kind
        self.category = category
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    def with_kind(self, kind: ErrorKind) -> ProviderError:
        return ProviderError(
            kind, self.category, self.detail, status=self.status, retry_after=self.retry_after
        )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify_status(status: int, detail: str, retry_after: float | None) -> ProviderError:
    """The protocol-independent part of HTTP status classification."""
    if status in (401, 403):
        return ProviderError(ErrorKind.FATAL, "auth", detail, status=status)
    if status == 404:
        return ProviderError(ErrorKind.FALLBACK, "not_found", detail, status=status)
    if status == 429:
        return ProviderError(
            ErrorKind.RETRY, "rate_limit", detail, status=status, retry_after=retry_after
        )
    if status in (408, 409, 425) or status >= 500:
        return ProviderError(
            ErrorKind.RETRY, "server", detail, status=status, retry_after=retry_after
        )
    return ProviderError(ErrorKind.FATAL, "bad_request", detail, status=status)


# --- HTTP + SSE plumbing --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    first_token: float = 60.0
    idle: float = 30.0
    total: float = 300.0


MAX_ERROR_BODY = 64 * 1024


class Provider(ABC):
    """Streams one request to one target; yields neutral events or raises ProviderError."""

    protocol: Protocol

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str, timeouts: Timeouts):
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeouts = timeouts

    @abstractmethod
    def build(self, target: Target, request: ModelRequest) -> httpx.Request:
        """The HTTP request for a streamed call."""

    @abstractmethod
    def classify(self, status: int, headers: httpx.Headers, body: bytes) -> ProviderError:
        """Turn a non-2xx answer into a classified error."""

    @abstractmethod
    def parse(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[Event]:
        """Turn the SSE stream into neutral events."""

    async def stream(
        self, target: Target, request: ModelRequest, *, deadline: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """One call. It ends by TOTAL_TIMEOUT after it started, or by `deadline` (loop
        time) if that is sooner: the answer's head, its body (an error body or a body
        that is not an event stream too) and its stream all run under it."""
        http_request = self.build(target, request)
        loop = asyncio.get_running_loop()
        own = loop.time() + self._timeouts.total
        deadline = own if deadline is None else min(own, deadline)
        try:
            wait = min(self._timeouts.first_token, deadline - loop.time())
            if wait <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait):
                response = await self._client.send(http_request, stream=True)
        except TimeoutError:
            raise ProviderError(
                ErrorKind.RETRY, "timeout", "no response before the first-token timeout"
            ) from None
        except httpx.TimeoutException as error:
            raise ProviderError(ErrorKind.RETRY, "timeout", type(error).__name__) from None
        except httpx.TransportError as error:
            raise ProviderError(
                ErrorKind.RETRY, "connection", f"{type(error).__name__}: {error}"
            ) from None
        try:
            await self._check_response(response, deadline)
            async for event in self.parse(self._events(response, deadline)):
                yield event
        except httpx.TransportError as error:
            raise ProviderError(
                ErrorKind.RETRY, "stream_cut", f"{type(error).__name__}: {error}"
            ) from None
        finally:
            await response.aclose()

    async def _check_response(self, response: httpx.Response, deadline: float) -> None:
        status = response.status_code
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            raise ProviderError(
                ErrorKind.FALLBACK,
                "redirect",
                f"HTTP {status} redirect to {location}; check COMETAPI_BASE_URL",
                status=status,
            )
        if status >= 400:
            body = await _read_capped(response, deadline)
            raise self.classify(status, response.headers, body)
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            body = await _read_capped(response, deadline)
            snippet = body[:200].decode("utf-8", "replace").strip()
            raise ProviderError(
                ErrorKind.RETRY,
                "bad_response",
                f"expected an event stream, got {content_type or 'no content type'}: {snippet!r}",
                status=status,
            )

    async def _events(
        self, response: httpx.Response, deadline: float
    ) -> AsyncIterator[ServerSentEvent]:
        loop = asyncio.get_running_loop()
        iterator = EventSource(response).aiter_sse()
        first = True
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ProviderError(
                    ErrorKind.FALLBACK, "timeout", "the answer took longer than the total timeout"
                )
            limit = self._timeouts.first_token if first else self._timeouts.idle
            try:
                async with asyncio.timeout(min(limit, remaining)):
                    event = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                what = "first token" if first else "next chunk"
                raise ProviderError(
                    ErrorKind.RETRY, "timeout", f"no {what} within {min(limit, remaining):.0f} s"
                ) from None
            first = False
            yield event


async def _read_capped(response: httpx.Response, deadline: float) -> bytes:
    """The start of a body that is not an event stream (an error, a proxy's page): what
    came by `deadline` (loop time), at most MAX_ERROR_BODY bytes. A body that stalls is
    cut there: the status alone classifies the answer."""
    body = b""
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(max(remaining, 0.0)):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= MAX_ERROR_BODY:
                    break
    except (httpx.TransportError, TimeoutError):
        pass
    return body[:MAX_ERROR_BODY]


def load_json(data: str) -> Any:
    """Parse one SSE data payload; a malformed chunk is a retryable bad response."""
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise ProviderError(
            ErrorKind.RETRY, "bad_response", f"malformed JSON in stream: {data[:120]!r}"
        ) from None


def json_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
