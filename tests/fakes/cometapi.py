"""In-process fake of the CometAPI gateway for teambot's tests.

It speaks the two real wire protocols over real HTTP on 127.0.0.1:

* OpenAI chat completions: ``POST /v1/chat/completions`` (JSON or SSE) and ``GET /v1/models``;
* Gemini native REST: ``POST /v1beta/models/{model}:generateContent`` and
  ``:streamGenerateContent`` (SSE with ``?alt=sse``, otherwise a JSON array).

Every request is validated the way the real service would (the OpenAI body against the public
OpenAPI spec in ``tests/specs``, Gemini pieces against ``google.genai.types``, plus the model
rules the schemas cannot express) and recorded. Tests decide what the "model" answers with
:class:`Reply` and inject failures with :class:`Fault` subclasses::

    async with FakeCometAPI(api_key="test-key") as fake:
        fake.script("gpt-5.3-chat-latest", RateLimited(), times=2)   # fail twice, then recover
        fake.script("gpt-5.3-chat-latest", Reply("Hello!", chunks=4))
        ...  # point the bot at fake.base_url
        assert fake.rejected == []

With nothing scripted, :func:`default_responder` answers ``Echo: <last user text>`` instantly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import os
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import pydantic
import yaml
from aiohttp import web
from google.genai import types as gtypes
from openapi_schema_validator import OAS31Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = [
    "CHAT_LATEST_UNSUPPORTED_PARAMS",
    "DEFAULT_MODELS",
    "DUMMY_THOUGHT_SIGNATURES",
    "GEMINI_3_1_FLASH_LITE",
    "GPT_5_3_CHAT_LATEST",
    "OPENAI_SPEC_PATH",
    "BadRequest",
    "Behaviour",
    "CloudflareTimeout",
    "ConnectionReset",
    "ContextTooLong",
    "FakeCometAPI",
    "Fault",
    "Forbidden",
    "HtmlBody",
    "HttpError",
    "ModelSpec",
    "QuotaExhausted",
    "RateLimited",
    "RecordedRequest",
    "Redirect",
    "Rejection",
    "Reply",
    "RequestTimeout",
    "Responder",
    "ServerError",
    "StalledBody",
    "StreamCut",
    "StreamError",
    "ToolCall",
    "Unauthorized",
    "Usage",
    "default_responder",
    "estimate_tokens",
    "openai_schema_errors",
    "openai_validator",
]

Protocol: TypeAlias = Literal["openai", "gemini", "other"]
#: jsonschema.exceptions.ValidationError (jsonschema ships no type stubs)
_SchemaError: TypeAlias = Any

# --------------------------------------------------------------------------------------------
# Model table
# --------------------------------------------------------------------------------------------

#: Parameters that OpenAI's ``*-chat-latest`` models reject (400 ``unsupported_parameter``).
CHAT_LATEST_UNSUPPORTED_PARAMS: frozenset[str] = frozenset(
    {
        "reasoning_effort",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "max_tokens",
    }
)

GEMINI_3_THINKING_LEVELS: tuple[str, ...] = ("minimal", "low", "medium", "high")


@dataclass(frozen=True)
class ModelSpec:
    """One row of the fake's model table. Add rows with :meth:`FakeCometAPI.add_model`."""

    id: str
    protocol: Literal["openai", "gemini"]
    context_window: int
    max_output_tokens: int
    _: KW_ONLY
    #: Input kinds accepted besides text: "image", "audio", "video", "file" (PDF / documents).
    input_modalities: frozenset[str] = frozenset({"text", "image"})
    #: OpenAI request parameters rejected with ``unsupported_parameter``; None = the
    #: ``*-chat-latest`` set when the id ends in ``-chat-latest``, else none.
    unsupported_params: frozenset[str] | None = None
    #: Gemini ``thinkingLevel`` values accepted (lower case); empty = thinkingLevel rejected.
    thinking_levels: tuple[str, ...] = ()
    default_thinking_level: str | None = None
    #: Gemini ``thoughtsTokenCount`` reported per thinking level (0 = field omitted).
    thoughts_tokens: Mapping[str, int] = field(
        default_factory=lambda: {"minimal": 0, "low": 64, "medium": 256, "high": 1024}
    )
    #: Fixed prompt-token cost of one media part, by modality.
    media_tokens: Mapping[str, int] = field(
        default_factory=lambda: {"image": 765, "audio": 800, "video": 2580, "file": 1500}
    )
    owned_by: str = "system"
    created: int = 1_767_225_600
    listed: bool = True

    def rejected_params(self) -> frozenset[str]:
        if self.unsupported_params is not None:
            return self.unsupported_params
        if self.id.endswith("-chat-latest"):
            return CHAT_LATEST_UNSUPPORTED_PARAMS
        return frozenset()


GPT_5_3_CHAT_LATEST = ModelSpec(
    "gpt-5.3-chat-latest",
    "openai",
    context_window=128_000,
    max_output_tokens=16_384,
    input_modalities=frozenset({"text", "image", "file"}),
    owned_by="openai",
)
GEMINI_3_1_FLASH_LITE = ModelSpec(
    "gemini-3.1-flash-lite",
    "gemini",
    context_window=1_048_576,
    max_output_tokens=65_536,
    input_modalities=frozenset({"text", "image", "audio", "video", "file"}),
    thinking_levels=GEMINI_3_THINKING_LEVELS,
    default_thinking_level="high",
    media_tokens={"image": 258, "audio": 800, "video": 2580, "file": 1500},
    owned_by="google",
)
DEFAULT_MODELS: tuple[ModelSpec, ...] = (GPT_5_3_CHAT_LATEST, GEMINI_3_1_FLASH_LITE)

#: Values Google documents for history it did not produce itself; always accepted.
DUMMY_THOUGHT_SIGNATURES: frozenset[str] = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)


def estimate_tokens(text: str) -> int:
    """The fake's tokenizer: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


# --------------------------------------------------------------------------------------------
# OpenAI spec: loaded and compiled once per process
# --------------------------------------------------------------------------------------------

#: ``tests/specs/openai-openapi.yaml`` (override: $OPENAI_OPENAPI_SPEC).
OPENAI_SPEC_PATH = Path(
    os.environ.get("OPENAI_OPENAPI_SPEC")
    or Path(__file__).resolve().parents[1] / "specs" / "openai-openapi.yaml"
)
_SPEC_URI = "urn:teambot:openai-openapi"
_spec_lock = threading.Lock()
_spec_cache: dict[str, Any] = {}
_validator_cache: dict[str, Any] = {}


def _to_oas31(node: Any) -> Any:
    """Rewrite the OAS 3.0 leftovers in the spec (``nullable``, boolean ``exclusiveMinimum``)
    into JSON Schema 2020-12 so one OAS31 validator handles the whole (mixed) document."""
    if isinstance(node, list):
        return [_to_oas31(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {key: _to_oas31(value) for key, value in node.items()}
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(flag), bool):
            exclusive = out.pop(flag)
            if exclusive and bound in out:
                out[flag] = out.pop(bound)
    if out.get("nullable") is True:
        del out["nullable"]
        kind = out.get("type")
        if isinstance(kind, str) and not {"$ref", "oneOf", "anyOf", "allOf"} & out.keys():
            out["type"] = [kind, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


def _openai_spec() -> dict[str, Any]:
    with _spec_lock:
        if "spec" not in _spec_cache:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            with OPENAI_SPEC_PATH.open("rb") as fh:
                raw = yaml.load(fh, Loader=loader)
            _spec_cache["spec"] = {"components": _to_oas31(raw["components"])}
            registry: Registry[Any] = Registry().with_resource(
                _SPEC_URI, DRAFT202012.create_resource(_spec_cache["spec"])
            )
            _spec_cache["registry"] = registry
        spec: dict[str, Any] = _spec_cache["spec"]
        return spec


def openai_validator(schema_name: str) -> Any:
    """A compiled OAS 3.1 validator for ``#/components/schemas/<schema_name>`` of the spec."""
    _openai_spec()
    with _spec_lock:
        if schema_name not in _validator_cache:
            _validator_cache[schema_name] = OAS31Validator(
                {"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"},
                registry=_spec_cache["registry"],
            )
        return _validator_cache[schema_name]


def openai_schema_errors(schema_name: str, instance: Any) -> list[str]:
    """Readable validation errors of ``instance`` against a spec schema (empty when valid)."""
    errors = sorted(openai_validator(schema_name).iter_errors(instance), key=str)
    return [
        f"{_param_path(_most_relevant(e).absolute_path)}: {_most_relevant(e).message}"
        for e in errors
    ]


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = _openai_spec()["components"]["schemas"][name]
    return schema


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = _schema(str(node["$ref"]).rsplit("/", 1)[-1])
    return node


def _property_names(node: dict[str, Any]) -> set[str]:
    node = _resolve(node)
    names = set(node.get("properties", {}))
    for part in node.get("allOf", []):
        names |= _property_names(part)
    return names


def _most_relevant(error: _SchemaError) -> _SchemaError:
    """Descend through oneOf/anyOf to the branch that got furthest (the one the caller meant)."""
    while error.context:
        if _type_mismatch_only(error):
            return error
        branches: dict[Any, list[_SchemaError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)

        def score(errs: list[_SchemaError]) -> tuple[int, int]:
            return (min(len(e.relative_path) for e in errs), -len(errs))

        branch = max(branches.values(), key=score)
        error = max(branch, key=lambda e: len(e.relative_path))
    return error


def _type_mismatch_only(error: _SchemaError) -> bool:
    """A oneOf/anyOf whose every branch failed only on the value's own type."""
    return bool(error.context) and all(
        sub.validator == "type" and not sub.relative_path for sub in error.context
    )


def _param_path(path: Iterable[Any]) -> str:
    out = ""
    for item in path:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out


_JSON_TYPE_WORDS = {
    "string": "a string",
    "number": "a decimal",
    "integer": "an integer",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _openai_rejection_from_schema(error: _SchemaError) -> Rejection:
    err = _most_relevant(error)
    param = _param_path(err.absolute_path)
    if err.validator == "required":
        match = re.match(r"'([^']+)'", err.message)
        missing = match.group(1) if match else err.message
        full = f"{param}.{missing}" if param else missing
        return Rejection(
            400, "missing_required_parameter", f"Missing required parameter: '{full}'.", full
        )
    if err.validator == "type" or _type_mismatch_only(err):
        expected: list[Any] = []
        for sub in err.context or [err]:
            value = sub.validator_value
            for kind in value if isinstance(value, list) else [value]:
                if kind not in expected:
                    expected.append(kind)
        words = " or ".join(_JSON_TYPE_WORDS.get(str(t), str(t)) for t in expected if t != "null")
        if " or " in words:
            words = f"one of {words}"
        return Rejection(
            400,
            "invalid_type",
            f"Invalid type for '{param}': expected {words or 'null'}, "
            f"but got {_json_type_of(err.instance)} instead.",
            param,
        )
    if err.validator in ("enum", "const"):
        allowed = err.validator_value if err.validator == "enum" else [err.validator_value]
        supported = ", ".join(repr(v) for v in allowed if v is not None)
        return Rejection(
            400,
            "invalid_value",
            f"Invalid value: {err.instance!r}. Supported values are: {supported}.",
            param,
        )
    if err.validator in ("minimum", "exclusiveMinimum"):
        return Rejection(
            400,
            "integer_below_min_value"
            if isinstance(err.instance, int)
            else "decimal_below_min_value",
            f"Invalid '{param}': value below minimum. Expected a value >= {err.validator_value}, "
            f"but got {err.instance} instead.",
            param,
        )
    if err.validator in ("maximum", "exclusiveMaximum"):
        return Rejection(
            400,
            "integer_above_max_value"
            if isinstance(err.instance, int)
            else "decimal_above_max_value",
            f"Invalid '{param}': value above maximum. Expected a value <= {err.validator_value}, "
            f"but got {err.instance} instead.",
            param,
        )
    if err.validator == "minItems" and not err.instance:
        return Rejection(
            400,
            "empty_array",
            f"Invalid '{param}': empty array. Expected an array with minimum length "
            f"{err.validator_value}, but got an empty array instead.",
            param,
        )
    return Rejection(400, "invalid_value", f"Invalid value for '{param}': {err.message}", param)


# --------------------------------------------------------------------------------------------
# Scripting: replies, tool calls, faults
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A function call the model makes. ``args`` is a dict (JSON-encoded for OpenAI, an object
    for Gemini) or a raw JSON string sent verbatim to OpenAI clients (may be invalid on purpose;
    Gemini needs it to parse as an object). ``id`` is the OpenAI tool-call id (auto if None)."""

    name: str
    args: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.args, str):
            return self.args
        return json.dumps(dict(self.args), ensure_ascii=False, separators=(",", ":"))

    def args_object(self) -> dict[str, Any]:
        if isinstance(self.args, str):
            parsed = json.loads(self.args)
            if not isinstance(parsed, dict):
                raise ValueError(f"Gemini functionCall.args must be an object, got {self.args!r}")
            return parsed
        return dict(self.args)


@dataclass(frozen=True)
class Usage:
    """Token counts to report instead of the fake's estimates (None = estimate)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Input tokens served from the prompt cache (None = what the prefix cache found).
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Reply:
    """What the model answers; rendered in the wire format of the protocol that asked.

    Streaming shape: ``chunks`` content pieces (text split evenly), then each tool call as
    ``arg_fragments`` deltas (OpenAI: the first carries id+name with ``arguments: ""``, the
    rest carry the argument pieces; Gemini: all calls whole in one chunk).

    Timing (all default 0, i.e. instant): ``delay`` before the response headers,
    ``first_chunk_delay`` after the headers and before the first body byte, ``chunk_delay``
    between stream events, and a single ``stall`` of that many seconds before event number
    ``stall_after`` (0-based).
    """

    text: str = ""
    _: KW_ONLY
    tool_calls: Sequence[ToolCall] = ()
    chunks: int = 3
    arg_fragments: int = 3
    #: OpenAI names (stop, length, tool_calls, content_filter) or Gemini names (STOP,
    #: MAX_TOKENS, SAFETY, ...); None = derived (tool_calls / stop, or length when the
    #: request's output-token limit cut the text).
    finish_reason: str | None = None
    usage: Usage | None = None
    #: Gemini thoughtsTokenCount / OpenAI reasoning_tokens; None = per thinking level.
    thoughts_tokens: int | None = None
    #: Gemini: a thought-summary part emitted first when includeThoughts is true.
    thought_summary: str | None = None
    #: Gemini: put a thoughtSignature on the last text part of a reply without calls.
    sign_text: bool = True
    #: Gemini: send this thoughtSignature instead of one the fake issues.
    thought_signature: str | None = None
    #: Gemini streaming: finishReason in an extra final chunk whose content has no parts.
    separate_finish_chunk: bool = False
    delay: float = 0.0
    first_chunk_delay: float = 0.0
    chunk_delay: float = 0.0
    stall_after: int | None = None
    stall: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """Base class of scripted failures. ``delay`` seconds pass before the fault acts."""

    delay: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True)
class HttpError(Fault):
    """An HTTP error in the protocol's JSON error shape.

    OpenAI: ``{"error": {"message", "type", "param", "code"}}``; Gemini:
    ``{"error": {"code", "message", "status", "details"?}}``. Unset fields get the real
    service's usual values for ``status``.
    """

    status: int
    message: str | None = None
    code: str | None = None
    error_type: str | None = None
    param: str | None = None
    google_status: str | None = None
    details: Sequence[Mapping[str, Any]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BadRequest(HttpError):
    """400; the first positional argument is the message."""

    status: int = field(default=400, kw_only=True)


@dataclass(frozen=True)
class Unauthorized(HttpError):
    """401; the first positional argument is the message."""

    status: int = field(default=401, kw_only=True)


@dataclass(frozen=True)
class Forbidden(HttpError):
    """403; the first positional argument is the message."""

    status: int = field(default=403, kw_only=True)


@dataclass(frozen=True)
class RequestTimeout(HttpError):
    """408; the first positional argument is the message."""

    status: int = field(default=408, kw_only=True)


@dataclass(frozen=True)
class ServerError(HttpError):
    """500 by default; also 502, 503, 504 (JSON bodies). See :class:`CloudflareTimeout`."""

    status: int = 500


@dataclass(frozen=True)
class RateLimited(Fault):
    """429 rate limit. OpenAI: code ``rate_limit_exceeded`` with ``retry-after-ms`` and/or
    ``Retry-After`` headers; Gemini: ``RESOURCE_EXHAUSTED`` with QuotaFailure and a
    ``google.rpc.RetryInfo`` detail (``retryDelay``), unless disabled."""

    retry_after: float | None = 2.0
    retry_after_ms_header: bool = True
    retry_after_header: bool = True
    retry_info: bool = True


@dataclass(frozen=True)
class QuotaExhausted(Fault):
    """429 that retrying will not fix. OpenAI: ``insufficient_quota``; Gemini:
    ``RESOURCE_EXHAUSTED`` with a QuotaFailure (daily quota) and no RetryInfo."""


@dataclass(frozen=True)
class ContextTooLong(Fault):
    """The prompt-too-long 400 (``context_length_exceeded`` / Gemini token-limit
    INVALID_ARGUMENT), whatever the request's real size."""

    prompt_tokens: int | None = None


@dataclass(frozen=True)
class ConnectionReset(Fault):
    """The TCP connection is reset (RST) before any response byte."""


@dataclass(frozen=True)
class StreamCut(Fault):
    """The reply starts normally, then after ``after`` stream events (for a non-streamed
    request: half the body) the connection closes without the end of the stream
    (no ``[DONE]``, no finish, incomplete chunked body). ``reply`` None = the responder's."""

    after: int = 2
    reply: Reply | None = None


@dataclass(frozen=True)
class StreamError(Fault):
    """HTTP 200, ``after`` normal stream events, then an error object in the stream and the
    end of the body. OpenAI: ``data: {"error": {...}}``; Gemini: ``data: {"error": {...}}``
    or, with ``raw=True``, the error JSON pretty-printed without the ``data:`` prefix (as the
    real API sometimes does). A non-streamed request gets a 200 whose body is the error."""

    after: int = 1
    message: str | None = None
    status: int = 500
    raw: bool = False
    reply: Reply | None = None


@dataclass(frozen=True)
class HtmlBody(Fault):
    """A ``text/html`` body with ``status`` (200 = e.g. a captive portal, 502 = a proxy page)."""

    status: int = 200
    html: str | None = None


@dataclass(frozen=True)
class CloudflareTimeout(HtmlBody):
    """Cloudflare's 524 "A timeout occurred" HTML page."""

    status: int = 524


@dataclass(frozen=True)
class Redirect(Fault):
    """A redirect (302 by default). The default Location is the fake's own HTML login page."""

    location: str = "/__fake__/login"
    status: int = 302


@dataclass(frozen=True)
class StalledBody(Fault):
    """The answer of ``fault`` (an HTTP error in the protocol's JSON shape, an
    :class:`HtmlBody`, a :class:`Redirect`...) whose body stalls: the status line and headers
    (with the full ``Content-Length``) and the first ``sent`` bytes of the body go out, then
    nothing for ``stall`` seconds, then the rest. As a proxy or a sick upstream does; a
    client that reads the body without a deadline waits the whole ``stall``."""

    fault: Fault = field(default_factory=lambda: ServerError(502))
    stall: float = 60.0
    sent: int = 0


Behaviour: TypeAlias = "Reply | Fault | Callable[[RecordedRequest], Reply | Fault]"
Responder: TypeAlias = "Callable[[RecordedRequest], Reply | Fault]"


# --------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """Why the fake refused a request (as the real service would have)."""

    status: int
    code: str | None
    message: str
    param: str | None = None
    details: Sequence[Mapping[str, Any]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)


def _field(obj: Mapping[str, Any], camel: str) -> Any:
    """Proto-JSON accepts both lowerCamelCase and snake_case names."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower())


def _openai_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


@dataclass(eq=False)
class RecordedRequest:
    """One request the fake received, whether answered, faulted or rejected."""

    index: int
    protocol: Protocol
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    received_at: float
    body: Any = None
    model: str | None = None
    stream: bool = False
    #: Gemini: ``alt=sse`` was asked for.
    sse: bool = False
    rejection: Rejection | None = None
    #: What answered: "Reply", a fault class name, "rejected", or None while in flight.
    outcome: str | None = None
    #: Streamed replies: how many events went out, and when (time.monotonic()) the client
    #: closed the connection before the stream's end, if it did.
    frames_sent: int = 0
    client_closed_at: float | None = None

    def __repr__(self) -> str:
        state = (
            f"rejected {self.rejection.status} {self.rejection.code}: {self.rejection.message}"
            if self.rejection
            else (self.outcome or "pending")
        )
        return (
            f"<RecordedRequest #{self.index} {self.protocol} {self.method} {self.path} "
            f"model={self.model!r} stream={self.stream} -> {state}>"
        )

    @property
    def rejected(self) -> bool:
        return self.rejection is not None

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}

    @property
    def messages(self) -> list[dict[str, Any]]:
        """OpenAI ``messages`` (empty for Gemini)."""
        msgs = self.json.get("messages") if self.protocol == "openai" else None
        return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []

    @property
    def contents(self) -> list[dict[str, Any]]:
        """Gemini ``contents`` (empty for OpenAI)."""
        items = self.json.get("contents") if self.protocol == "gemini" else None
        return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []

    @property
    def system_text(self) -> str:
        if self.protocol == "openai":
            return "\n".join(
                _openai_text(m.get("content"))
                for m in self.messages
                if m.get("role") in ("system", "developer")
            )
        si = _field(self.json, "systemInstruction")
        parts = si.get("parts", []) if isinstance(si, dict) else []
        return "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))

    @property
    def last_user_text(self) -> str:
        """Text of the last user message that has text (tool results are skipped)."""
        if self.protocol == "openai":
            for m in reversed(self.messages):
                if m.get("role") == "user":
                    return _openai_text(m.get("content"))
            return ""
        for c in reversed(self.contents):
            if c.get("role", "user") != "user":
                continue
            texts = [
                str(p["text"]) for p in c.get("parts", []) if isinstance(p, dict) and "text" in p
            ]
            if texts:
                return "".join(texts)
        return ""

    @property
    def tool_results(self) -> list[tuple[str, str]]:
        """Tool results ending the conversation, as (tool_call_id or function name, content)."""
        out: list[tuple[str, str]] = []
        if self.protocol == "openai":
            for m in reversed(self.messages):
                if m.get("role") != "tool":
                    break
                out.append((str(m.get("tool_call_id", "")), _openai_text(m.get("content"))))
            return out[::-1]
        if self.contents and self.contents[-1].get("role", "user") == "user":
            for p in self.contents[-1].get("parts", []):
                fr = _field(p, "functionResponse") if isinstance(p, dict) else None
                if isinstance(fr, dict):
                    out.append(
                        (str(fr.get("name", "")), json.dumps(fr.get("response"), sort_keys=True))
                    )
        return out

    @property
    def tool_names(self) -> list[str]:
        """Names of the functions the request declares."""
        tools = self.json.get("tools")
        names: list[str] = []
        if not isinstance(tools, list):
            return names
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            if self.protocol == "openai":
                fn = tool.get("function")
                if isinstance(fn, dict):
                    names.append(str(fn.get("name")))
            else:
                for decl in _field(tool, "functionDeclarations") or []:
                    if isinstance(decl, dict):
                        names.append(str(decl.get("name")))
        return names

    @property
    def generation_config(self) -> dict[str, Any]:
        gc = _field(self.json, "generationConfig")
        return gc if isinstance(gc, dict) else {}

    @property
    def thinking_level(self) -> str | None:
        """Gemini thinkingLevel as sent (lower-cased), or None."""
        tc = _field(self.generation_config, "thinkingConfig")
        level = _field(tc, "thinkingLevel") if isinstance(tc, dict) else None
        return str(level).lower() if level is not None else None


def default_responder(request: RecordedRequest) -> Reply:
    """Deterministic answer derived from the request: ``Tool result: <content>`` when the
    conversation ends with tool results, else ``Echo: <last user text>``."""
    results = request.tool_results
    if results:
        return Reply("Tool result: " + "; ".join(content for _, content in results))
    return Reply(f"Echo: {request.last_user_text}")


# --------------------------------------------------------------------------------------------
# Wire constants
# --------------------------------------------------------------------------------------------

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GOOGLE_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    408: "Request timed out.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    502: "Bad gateway.",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_OPENAI_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to sample from this model."),
    404: ("invalid_request_error", None, "Not found."),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}
_REASONS = {524: "A Timeout Occurred", 520: "Unknown Error", 522: "Connection Timed Out"}

_TO_GEMINI_FINISH = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "content_filter": "SAFETY",
}
_TO_OPENAI_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

_OPENAI_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_OPENAI_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_GEMINI_FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
_OPENAI_IMAGE_MIME = ("image/png", "image/jpeg", "image/gif", "image/webp")
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)
_GEMINI_DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
    "toolCall",
    "toolResponse",
)

_GEMINI_TOP_LEVEL: dict[str, pydantic.TypeAdapter[Any]] = {}


def _gemini_adapters() -> dict[str, pydantic.TypeAdapter[Any]]:
    if not _GEMINI_TOP_LEVEL:
        _GEMINI_TOP_LEVEL.update(
            {
                "contents": pydantic.TypeAdapter(list[gtypes.Content]),
                "systemInstruction": pydantic.TypeAdapter(gtypes.Content),
                "tools": pydantic.TypeAdapter(list[gtypes.Tool]),
                "toolConfig": pydantic.TypeAdapter(gtypes.ToolConfig),
                "safetySettings": pydantic.TypeAdapter(list[gtypes.SafetySetting]),
                "generationConfig": pydantic.TypeAdapter(gtypes.GenerationConfig),
                "cachedContent": pydantic.TypeAdapter(str),
            }
        )
    return _GEMINI_TOP_LEVEL


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _google_path(prefix: str, loc: Iterable[Any]) -> str:
    out = _snake(prefix)
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else f".{_snake(str(item))}"
    return out


def _google_json(obj: Any) -> bytes:
    # Google's JSON spacing: ``{"a": 1,"b": 2}``
    return json.dumps(obj, ensure_ascii=False, separators=(",", ": ")).encode()


def _duration(seconds: float) -> str:
    """A google.protobuf.Duration in its JSON form ("2s", "2.500s")."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


# --------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------


class FakeCometAPI:
    """The fake gateway. Use as ``async with FakeCometAPI(api_key=...) as fake``."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        models: Iterable[ModelSpec] = DEFAULT_MODELS,
        validate_responses: bool = False,
        prefix_cache: bool = False,
    ) -> None:
        self.api_key = api_key
        #: Report cached input tokens as a provider's prompt cache would: the tokens of the
        #: longest run of leading messages (after the tools and system prompt) that an
        #: earlier request to the same model began with.
        self.prefix_cache = prefix_cache
        self._prefixes: set[str] = set()
        self.models: dict[str, ModelSpec] = {m.id: m for m in models}
        #: Validate everything the fake emits (spec / genai types); a failure answers 500.
        self.validate_responses = validate_responses
        self.requests: list[RecordedRequest] = []
        self.responder: Responder = default_responder
        self._responders: dict[str, Responder] = {}
        self._queues: dict[str | None, deque[Behaviour]] = {}
        self._signatures: dict[str, str] = {}
        self._secret = hashlib.sha256(f"{id(self)}:{time.time_ns()}".encode()).hexdigest()[:16]
        self._counter = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        #: Problems of the fake itself (a responder raised, a Reply could not be rendered or
        #: failed validate_responses); each also answered HTTP 500 with a text/plain body.
        self.errors: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeCometAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._runner is not None:
            return
        await asyncio.to_thread(_openai_spec)  # 3 MB of YAML: parse it off the event loop
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_get("/v1/models", self._openai_models)
        app.router.add_post("/v1beta/models/{name}", self._gemini)
        app.router.add_get("/__fake__/login", self._login_page)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.25, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeCometAPI is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash, no ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    # -- model table -------------------------------------------------------------------------

    def add_model(self, spec: ModelSpec) -> None:
        self.models[spec.id] = spec

    def remove_model(self, model_id: str) -> None:
        self.models.pop(model_id, None)

    # -- scripting ---------------------------------------------------------------------------

    def script(self, model: str | None, *behaviours: Behaviour, times: int = 1) -> None:
        """Queue behaviours, one consumed per valid request for ``model`` (None = a global
        queue used by any model after that model's own queue is empty). ``times`` repeats
        each behaviour: ``script(m, ServerError(503), times=3)`` fails the next 3 requests."""
        queue = self._queues.setdefault(model, deque())
        for behaviour in behaviours:
            for _ in range(times):
                queue.append(behaviour)

    def pending(self, model: str | None = None) -> int:
        """Scripted behaviours not yet consumed for ``model`` (None = the global queue)."""
        return len(self._queues.get(model, ()))

    def clear_script(self) -> None:
        self._queues.clear()

    def set_responder(self, responder: Responder | None, model: str | None = None) -> None:
        """Replace the answer used when nothing is scripted (None restores the default)."""
        if model is None:
            self.responder = responder or default_responder
        elif responder is None:
            self._responders.pop(model, None)
        else:
            self._responders[model] = responder

    # -- inspection --------------------------------------------------------------------------

    @property
    def rejected(self) -> list[RecordedRequest]:
        """Requests the fake refused as invalid (auth, schema, model rules, signatures)."""
        return [r for r in self.requests if r.rejection is not None]

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    def clear_requests(self) -> None:
        self.requests.clear()

    @property
    def issued_signatures(self) -> dict[str, str]:
        """Gemini thoughtSignatures issued so far -> the function name (or "" for text)."""
        return dict(self._signatures)

    # -- plumbing ----------------------------------------------------------------------------

    def _next_id(self) -> int:
        self._counter += 1
        return self._counter

    def _token(self, kind: str, length: int = 24) -> str:
        digest = hashlib.sha256(f"{self._secret}:{kind}:{self._next_id()}".encode()).hexdigest()
        return digest[:length]

    async def _record(self, request: web.Request, protocol: Protocol) -> RecordedRequest:
        raw = await request.read() if request.can_read_body else b""
        rec = RecordedRequest(
            index=len(self.requests),
            protocol=protocol,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            raw_body=raw,
            received_at=time.monotonic(),
        )
        self.requests.append(rec)
        return rec

    def _next_behaviour(self, rec: RecordedRequest) -> Reply | Fault:
        behaviour: Behaviour | None = None
        for key in (rec.model, None):
            queue = self._queues.get(key)
            if queue:
                behaviour = queue.popleft()
                break
        if behaviour is None:
            responder = self._responders.get(rec.model or "", self.responder)
            behaviour = responder
        if isinstance(behaviour, (Reply, Fault)):
            return behaviour
        result = behaviour(rec)
        if not isinstance(result, (Reply, Fault)):
            raise TypeError(f"responder returned {result!r}, expected a Reply or a Fault")
        return result

    def _reply_for(self, rec: RecordedRequest, given: Reply | None) -> Reply:
        if given is not None:
            return given
        responder = self._responders.get(rec.model or "", self.responder)
        result = responder(rec)
        return result if isinstance(result, Reply) else Reply("")

    def _reject(self, rec: RecordedRequest, rejection: Rejection) -> web.Response:
        rec.rejection = rejection
        rec.outcome = "rejected"
        if rec.protocol == "gemini":
            return self._gemini_error_response(
                rejection.status,
                rejection.message,
                rejection.code,
                rejection.details,
                rejection.headers,
            )
        error_type = "invalid_request_error"
        if rejection.status >= 500:
            error_type = "server_error"
        return self._openai_error_response(
            rejection.status,
            rejection.message,
            error_type,
            rejection.param,
            rejection.code,
            rejection.headers,
        )

    @staticmethod
    def _openai_error_response(
        status: int,
        message: str,
        error_type: str,
        param: str | None,
        code: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
        return web.json_response(body, status=status, headers=dict(headers or {}))

    @staticmethod
    def _gemini_error_body(
        status: int,
        message: str,
        google_status: str | None,
        details: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": google_status or _GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = [dict(d) for d in details]
        return {"error": error}

    def _gemini_error_response(
        self,
        status: int,
        message: str,
        google_status: str | None,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        body = self._gemini_error_body(status, message, google_status, details)
        return web.Response(
            status=status,
            body=_google_json(body),
            content_type="application/json",
            charset="UTF-8",
            headers=dict(headers or {}),
        )

    # -- OpenAI endpoints --------------------------------------------------------------------

    def _openai_auth(self, request: web.Request) -> Rejection | None:
        header = request.headers.get("Authorization")
        if not header:
            return Rejection(
                401,
                None,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            shown = token.strip()
            masked = f"{shown[:3]}***{shown[-4:]}" if len(shown) > 8 else "***"
            return Rejection(
                401,
                "invalid_api_key",
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
            )
        return None

    async def _openai_models(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "openai")
        if (auth := self._openai_auth(request)) is not None:
            return self._reject(rec, auth)
        rec.outcome = "models"
        data = [
            {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by}
            for m in self.models.values()
            if m.listed
        ]
        return web.json_response({"object": "list", "data": data})

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "openai")
        if (auth := self._openai_auth(request)) is not None:
            return self._reject(rec, auth)
        try:
            body = json.loads(rec.raw_body)
        except ValueError:
            return self._reject(
                rec,
                Rejection(
                    400,
                    None,
                    "We could not parse the JSON body of your request. (HINT: This likely means "
                    "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                    "payload, but what was sent was not valid JSON. If you have trouble figuring "
                    "out how to fix this, please contact us through our help center at "
                    "help.openai.com.)",
                ),
            )
        rec.body = body
        if isinstance(body, dict):
            model = body.get("model")
            rec.model = model if isinstance(model, str) else None
            rec.stream = body.get("stream") is True
        rejection = self._validate_openai(body)
        if rejection is not None:
            return self._reject(rec, rejection)
        return await self._execute(request, rec)

    def _validate_openai(self, body: Any) -> Rejection | None:
        if not isinstance(body, dict):
            return Rejection(
                400,
                "invalid_type",
                f"Invalid type for request body: expected an object, but got "
                f"{_json_type_of(body)} instead.",
            )
        allowed = _property_names(_schema("CreateChatCompletionRequest"))
        for key in body:
            if key not in allowed:
                return Rejection(400, None, f"Unrecognized request argument supplied: {key}")
        messages = body.get("messages")
        if isinstance(messages, list):
            for i, msg in enumerate(messages):
                if isinstance(msg, dict) and "role" in msg and msg["role"] not in _OPENAI_ROLES:
                    supported = ", ".join(f"'{r}'" for r in _OPENAI_ROLES)
                    return Rejection(
                        400,
                        "invalid_value",
                        f"Invalid value: {msg['role']!r}. Supported values are: {supported}.",
                        f"messages[{i}].role",
                    )
        errors = list(openai_validator("CreateChatCompletionRequest").iter_errors(body))
        if errors:
            errors.sort(key=lambda e: (list(map(str, e.absolute_path)), e.validator != "required"))
            return _openai_rejection_from_schema(errors[0])
        assert isinstance(messages, list)
        if (extra := self._openai_message_extras(messages)) is not None:
            return extra

        model_id = body["model"]
        spec = self.models.get(model_id)
        if spec is None or spec.protocol != "openai":
            return Rejection(
                404,
                "model_not_found",
                f"The model `{model_id}` does not exist or you do not have access to it.",
            )
        for name in sorted(spec.rejected_params()):
            if body.get(name) is not None:
                hint = " Use 'max_completion_tokens' instead." if name == "max_tokens" else ""
                return Rejection(
                    400,
                    "unsupported_parameter",
                    f"Unsupported parameter: '{name}' is not supported with this model.{hint}",
                    name,
                )
        for name in ("max_completion_tokens", "max_tokens"):
            value = body.get(name)
            if value is None:
                continue
            if value < 1:
                return Rejection(
                    400,
                    "integer_below_min_value",
                    f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                    f"but got {value} instead.",
                    name,
                )
            if value > spec.max_output_tokens:
                return Rejection(
                    400,
                    "invalid_value",
                    f"{name} is too large: {value}. This model supports at most "
                    f"{spec.max_output_tokens} completion tokens, whereas you provided {value}.",
                    name,
                )
        if body.get("stream_options") is not None and body.get("stream") is not True:
            return Rejection(
                400,
                "invalid_value",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        for i, tool in enumerate(body.get("tools") or []):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and not _OPENAI_TOOL_NAME.match(str(fn.get("name", ""))):
                return Rejection(
                    400,
                    "invalid_value",
                    f"Invalid 'tools[{i}].function.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    f"tools[{i}].function.name",
                )
        if (media := self._openai_media(messages, spec)) is not None:
            return media
        if (order := self._openai_tool_order(messages)) is not None:
            return order
        tokens = self._openai_prompt_tokens(body, spec)
        if tokens > spec.context_window:
            return Rejection(
                400,
                "context_length_exceeded",
                f"This model's maximum context length is {spec.context_window} tokens. However, "
                f"your messages resulted in {tokens} tokens. Please reduce the length of the "
                "messages.",
                "messages",
            )
        return None

    def _openai_message_extras(self, messages: list[Any]) -> Rejection | None:
        branches = _schema("ChatCompletionRequestMessage")["oneOf"]
        by_role: dict[str, set[str]] = {}
        for ref in branches:
            branch = _resolve(ref)
            role_schema = branch.get("properties", {}).get("role", {})
            for role in role_schema.get("enum", []):
                by_role[str(role)] = _property_names(branch)
        for i, msg in enumerate(messages):
            allowed = by_role.get(str(msg.get("role")), set())
            for key in msg:
                if key not in allowed:
                    return Rejection(
                        400,
                        None,
                        f"Additional properties are not allowed ('{key}' was unexpected) - "
                        f"'messages.{i}'",
                    )
        return None

    @staticmethod
    def _openai_media(messages: list[dict[str, Any]], spec: ModelSpec) -> Rejection | None:
        for i, msg in enumerate(messages):
            content = msg.get("content")
            if not isinstance(content, list):
                continue
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                kind = part.get("type")
                if kind == "image_url":
                    if "image" not in spec.input_modalities:
                        return Rejection(
                            400,
                            "invalid_value",
                            "Invalid content type. image_url is only supported by certain models.",
                            f"{where}.type",
                        )
                    url = str(part["image_url"]["url"])
                    if url.startswith("data:"):
                        match = _DATA_URL.match(url)
                        if not match:
                            return Rejection(
                                400,
                                "invalid_image_url",
                                "Invalid image URL: expected a base64-encoded data URL "
                                "(data:image/png;base64,...).",
                                f"{where}.image_url.url",
                            )
                        if match.group(1) not in _OPENAI_IMAGE_MIME:
                            return Rejection(
                                400,
                                "invalid_image_format",
                                f"Invalid MIME type {match.group(1)!r}. Only image types are "
                                "supported: image/png, image/jpeg, image/gif, image/webp.",
                                f"{where}.image_url.url",
                            )
                        try:
                            base64.b64decode(match.group(2), validate=True)
                        except (binascii.Error, ValueError):
                            return Rejection(
                                400,
                                "invalid_image_url",
                                "Invalid image data: the base64 payload could not be decoded.",
                                f"{where}.image_url.url",
                            )
                    elif not url.startswith(("http://", "https://")):
                        return Rejection(
                            400,
                            "invalid_image_url",
                            "Invalid image URL: expected an http(s) URL or a data URL.",
                            f"{where}.image_url.url",
                        )
                elif kind == "input_audio" and "audio" not in spec.input_modalities:
                    return Rejection(
                        400,
                        "invalid_value",
                        "Invalid content type. input_audio is only supported by audio models.",
                        f"{where}.type",
                    )
                elif kind == "file" and "file" not in spec.input_modalities:
                    return Rejection(
                        400,
                        "invalid_value",
                        "Invalid content type. file is not supported by this model.",
                        f"{where}.type",
                    )
        return None

    @staticmethod
    def _openai_tool_order(messages: list[dict[str, Any]]) -> Rejection | None:
        open_ids: list[str] = []
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role == "tool":
                call_id = str(msg.get("tool_call_id"))
                if call_id not in open_ids:
                    return Rejection(
                        400,
                        None,
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.",
                        f"messages.[{i}].role",
                    )
                open_ids.remove(call_id)
                continue
            if open_ids:
                return Rejection(
                    400,
                    None,
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                    f"response messages: {', '.join(open_ids)}",
                    f"messages.[{i}].role",
                )
            if role == "assistant":
                open_ids = [str(c.get("id")) for c in msg.get("tool_calls") or []]
        if open_ids:
            return Rejection(
                400,
                None,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(open_ids)}",
                f"messages.[{len(messages)}].role",
            )
        return None

    @staticmethod
    def _openai_prompt_tokens(body: dict[str, Any], spec: ModelSpec) -> int:
        chars = 0
        media = 0
        for msg in body["messages"]:
            content = msg.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    kind = part.get("type")
                    if kind == "text":
                        chars += len(str(part.get("text", "")))
                    elif kind == "image_url":
                        media += spec.media_tokens.get("image", 0)
                    elif kind == "input_audio":
                        media += spec.media_tokens.get("audio", 0)
                    elif kind == "file":
                        media += spec.media_tokens.get("file", 0)
                    elif kind == "refusal":
                        chars += len(str(part.get("refusal", "")))
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") or {}
                chars += len(str(fn.get("name", ""))) + len(str(fn.get("arguments", "")))
        if body.get("tools"):
            chars += len(json.dumps(body["tools"]))
        return math.ceil(chars / 4) + media

    # -- Gemini endpoint ---------------------------------------------------------------------

    def _gemini_auth(self, request: web.Request) -> Rejection | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return Rejection(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if key != self.api_key:
            return Rejection(
                401,
                "UNAUTHENTICATED",
                "API key not valid. Please pass a valid API key.",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )
        return None

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "gemini")
        name = request.match_info["name"]
        model, _, method = name.rpartition(":")
        rec.model = model or name
        rec.stream = method == "streamGenerateContent"
        rec.sse = rec.stream and request.query.get("alt") == "sse"
        if (auth := self._gemini_auth(request)) is not None:
            return self._reject(rec, auth)
        if method not in ("generateContent", "streamGenerateContent"):
            return self._reject(
                rec,
                Rejection(
                    404,
                    "NOT_FOUND",
                    f"The requested URL {request.path} was not found on this server.",
                ),
            )
        spec = self.models.get(model)
        if spec is None or spec.protocol != "gemini":
            return self._reject(
                rec,
                Rejection(
                    404,
                    "NOT_FOUND",
                    f"models/{model} is not found for API version v1beta, or is not supported "
                    "for generateContent. Call ListModels to see the list of available models "
                    "and their supported methods.",
                ),
            )
        try:
            body = json.loads(rec.raw_body)
        except ValueError as exc:
            return self._reject(
                rec,
                Rejection(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid JSON payload received. Unexpected token.\n{exc}",
                ),
            )
        rec.body = body
        rejection = self._validate_gemini(body, spec)
        if rejection is not None:
            return self._reject(rec, rejection)
        return await self._execute(request, rec)

    def _validate_gemini(self, body: Any, spec: ModelSpec) -> Rejection | None:
        if not isinstance(body, dict):
            return Rejection(
                400,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received. Expected an object at the top level.",
            )
        adapters = _gemini_adapters()
        known = {**adapters, **{_snake(k): v for k, v in adapters.items()}}
        for key, value in body.items():
            adapter = known.get(key)
            if adapter is None:
                return Rejection(
                    400,
                    "INVALID_ARGUMENT",
                    f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.',
                    details=[
                        _bad_request(
                            None,
                            "Invalid JSON payload received. "
                            f'Unknown name "{key}": Cannot find field.',
                        )
                    ],
                )
            try:
                adapter.validate_json(json.dumps(value))
            except pydantic.ValidationError as exc:
                return _gemini_rejection_from_pydantic(key, exc)

        contents = _field(body, "contents")
        if not contents:
            return Rejection(
                400,
                "INVALID_ARGUMENT",
                "* GenerateContentRequest.contents: contents is not specified\n",
            )
        for i, content in enumerate(contents):
            role = content.get("role")
            if role not in (None, "", "user", "model"):
                return Rejection(400, "INVALID_ARGUMENT", "Please use a valid role: user, model.")
            parts = content.get("parts") or []
            if not parts:
                return Rejection(
                    400,
                    "INVALID_ARGUMENT",
                    f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be "
                    "empty.\n",
                )
            for j, part in enumerate(parts):
                if (
                    problem := self._gemini_part(part, f"contents[{i}].parts[{j}]", spec)
                ) is not None:
                    return problem
        si = _field(body, "systemInstruction")
        if isinstance(si, dict):
            for j, part in enumerate(si.get("parts") or []):
                if (
                    problem := self._gemini_part(part, f"system_instruction.parts[{j}]", spec)
                ) is not None:
                    return problem

        for i, tool in enumerate(_field(body, "tools") or []):
            for j, decl in enumerate(_field(tool, "functionDeclarations") or []):
                if not _GEMINI_FUNCTION_NAME.match(str(decl.get("name", ""))):
                    return Rejection(
                        400,
                        "INVALID_ARGUMENT",
                        f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: "
                        "Invalid function name. Must start with a letter or an underscore. Must "
                        "be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or "
                        "dashes (-), with a maximum length of 64.\n",
                    )

        gc = _field(body, "generationConfig") or {}
        max_out = _field(gc, "maxOutputTokens")
        if max_out is not None and not 1 <= int(max_out) <= spec.max_output_tokens:
            return Rejection(
                400,
                "INVALID_ARGUMENT",
                f"Unable to submit request because it has a maxOutputTokens value of {max_out} "
                f"but the supported range is from 1 (inclusive) to {spec.max_output_tokens + 1} "
                "(exclusive). Update the value and try again.",
            )
        tc = _field(gc, "thinkingConfig") or {}
        level = _field(tc, "thinkingLevel")
        if level is not None:
            if str(level).lower() not in spec.thinking_levels:
                return Rejection(
                    400,
                    "INVALID_ARGUMENT",
                    f"Thinking level {str(level).upper()} is not supported for this model. "
                    f"Supported levels: {', '.join(x.upper() for x in spec.thinking_levels)}.",
                )
            if _field(tc, "thinkingBudget") is not None:
                return Rejection(
                    400,
                    "INVALID_ARGUMENT",
                    "You can only set only one of thinking budget and thinking level.",
                )

        if (problem := self._gemini_function_turns(contents)) is not None:
            return problem
        if (problem := self._gemini_signatures(contents)) is not None:
            return problem
        tokens = self._gemini_prompt_tokens(body, spec)
        if tokens > spec.context_window:
            return Rejection(
                400,
                "INVALID_ARGUMENT",
                f"The input token count ({tokens}) exceeds the maximum number of tokens allowed "
                f"({spec.context_window}).",
            )
        return None

    @staticmethod
    def _gemini_part(part: dict[str, Any], where: str, spec: ModelSpec) -> Rejection | None:
        present = [name for name in _GEMINI_DATA_FIELDS if _field(part, name) is not None]
        if not present:
            return Rejection(
                400,
                "INVALID_ARGUMENT",
                f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have "
                "one initialized field\n",
            )
        if len(present) > 1:
            return Rejection(
                400,
                "INVALID_ARGUMENT",
                f"Invalid JSON payload received. Invalid value at '{where}': oneof field 'data' "
                f"is already set. Cannot set '{present[1]}'",
            )
        for blob_field in ("inlineData", "fileData"):
            blob = _field(part, blob_field)
            if not isinstance(blob, dict):
                continue
            mime = str(_field(blob, "mimeType") or "")
            kind = _modality(mime)
            if kind is None or kind not in spec.input_modalities:
                return Rejection(
                    400, "INVALID_ARGUMENT", f"Unsupported MIME type: {mime or '(empty)'}"
                )
        return None

    @staticmethod
    def _gemini_function_turns(contents: list[dict[str, Any]]) -> Rejection | None:
        for i, content in enumerate(contents[:-1]):
            if content.get("role") != "model":
                continue
            calls = sum(1 for p in content["parts"] if _field(p, "functionCall") is not None)
            if not calls:
                continue
            answers = sum(
                1 for p in contents[i + 1]["parts"] if _field(p, "functionResponse") is not None
            )
            if answers != calls:
                return Rejection(
                    400,
                    "INVALID_ARGUMENT",
                    "Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn.",
                )
        return None

    def _gemini_signatures(self, contents: list[dict[str, Any]]) -> Rejection | None:
        # The current turn starts at the last user content carrying real content (not only
        # functionResponse parts); only that turn's model steps are validated.
        start = 0
        for i in range(len(contents) - 1, -1, -1):
            content = contents[i]
            if content.get("role") in (None, "", "user") and any(
                _field(p, "functionResponse") is None for p in content["parts"]
            ):
                start = i + 1
                break
        for i in range(start, len(contents)):
            content = contents[i]
            if content.get("role") != "model":
                continue
            first_call_seen = False
            for j, part in enumerate(content["parts"]):
                call = _field(part, "functionCall")
                signature = _field(part, "thoughtSignature")
                if call is not None and not first_call_seen:
                    first_call_seen = True
                    if not signature:
                        return Rejection(
                            400,
                            "INVALID_ARGUMENT",
                            "Function call is missing a thought_signature in functionCall parts. "
                            "This is required for tools to work correctly, and missing "
                            "thought_signature may lead to degraded model performance. Additional "
                            f"data, function call `default_api:{call.get('name')}` , position "
                            f"{j + 1}. Please refer to "
                            "https://ai.google.dev/gemini-api/docs/thought-signatures for more "
                            "details.",
                        )
                if signature and not self._signature_ok(str(signature), call):
                    return Rejection(400, "INVALID_ARGUMENT", "Corrupted thought signature.")
        return None

    def _signature_ok(self, signature: str, call: Any) -> bool:
        if signature in DUMMY_THOUGHT_SIGNATURES:
            return True
        if signature not in self._signatures:
            return False
        issued_for = self._signatures[signature]
        if not issued_for:  # issued on a text part
            return call is None
        return isinstance(call, dict) and call.get("name") == issued_for

    @staticmethod
    def _gemini_prompt_tokens(body: dict[str, Any], spec: ModelSpec) -> int:
        chars = 0
        media = 0
        containers = list(_field(body, "contents") or [])
        si = _field(body, "systemInstruction")
        if isinstance(si, dict):
            containers.append(si)
        for content in containers:
            for part in content.get("parts") or []:
                if "text" in part:
                    chars += len(str(part["text"]))
                for blob_field in ("inlineData", "fileData"):
                    blob = _field(part, blob_field)
                    if isinstance(blob, dict):
                        kind = _modality(str(_field(blob, "mimeType") or "")) or "file"
                        media += spec.media_tokens.get(kind, 0)
                for call_field in ("functionCall", "functionResponse"):
                    call = _field(part, call_field)
                    if isinstance(call, dict):
                        chars += len(json.dumps(call))
        if _field(body, "tools"):
            chars += len(json.dumps(_field(body, "tools")))
        return math.ceil(chars / 4) + media

    # -- other routes ------------------------------------------------------------------------

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "other")
        rec.outcome = "login-page"
        return web.Response(text=_login_html(), content_type="text/html")

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "other")
        path = request.path
        if path.startswith("/v1beta/"):
            rec.protocol = "gemini"
            return self._reject(
                rec,
                Rejection(
                    404, "NOT_FOUND", f"The requested URL {path} was not found on this server."
                ),
            )
        rec.protocol = "openai"
        return self._reject(rec, Rejection(404, None, f"Invalid URL ({request.method} {path})"))

    # -- behaviours --------------------------------------------------------------------------

    async def _execute(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        try:
            behaviour = self._next_behaviour(rec)
        except Exception as exc:
            return self._internal_error(rec, f"responder failed: {exc!r}")
        rec.outcome = type(behaviour).__name__
        delay = behaviour.delay
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if isinstance(behaviour, Reply):
                return await self._send_reply(request, rec, behaviour)
            return await self._send_fault(request, rec, behaviour)
        except (ValueError, TypeError, KeyError, AssertionError) as exc:
            return self._internal_error(rec, f"cannot render {behaviour!r}: {exc}")

    def _internal_error(self, rec: RecordedRequest, message: str) -> web.Response:
        self.errors.append(message)
        rec.outcome = f"fake-error: {message}"
        return web.Response(status=500, text=f"FakeCometAPI error: {message}")

    async def _send_fault(
        self, request: web.Request, rec: RecordedRequest, fault: Fault
    ) -> web.StreamResponse:
        gemini = rec.protocol == "gemini"
        model = rec.model or "unknown"
        if isinstance(fault, ConnectionReset):
            _reset(request)
            return web.Response()
        if isinstance(fault, StalledBody):
            return await self._send_stalled(request, rec, fault)
        if isinstance(fault, StreamCut):
            reply = self._reply_for(rec, fault.reply)
            return await self._send_reply(request, rec, reply, cut_after=fault.after)
        if isinstance(fault, StreamError):
            reply = self._reply_for(rec, fault.reply)
            return await self._send_reply(request, rec, reply, error=fault)
        if isinstance(fault, HtmlBody):
            html = fault.html if fault.html is not None else _error_html(fault.status)
            return web.Response(
                status=fault.status,
                reason=_REASONS.get(fault.status),
                text=html,
                content_type="text/html",
            )
        if isinstance(fault, Redirect):
            return web.Response(
                status=fault.status,
                headers={"Location": fault.location},
                text=f'<a href="{fault.location}">Found</a>.',
                content_type="text/html",
            )
        if isinstance(fault, RateLimited):
            seconds = fault.retry_after
            if gemini:
                details: list[dict[str, Any]] = [
                    _quota_failure(model, "GenerateRequestsPerMinutePerProjectPerModel", "1000"),
                    _help_link(),
                ]
                if fault.retry_info and seconds is not None:
                    details.append(
                        {
                            "@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": _duration(seconds),
                        }
                    )
                message = _GOOGLE_MESSAGES[429]
                return self._gemini_error_response(429, message, None, details)
            headers = {
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": _duration(seconds or 1),
            }
            if seconds is not None and fault.retry_after_ms_header:
                headers["retry-after-ms"] = str(int(seconds * 1000))
            if seconds is not None and fault.retry_after_header:
                headers["retry-after"] = str(math.ceil(seconds))
            wait = f" Please try again in {_duration(seconds)}." if seconds is not None else ""
            return self._openai_error_response(
                429,
                f"Rate limit reached for {model} in organization org-fake on requests per min "
                f"(RPM): Limit 500, Used 500, Requested 1.{wait} Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                "requests",
                None,
                "rate_limit_exceeded",
                headers,
            )
        if isinstance(fault, QuotaExhausted):
            if gemini:
                return self._gemini_error_response(
                    429,
                    "You exceeded your current quota, please check your plan and billing "
                    "details. For more information on this error, head to: "
                    "https://ai.google.dev/gemini-api/docs/rate-limits.",
                    None,
                    [
                        _quota_failure(model, "GenerateRequestsPerDayPerProjectPerModel", "10000"),
                        _help_link(),
                    ],
                )
            return self._openai_error_response(
                429,
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                None,
                "insufficient_quota",
            )
        if isinstance(fault, ContextTooLong):
            spec = self.models.get(model)
            limit = spec.context_window if spec else 128_000
            tokens = fault.prompt_tokens or limit + 1
            if gemini:
                return self._gemini_error_response(
                    400,
                    f"The input token count ({tokens}) exceeds the maximum number of tokens "
                    f"allowed ({limit}).",
                    None,
                )
            return self._openai_error_response(
                400,
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {tokens} tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "messages",
                "context_length_exceeded",
            )
        if isinstance(fault, HttpError):
            if gemini:
                return self._gemini_error_response(
                    fault.status,
                    fault.message or _GOOGLE_MESSAGES.get(fault.status, "Error."),
                    fault.google_status,
                    fault.details,
                    fault.headers,
                )
            default_type, default_code, default_message = _OPENAI_DEFAULTS.get(
                fault.status,
                (
                    "server_error" if fault.status >= 500 else "invalid_request_error",
                    None,
                    "Error.",
                ),
            )
            return self._openai_error_response(
                fault.status,
                fault.message or default_message,
                fault.error_type or default_type,
                fault.param,
                fault.code if fault.code is not None else default_code,
                fault.headers,
            )
        raise TypeError(f"unknown fault {fault!r}")

    async def _send_stalled(
        self, request: web.Request, rec: RecordedRequest, fault: StalledBody
    ) -> web.StreamResponse:
        inner = await self._send_fault(request, rec, fault.fault)
        if not isinstance(inner, web.Response) or inner.body is None:
            raise ValueError(f"{fault.fault!r} has no body to stall")
        body = bytes(inner.body)  # type: ignore[arg-type]
        response = web.StreamResponse(status=inner.status, reason=inner.reason)
        for name, value in inner.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding"):
                response.headers[name] = value
        response.content_length = len(body)
        await response.prepare(request)
        head = body[: max(0, min(fault.sent, len(body) - 1))]
        if head:
            await response.write(head)
        await asyncio.sleep(fault.stall)  # cancelled when the client hangs up
        await response.write(body[len(head) :])
        await response.write_eof()
        return response

    # -- rendering replies -------------------------------------------------------------------

    async def _send_reply(
        self,
        request: web.Request,
        rec: RecordedRequest,
        reply: Reply,
        *,
        cut_after: int | None = None,
        error: StreamError | None = None,
    ) -> web.StreamResponse:
        spec = self.models[rec.model or ""]
        if rec.protocol == "openai":
            frames, content_type, error_frame = self._openai_frames(rec, reply, spec, error)
        else:
            frames, content_type, error_frame = self._gemini_frames(rec, reply, spec, error)
        headers = {"Content-Type": content_type, **reply.headers}
        if rec.protocol == "openai":
            headers.setdefault("x-request-id", f"req_{self._token('req', 32)}")
        if rec.stream:
            headers["Cache-Control"] = "no-cache"
            if error is not None:
                terminated = rec.protocol == "openai" or not rec.sse  # [DONE] or "]"
                data_frames = len(frames) - 1 if terminated else len(frames)
                frames = frames[: min(error.after, data_frames)]
                frames.append(error_frame)
                if rec.protocol == "gemini" and not rec.sse:
                    frames.append(b"]")
            return await self._write_frames(request, reply, frames, headers, cut_after, rec)
        # Non-streamed: a single body.
        body = error_frame if error is not None else b"".join(frames)
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        try:
            if reply.first_chunk_delay > 0:
                await asyncio.sleep(reply.first_chunk_delay)
            if cut_after is not None:
                await resp.write(body[: len(body) // 2])
                _close(request)
                return resp
            await resp.write(body)
            await resp.write_eof()
        except ConnectionError:
            pass
        return resp

    async def _write_frames(
        self,
        request: web.Request,
        reply: Reply,
        frames: list[bytes],
        headers: dict[str, str],
        cut_after: int | None,
        rec: RecordedRequest | None = None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=headers)
        await resp.prepare(request)
        try:
            if reply.first_chunk_delay > 0:
                await asyncio.sleep(reply.first_chunk_delay)
            for i, frame in enumerate(frames):
                if cut_after is not None and i >= cut_after:
                    break
                if i > 0 and reply.chunk_delay > 0:
                    await asyncio.sleep(reply.chunk_delay)
                if reply.stall_after is not None and i == reply.stall_after and reply.stall > 0:
                    await asyncio.sleep(reply.stall)
                await resp.write(frame)
                if rec is not None:
                    rec.frames_sent = i + 1
            if cut_after is not None:
                _close(request)
                return resp
            await resp.write_eof()
        except ConnectionError:
            if rec is not None:
                rec.client_closed_at = time.monotonic()
        except asyncio.CancelledError:  # the client hung up mid-stream (handler cancellation)
            if rec is not None:
                rec.client_closed_at = time.monotonic()
            raise
        return resp

    def _check_emitted(self, kind: str, obj: dict[str, Any]) -> None:
        if not self.validate_responses:
            return
        if kind == "gemini":
            gtypes.GenerateContentResponse.model_validate(obj)
            return
        problems = openai_schema_errors(kind, obj)
        if problems:
            raise AssertionError(f"emitted {kind} is invalid: {problems}")

    def _completion_limit(self, rec: RecordedRequest) -> int | None:
        if rec.protocol == "openai":
            value = rec.json.get("max_completion_tokens") or rec.json.get("max_tokens")
        else:
            value = _field(rec.generation_config, "maxOutputTokens")
        return int(value) if value is not None else None

    def _shape(self, rec: RecordedRequest, reply: Reply) -> tuple[str, list[ToolCall], str]:
        """Apply the output-token limit: returns (text, tool calls, OpenAI finish reason)."""
        text, calls = reply.text, list(reply.tool_calls)
        if reply.finish_reason is not None:
            finish = _TO_OPENAI_FINISH.get(reply.finish_reason, reply.finish_reason)
            return text, calls, finish
        limit = self._completion_limit(rec)
        out_tokens = estimate_tokens(text) + sum(
            estimate_tokens(c.name + c.arguments_json()) for c in calls
        )
        if limit is not None and out_tokens > limit:
            return text[: limit * 4], [], "length"
        return text, calls, "tool_calls" if calls else "stop"

    def _usage_numbers(
        self, rec: RecordedRequest, reply: Reply, spec: ModelSpec, text: str, calls: list[ToolCall]
    ) -> tuple[int, int, int]:
        if rec.protocol == "openai":
            prompt = self._openai_prompt_tokens(rec.json, spec)
        else:
            prompt = self._gemini_prompt_tokens(rec.json, spec)
        completion = estimate_tokens(text) + sum(
            estimate_tokens(c.name + c.arguments_json()) for c in calls
        )
        if reply.usage is not None:
            if reply.usage.prompt_tokens is not None:
                prompt = reply.usage.prompt_tokens
            if reply.usage.completion_tokens is not None:
                completion = reply.usage.completion_tokens
        if reply.thoughts_tokens is not None:
            thoughts = reply.thoughts_tokens
        elif rec.protocol == "gemini":
            level = rec.thinking_level or spec.default_thinking_level or "minimal"
            thoughts = spec.thoughts_tokens.get(level, 0)
        else:
            thoughts = 0
        return prompt, completion, thoughts

    def _cached_tokens(
        self, rec: RecordedRequest, reply: Reply, spec: ModelSpec, prompt: int
    ) -> int:
        """Input tokens a prompt cache serves: `Usage.cached_tokens` when the reply sets
        it, else (with `prefix_cache`) the longest prefix seen before, else 0."""
        if reply.usage is not None and reply.usage.cached_tokens is not None:
            return min(reply.usage.cached_tokens, prompt)
        if not self.prefix_cache or not isinstance(rec.json, dict):
            return 0
        body = rec.json
        if rec.protocol == "openai":
            head: Any = body.get("tools")
            items = list(body.get("messages") or [])
        else:
            head = [_field(body, "tools"), _field(body, "systemInstruction")]
            items = list(_field(body, "contents") or [])
        running = hashlib.sha256(f"{spec.id}\0{json.dumps(head, sort_keys=True)}".encode())
        digests: list[str] = []
        for item in items:
            running.update(json.dumps(item, sort_keys=True).encode() + b"\0")
            digests.append(running.copy().hexdigest())
        seen = max((n + 1 for n, d in enumerate(digests) if d in self._prefixes), default=0)
        self._prefixes.update(digests)
        if seen == 0:
            return 0
        if rec.protocol == "openai":
            cached = self._openai_prompt_tokens({**body, "messages": items[:seen]}, spec)
        else:
            cached = self._gemini_prompt_tokens({**body, "contents": items[:seen]}, spec)
        return min(cached, prompt)

    # OpenAI ----------------------------------------------------------------------------------

    def _openai_frames(
        self, rec: RecordedRequest, reply: Reply, spec: ModelSpec, error: StreamError | None
    ) -> tuple[list[bytes], str, bytes]:
        text, calls, finish = self._shape(rec, reply)
        prompt, completion, thoughts = self._usage_numbers(rec, reply, spec, text, calls)
        cached = self._cached_tokens(rec, reply, spec, prompt)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion + thoughts,
            "total_tokens": prompt + completion + thoughts,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": thoughts,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        completion_id = f"chatcmpl-{self._token('cmpl', 29)}"
        created = int(time.time())
        call_ids = [c.id or f"call_{self._token('call', 24)}" for c in calls]
        error_obj = {
            "error": {
                "message": (error.message if error and error.message else _OPENAI_DEFAULTS[500][2]),
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        if not rec.stream:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text if text or not calls else None,
                "refusal": None,
                "annotations": [],
            }
            if calls:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_json()},
                    }
                    for call_id, c in zip(call_ids, calls, strict=True)
                ]
            completion_obj = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": spec.id,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": "fp_fakecomet",
            }
            self._check_emitted("CreateChatCompletionResponse", completion_obj)
            return (
                [json.dumps(completion_obj).encode()],
                "application/json",
                json.dumps(error_obj).encode(),
            )

        options = rec.json.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        obfuscate = options.get("include_obfuscation", True) is not False
        chunks: list[dict[str, Any]] = []

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            chunks.append(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": spec.id,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fakecomet",
                    "choices": [
                        {
                            "index": 0,
                            "delta": delta,
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                }
            )

        chunk({"role": "assistant", "content": "" if text or not calls else None, "refusal": None})
        for piece in _split(text, reply.chunks):
            chunk({"content": piece})
        for index, (call_id, call) in enumerate(zip(call_ids, calls, strict=True)):
            fragments = max(1, reply.arg_fragments)
            args = call.arguments_json()
            pieces = _split(args, fragments - 1) if fragments > 1 else []
            first_args = "" if fragments > 1 else args
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": first_args},
                        }
                    ]
                }
            )
            for piece in pieces:
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        chunk({}, finish)
        if include_usage:
            for c in chunks:
                c["usage"] = None
            chunks.append({**chunks[-1], "choices": [], "usage": usage})
        frames: list[bytes] = []
        for n, c in enumerate(chunks):
            if obfuscate:
                c["obfuscation"] = hashlib.sha1(f"{completion_id}{n}".encode()).hexdigest()[
                    : 2 + n % 9
                ]
            self._check_emitted("CreateChatCompletionStreamResponse", c)
            frames.append(b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        error_frame = b"data: " + json.dumps(error_obj).encode() + b"\n\n"
        return frames, "text/event-stream; charset=utf-8", error_frame

    # Gemini ----------------------------------------------------------------------------------

    def _issue_signature(self, function_name: str) -> str:
        raw = (
            b"fake-thought-signature:"
            + hashlib.sha256(f"{self._secret}:{self._next_id()}:{function_name}".encode()).digest()
        )
        signature = base64.b64encode(raw).decode()
        self._signatures[signature] = function_name
        return signature

    def _gemini_frames(
        self, rec: RecordedRequest, reply: Reply, spec: ModelSpec, error: StreamError | None
    ) -> tuple[list[bytes], str, bytes]:
        text, calls, finish_openai = self._shape(rec, reply)
        finish = (
            reply.finish_reason
            if reply.finish_reason and reply.finish_reason.isupper()
            else _TO_GEMINI_FINISH.get(finish_openai, "STOP")
        )
        prompt, completion, thoughts = self._usage_numbers(rec, reply, spec, text, calls)
        cached = self._cached_tokens(rec, reply, spec, prompt)
        response_id = (
            base64.urlsafe_b64encode(bytes.fromhex(self._token("resp", 32))).decode().rstrip("=")
        )
        tc = _field(rec.generation_config, "thinkingConfig") or {}
        include_thoughts = bool(_field(tc, "includeThoughts"))

        def usage(candidates: int) -> dict[str, Any]:
            meta: dict[str, Any] = {"promptTokenCount": prompt}
            if cached:
                meta["cachedContentTokenCount"] = cached
            if candidates:
                meta["candidatesTokenCount"] = candidates
            meta["totalTokenCount"] = prompt + candidates + thoughts
            meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
            if thoughts:
                meta["thoughtsTokenCount"] = thoughts
            return meta

        def response(
            parts: list[dict[str, Any]] | None, candidates: int, end: bool
        ) -> dict[str, Any]:
            content: dict[str, Any] = (
                {"role": "model"} if parts is None else {"parts": parts, "role": "model"}
            )
            candidate: dict[str, Any] = {"content": content}
            if end:
                candidate["finishReason"] = finish
            candidate["index"] = 0
            return {
                "candidates": [candidate],
                "usageMetadata": usage(candidates),
                "modelVersion": spec.id,
                "responseId": response_id,
            }

        call_parts: list[dict[str, Any]] = []
        for n, call in enumerate(calls):
            part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.args_object()}}
            if n == 0:
                part["thoughtSignature"] = reply.thought_signature or self._issue_signature(
                    call.name
                )
            call_parts.append(part)
        text_signature: str | None = None
        if not calls and reply.sign_text:
            text_signature = reply.thought_signature or self._issue_signature("")
        thought_parts: list[dict[str, Any]] = []
        if include_thoughts and reply.thought_summary:
            thought_parts.append({"text": reply.thought_summary, "thought": True})

        error_body = self._gemini_error_body(
            error.status if error else 500,
            (error.message if error and error.message else None)
            or _GOOGLE_MESSAGES.get(error.status if error else 500, "Error."),
            None,
        )
        error_raw = json.dumps(error_body, indent=2).encode() + b"\n"

        if not rec.stream:
            parts = list(thought_parts)
            if text or not calls:
                text_part: dict[str, Any] = {"text": text}
                if text_signature:
                    text_part["thoughtSignature"] = text_signature
                parts.append(text_part)
            parts.extend(call_parts)
            obj = response(parts, completion, True)
            self._check_emitted("gemini", obj)
            return [_google_json(obj)], "application/json; charset=UTF-8", _google_json(error_body)

        steps: list[tuple[list[dict[str, Any]], int]] = []
        if thought_parts:
            steps.append((thought_parts, 0))
        pieces = _split(text, reply.chunks)
        sent = 0
        for n, piece in enumerate(pieces):
            sent += estimate_tokens(piece)
            part = {"text": piece}
            if n == len(pieces) - 1 and text_signature:
                part["thoughtSignature"] = text_signature
            steps.append(([part], min(sent, completion)))
        if call_parts:
            steps.append((call_parts, completion))
        if not pieces and not call_parts:
            part = {"text": ""}
            if text_signature:
                part["thoughtSignature"] = text_signature
            steps.append(([part], completion))
        objs = [response(parts, count, False) for parts, count in steps[:-1]]
        if reply.separate_finish_chunk:
            objs.append(response(steps[-1][0], steps[-1][1], False))
            objs.append(response(None, completion, True))
        else:
            objs.append(response(steps[-1][0], completion, True))
        for obj in objs:
            self._check_emitted("gemini", obj)
        if rec.sse:
            frames = [b"data: " + _google_json(o) + b"\r\n\r\n" for o in objs]
            error_frame = (
                error_raw
                if error and error.raw
                else b"data: " + _google_json(error_body) + b"\r\n\r\n"
            )
            return frames, "text/event-stream", error_frame
        frames = [(b"[" if n == 0 else b",\r\n") + _google_json(o) for n, o in enumerate(objs)]
        frames.append(b"]")
        error_frame = (b"[" if error and error.after == 0 else b",\r\n") + _google_json(error_body)
        return frames, "application/json; charset=UTF-8", error_frame


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _split(text: str, pieces: int) -> list[str]:
    """Split ``text`` into at most ``pieces`` non-empty, nearly equal parts."""
    if not text:
        return []
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    out: list[str] = []
    start = 0
    for n in range(pieces):
        end = start + size + (1 if n < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def _modality(mime: str) -> str | None:
    major = mime.split("/", 1)[0].lower()
    if major in ("image", "audio", "video"):
        return major
    if mime in ("application/pdf", "text/plain", "text/html", "text/csv", "text/markdown"):
        return "file"
    return None


def _reset(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _close(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


def _bad_request(field_name: str | None, description: str) -> dict[str, Any]:
    violation: dict[str, Any] = {"description": description}
    if field_name:
        violation["field"] = field_name
    return {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}


def _gemini_rejection_from_pydantic(key: str, exc: pydantic.ValidationError) -> Rejection:
    err = exc.errors()[0]
    loc = [
        item for item in err["loc"] if not (isinstance(item, str) and item.startswith("function-"))
    ]
    if err["type"] == "extra_forbidden":
        name = str(loc[-1])
        parent = _google_path(key, loc[:-1])
        message = (
            f"Invalid JSON payload received. Unknown name \"{name}\" at '{parent}': "
            "Cannot find field."
        )
        return Rejection(400, "INVALID_ARGUMENT", message, details=[_bad_request(parent, message)])
    where = _google_path(key, loc)
    message = (
        f"Invalid JSON payload received. Invalid value at '{where}': {err['msg']} "
        f"({err.get('input')!r})"
    )
    return Rejection(400, "INVALID_ARGUMENT", message, details=[_bad_request(where, message)])


def _quota_failure(model: str, quota_id: str, value: str) -> dict[str, Any]:
    metric = (
        "generativelanguage.googleapis.com/generate_content_paid_tier_requests"
        if "Minute" in quota_id
        else "generativelanguage.googleapis.com/generate_content_requests_per_day"
    )
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": metric,
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": value,
            }
        ],
    }


def _help_link() -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
            {
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
            }
        ],
    }


def _error_html(status: int) -> str:
    if status == 524:
        return (
            "<!DOCTYPE html>\n<html><head><title>api.cometapi.com | 524: A timeout occurred"
            '</title></head><body><div id="cf-error-details"><h1>A timeout occurred</h1>'
            "<span>Error code 524</span><p>The origin web server timed out responding to this "
            "request.</p><p>Cloudflare Ray ID: 8f00000000000000</p></div></body></html>\n"
        )
    if status == 502:
        return (
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 "
            "Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        )
    if status == 200:
        return _login_html()
    return f"<html><head><title>{status}</title></head><body><h1>Error {status}</h1></body></html>"


def _login_html() -> str:
    return (
        '<!DOCTYPE html><html><head><title>Sign in</title></head><body><form method="post">'
        '<input name="user"><input name="password" type="password"></form></body></html>'
    )
