"""A fake Slack Web API, served over real HTTP on 127.0.0.1, plus builders for inbound requests.

The fake speaks the wire protocol ``slack_sdk`` speaks: ``POST /api/<method>`` with a form or JSON
body (``GET`` with query arguments for the read methods), the token as ``Authorization: Bearer``
or a ``token`` argument, ``HTTP 200 {"ok": false, "error": ...}`` for API errors and ``HTTP 429``
with ``Retry-After`` for rate limits. Point the code under test at it with
``AsyncWebClient(token=..., base_url=slack.api_url)`` or ``SLACK_API_URL=slack.api_url``::

    async with FakeSlack(bot_token="xoxb-test") as slack:
        slack.add_user("U0ALICE001", "alice", real_name="Alice A.")
        slack.add_channel("C0GENERAL1", "general", members=["U0ALICE001"])
        parent = slack.add_message("C0GENERAL1", "<@U0000000BOT> hi", user="U0ALICE001")
        ...  # drive the bot
        assert slack.thread("C0GENERAL1", parent)[-1].text == "hello"

Where the shapes come from:

* ``tests/specs/slack-web-openapi-v2.json`` (Slack's public OpenAPI spec, 2021) for every method
  it covers: required arguments, error names and response schemas. :class:`SlackSpec` validates
  bodies against it, with a short, explicit list of errata (:data:`SPEC_ERRATA`) where the spec
  contradicts its own examples or Slack's observable behaviour.
* docs.slack.dev method pages (and the installed ``slack_sdk`` source) for the methods the spec
  predates: ``chat.startStream``/``appendStream``/``stopStream``, ``assistant.threads.setStatus``.
* ``tests/specs/slack-event-wrapper-schema.json`` for the ``event_callback`` envelope.

Everything here is test scaffolding: nothing in ``core/`` or ``bots/`` imports it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import re
import string
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from types import TracebackType

    from slack_sdk.web.async_client import AsyncWebClient

__all__ = [
    "SPEC_ERRATA",
    "Call",
    "Ephemeral",
    "FakeSlack",
    "FileDownload",
    "ResponseUrlPost",
    "SignedRequest",
    "SlackPayloads",
    "SlackSigner",
    "SlackSpec",
    "StatusUpdate",
    "ThreadMessage",
]

JSONDict = dict[str, Any]

# Limits Slack enforces, each with where it is documented.
MAX_TEXT_CHARS = 40_000  # chat.postMessage "text": messages over 40,000 characters -> msg_too_long
MAX_BLOCKS = 50  # Block Kit: "You can include up to 50 blocks in each message"
MAX_VIEW_BLOCKS = 100  # "up to 100 blocks" in a modal or Home tab
MAX_SUGGESTED_PROMPTS = 4  # assistant.threads.setSuggestedPrompts: "maximum of 4"
AGENT_SESSION_STATUSES = frozenset({"active", "processing", "idle", "completed", "error"})
MAX_MARKDOWN_TEXT_CHARS = 12_000  # chat.*Stream / postMessage markdown_text: "Limit ... 12,000"
MAX_LOADING_MESSAGES = 10  # assistant.threads.setStatus loading_messages: "Maximum of 10 messages"
MAX_HISTORY_LIMIT = 999  # conversations.history limit: "Maximum of 999"
MAX_REPLIES_LIMIT = 1000  # conversations.replies limit: default (and cap) 1000
DEFAULT_HISTORY_LIMIT = 100
DEFAULT_REPLIES_LIMIT = 1000
DEFAULT_MEMBERS_LIMIT = 100
RESPONSE_URL_MAX_USES = 5  # "you can use a response_url up to 5 times within 30 minutes"

DEFAULT_SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"

#: The bot scopes of deploy/slack/manifest.yaml: what an installed teambot is granted.
BOT_SCOPES: tuple[str, ...] = (
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "channels:read",
    "chat:write",
    "commands",
    "files:read",
    "groups:history",
    "groups:read",
    "im:history",
    "mpim:history",
    "users:read",
)
#: Methods called with the app-level token (xapp-...) instead of the bot token.
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})

# Methods whose arguments Slack reads from a JSON body. The OpenAPI spec lists the content types
# each method consumes; the conversations.* and users.* readers only take form or query arguments,
# so a JSON body sent to them is ignored (Slack then reports the missing argument, for example
# ``channel_not_found``). The newer methods accept JSON per their docs.slack.dev pages.
_JSON_METHODS = frozenset(
    {
        "auth.test",
        "chat.postMessage",
        "chat.update",
        "chat.delete",
        "chat.postEphemeral",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
        "assistant.threads.setStatus",
        "assistant.threads.setSuggestedPrompts",
        "agents.sessions.setStatus",
        "views.open",
        "views.publish",
        "reactions.add",
    }
)

# Chunk types docs.slack.dev lists for the chunks argument of chat.*Stream.
_CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})


class _ApiError(Exception):
    """Raised inside a method handler: becomes ``{"ok": false, "error": ...}``."""

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        messages: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.messages = list(messages)
        self.headers = dict(headers or {})


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Call:
    """One Web API request the fake received (whatever it answered)."""

    method: str
    args: JSONDict
    headers: dict[str, str]
    http_method: str
    content_type: str
    time: float  # time.monotonic() when it arrived
    status: int = 200
    response: JSONDict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        err = self.response.get("error")
        return str(err) if err is not None else None


@dataclass(frozen=True)
class ThreadMessage:
    """A message as a person in the channel would see it now."""

    ts: str
    user: str | None
    text: str
    is_bot: bool
    streamed: bool  # posted through chat.startStream
    streaming: bool  # still open (no chat.stopStream yet, not expired)
    thread_ts: str | None
    blocks: list[JSONDict]
    files: list[JSONDict]
    edited: bool
    reactions: dict[str, list[str]]
    subtype: str | None
    chunks: list[JSONDict]  # every chunk a stream received, in order


@dataclass(frozen=True)
class Ephemeral:
    channel: str
    user: str
    text: str
    blocks: list[JSONDict]
    thread_ts: str | None
    message_ts: str


@dataclass(frozen=True)
class StatusUpdate:
    channel: str
    thread_ts: str
    status: str
    loading_messages: list[str]
    time: float


@dataclass(frozen=True)
class ResponseUrlPost:
    """A POST the app made to a ``response_url`` (slash command / shortcut reply)."""

    url_id: str
    body: JSONDict
    time: float
    status: int

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def response_type(self) -> str:
        # Slack's default for response_url posts is ephemeral.
        return str(self.body.get("response_type") or "ephemeral")

    @property
    def replace_original(self) -> bool:
        return _as_bool(self.body.get("replace_original"))

    @property
    def delete_original(self) -> bool:
        return _as_bool(self.body.get("delete_original"))


@dataclass(frozen=True)
class FileDownload:
    path: str
    authorized: bool
    status: int


@dataclass
class _Fault:
    kind: Literal["ratelimit", "error", "http"]
    remaining: int | None  # None: until cleared
    error: str = ""
    retry_after: int = 1
    status: int = 200


@dataclass
class _Channel:
    id: str
    name: str
    is_private: bool
    is_im: bool
    members: list[str]
    created: int
    creator: str
    im_user: str | None = None
    is_archived: bool = False
    topic: str = ""
    purpose: str = ""


@dataclass
class _Message:
    channel: str
    ts: str
    text: str
    user: str | None
    bot_id: str | None
    thread_ts: str | None = None
    blocks: list[JSONDict] = field(default_factory=list)
    attachments: list[JSONDict] = field(default_factory=list)
    files: list[JSONDict] = field(default_factory=list)
    subtype: str | None = None
    reply_broadcast: bool = False
    stream: Literal["streaming", "stopped", "expired"] | None = None
    chunks: list[JSONDict] = field(default_factory=list)
    edited: JSONDict | None = None
    reactions: dict[str, list[str]] = field(default_factory=dict)
    username: str | None = None
    icon_emoji: str | None = None
    client_msg_id: str | None = None
    metadata: JSONDict | None = None
    options: JSONDict = field(default_factory=dict)  # mrkdwn, unfurl_*, parse, link_names, ...
    deleted: bool = False


@dataclass
class _ResponseUrl:
    id: str
    channel: str | None
    user: str | None
    uses: int = 0


@dataclass(frozen=True)
class SignedRequest:
    """A body and the headers Slack would send with it to the app's request URL."""

    body: bytes
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.body.decode()


# --------------------------------------------------------------------------- helpers


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _ts_to_us(ts: str) -> int:
    """``"1712345678.000123"`` -> microseconds; ValueError if it is not a Slack timestamp."""
    try:
        dec = Decimal(str(ts).strip())
    except InvalidOperation as exc:
        raise ValueError(ts) from exc
    if not dec.is_finite() or dec < 0:
        raise ValueError(ts)
    return int(dec * 1_000_000)


def _us_to_ts(us: int) -> str:
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _encode_cursor(prefix: str, value: str) -> str:
    return base64.b64encode(f"{prefix}:{value}".encode()).decode()


def _cursor_us(cursor: str) -> int:
    """A ``next_ts`` cursor (Slack's shape: base64 of ``next_ts:<ts digits>``) -> microseconds."""
    value = _decode_cursor("next_ts", cursor)
    if not value.isdigit():
        raise _ApiError("invalid_cursor")
    return int(value)


def _decode_cursor(prefix: str, cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor.encode(), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise _ApiError("invalid_cursor") from exc
    head, sep, value = raw.partition(":")
    if not sep or head != prefix or not value:
        raise _ApiError("invalid_cursor")
    return value


def _parse_limit(raw: object, default: int, cap: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw))
    except ValueError:
        return default
    if value <= 0:
        return default
    return min(value, cap)


def _json_arg(value: object, error: str) -> Any:
    """Form bodies carry blocks/attachments/chunks as JSON strings; JSON bodies as values."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise _ApiError(error) from exc
    return value


def rich_text_blocks(text: str, block_id: str) -> list[JSONDict]:
    """The ``rich_text`` block Slack's clients attach to a typed message."""
    elements: list[JSONDict] = []
    pos = 0
    pattern = re.compile(
        r"<@(?P<user>[UW][A-Z0-9]+)>|<#(?P<chan>C[A-Z0-9]+)(?:\|[^>]*)?>"
        r"|<(?P<url>https?://[^|>]+)(?:\|(?P<label>[^>]+))?>"
    )
    for match in pattern.finditer(text):
        if match.start() > pos:
            elements.append({"type": "text", "text": text[pos : match.start()]})
        if match.group("user"):
            elements.append({"type": "user", "user_id": match.group("user")})
        elif match.group("chan"):
            elements.append({"type": "channel", "channel_id": match.group("chan")})
        else:
            link: JSONDict = {"type": "link", "url": match.group("url")}
            if match.group("label"):
                link["text"] = match.group("label")
            elements.append(link)
        pos = match.end()
    if pos < len(text):
        elements.append({"type": "text", "text": text[pos:]})
    return [
        {
            "type": "rich_text",
            "block_id": block_id,
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


# --------------------------------------------------------------------------- Block Kit


def _bad_block(i: int, why: str) -> _ApiError:
    return _ApiError("invalid_blocks", messages=[f"[ERROR] {why} [json-pointer:/blocks/{i}]"])


def _plain(value: object, limit: int) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") == "plain_text"
        and isinstance(value.get("text"), str)
        and 0 < len(value["text"]) <= limit
    )


def check_blocks(blocks: Sequence[Any], *, surface: str = "message") -> None:
    """The Block Kit rules of docs.slack.dev's block reference for the blocks teambot sends,
    and slack_sdk's models (their JSON validators) for every block: ``invalid_blocks`` else.

    ``context_actions`` (messages only): 1-5 elements, each ``feedback_buttons`` (an
    ``action_id``, ``positive_button`` and ``negative_button``, each a plain_text ``text`` of at
    most 75 characters and a ``value`` of at most 2,000) or ``icon_button``."""
    from slack_sdk.errors import SlackObjectFormationError
    from slack_sdk.models.blocks import Block

    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "section":
            text = block.get("text")
            if isinstance(text, dict) and len(str(text.get("text") or "")) > 3000:
                raise _bad_block(i, "section text longer than 3000 characters")
        if kind == "context_actions":
            if surface != "message":
                raise _bad_block(i, "context_actions is only for messages")
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 5:
                raise _bad_block(i, "context_actions needs 1 to 5 elements")
            for element in elements:
                if not isinstance(element, dict):
                    raise _bad_block(i, "an element must be an object")
                if element.get("type") == "feedback_buttons":
                    if not element.get("action_id"):
                        raise _bad_block(i, "feedback_buttons needs an action_id")
                    for side in ("positive_button", "negative_button"):
                        button = element.get(side)
                        if not (
                            isinstance(button, dict)
                            and _plain(button.get("text"), 75)
                            and isinstance(button.get("value"), str)
                            and 0 < len(button["value"]) <= 2000
                        ):
                            raise _bad_block(i, f"feedback_buttons.{side} is malformed")
                elif element.get("type") != "icon_button":
                    raise _bad_block(i, f"{element.get('type')} is not allowed in context_actions")
        try:
            model = Block.parse(block)
            if model is None or type(model) is Block:
                raise _bad_block(i, f"unknown block type {kind!r}")
            model.validate_json()
        except SlackObjectFormationError as error:
            raise _bad_block(i, str(error)) from None


# --------------------------------------------------------------------------- spec validation

SPEC_ERRATA: tuple[str, ...] = (
    "Draft-04 'items': [A, B] on a non-array schema is the spec generator's way of writing a "
    "union (objs_conversation, objs_user, bot_id, tz, latest, ...); under JSON Schema it checks "
    "nothing, so it is read as anyOf [A, B] - a tightening.",
    "conversations.history and conversations.replies: the success schemas omit "
    "response_metadata (additionalProperties: false) though the spec's own examples carry "
    "response_metadata.next_cursor; it is allowed, with the objs_response_metadata shape.",
    "conversations.history: messages has minItems 1; an empty channel answers messages: [].",
    "conversations.replies: messages is written as items-of-a-tuple whose two branches forbid "
    "bot_id, blocks and files, which real thread messages carry; each message is checked "
    "against objs_message instead (tests check the parent/reply required fields separately).",
    "chat.update: message.blocks is typed object; Block Kit blocks are an array (the "
    "'blocks' definition).",
    "objs_message.attachments items forbid every key but id/fallback/image_*, yet the spec's own "
    "chat.postMessage example has an attachment with 'text'; extra attachment keys are allowed.",
    "Error responses: Slack adds response_metadata.messages to invalid_arguments / "
    "invalid_blocks errors; it is allowed on every error schema. Error names outside a "
    "method's enum are checked with strict_enum=False.",
    "HTTP 429 bodies carry error 'ratelimited' (the Retry-After error), which the per-method "
    "enums predate (they list the older 'rate_limited'); 429 bodies are checked against the "
    "generic {ok: false, error: string} shape.",
)


class SlackSpec:
    """Validates Web API bodies against the public OpenAPI spec (with :data:`SPEC_ERRATA`)."""

    def __init__(self, specs_dir: Path | None = None) -> None:
        directory = specs_dir or DEFAULT_SPECS_DIR
        self.path = directory / "slack-web-openapi-v2.json"
        self.wrapper_path = directory / "slack-event-wrapper-schema.json"
        self.raw: JSONDict = json.loads(self.path.read_text())
        self.event_wrapper_schema: JSONDict = json.loads(self.wrapper_path.read_text())
        self._definitions = _unions_to_any_of(copy.deepcopy(self.raw["definitions"]))
        # objs_message.attachments: allow the keys Slack really returns (erratum 6).
        attachments = self._definitions["objs_message"]["properties"]["attachments"]
        attachments["items"]["additionalProperties"] = True

    def operation(self, method: str) -> JSONDict:
        path = self.raw["paths"].get(f"/{method}")
        if path is None:
            raise KeyError(f"{method} is not in the spec")
        op: JSONDict = path.get("post") or path.get("get")
        return op

    def covers(self, method: str) -> bool:
        return f"/{method}" in self.raw["paths"]

    def required_args(self, method: str) -> list[str]:
        op = self.operation(method)
        return [
            p["name"]
            for p in op.get("parameters", [])
            if p.get("required") and p["in"] != "header" and p["name"] != "token"
        ]

    def error_names(self, method: str) -> list[str]:
        schema = self.operation(method)["responses"]["default"]["schema"]
        return list(schema["properties"]["error"].get("enum", []))

    def response_schema(self, method: str, *, ok: bool, strict_enum: bool = True) -> JSONDict:
        op = self.operation(method)
        schema: JSONDict = _unions_to_any_of(
            copy.deepcopy(op["responses"]["200" if ok else "default"]["schema"])
        )
        props = schema.setdefault("properties", {})
        if ok:
            if method in {"conversations.history", "conversations.replies"}:
                props["response_metadata"] = {"$ref": "#/definitions/objs_response_metadata"}
            if method == "conversations.history":
                props["messages"].pop("minItems", None)
            if method == "conversations.replies":
                props["messages"] = {
                    "type": "array",
                    "items": {"$ref": "#/definitions/objs_message"},
                }
            if method == "chat.update":
                props["message"]["properties"]["blocks"] = {"$ref": "#/definitions/blocks"}
        else:
            props["response_metadata"] = {
                "type": "object",
                "properties": {"messages": {"type": "array", "items": {"type": "string"}}},
            }
            if not strict_enum:
                props["error"].pop("enum", None)
        schema["definitions"] = self._definitions
        return schema

    def definition(self, name: str) -> JSONDict:
        return {"definitions": self._definitions, "$ref": f"#/definitions/{name}"}

    def validate(
        self, method: str, body: Mapping[str, Any], *, status: int = 200, strict_enum: bool = True
    ) -> None:
        """Raise ``jsonschema.ValidationError`` unless ``body`` has the spec's shape."""
        import jsonschema

        if status == 429:
            schema: JSONDict = {
                "type": "object",
                "required": ["ok", "error"],
                "properties": {"ok": {"enum": [False]}, "error": {"type": "string"}},
            }
        else:
            schema = self.response_schema(method, ok=bool(body.get("ok")), strict_enum=strict_enum)
        validator = jsonschema.Draft4Validator(
            schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
        )
        validator.validate(dict(body))

    def validate_definition(self, name: str, value: object) -> None:
        import jsonschema

        schema = self.definition(name)
        jsonschema.Draft4Validator(
            schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
        ).validate(value)

    def validate_event_envelope(self, envelope: Mapping[str, Any]) -> None:
        import jsonschema

        jsonschema.Draft7Validator(self.event_wrapper_schema).validate(dict(envelope))


def _unions_to_any_of(node: Any) -> Any:
    """Erratum 1: ``{"items": [A, B]}`` without ``type: array`` means anyOf [A, B]."""
    if isinstance(node, dict):
        out = {k: _unions_to_any_of(v) for k, v in node.items()}
        items = out.get("items")
        if isinstance(items, list) and out.get("type") != "array":
            out.pop("items")
            out["anyOf"] = items
        return out
    if isinstance(node, list):
        return [_unions_to_any_of(v) for v in node]
    return node


# --------------------------------------------------------------------------- inbound side


class SlackPayloads:
    """Builds request bodies shaped like the ones Slack sends to an app's request URLs.

    Events API ``event_callback`` envelopes (validated against the public wrapper schema in the
    self-tests), the ``url_verification`` challenge, slash command forms and message shortcut
    payloads. Nothing here touches the network; sign the result with :class:`SlackSigner`.
    """

    def __init__(
        self,
        *,
        team_id: str = "T0000000001",
        team_domain: str = "teambot-test",
        api_app_id: str = "A0000000APP",
        bot_user_id: str = "U0000000BOT",
        bot_id: str = "B0000000BOT",
        verification_token: str = "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        enterprise_id: str | None = None,
        include_authed_users: bool = True,
        rng: random.Random | None = None,
        response_url_factory: Callable[[str | None, str | None], str] | None = None,
        user_names: Mapping[str, str] | None = None,
        channel_names: Mapping[str, str] | None = None,
        ts_factory: Callable[[], str] | None = None,
    ) -> None:
        self.team_id = team_id
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.verification_token = verification_token
        self.enterprise_id = enterprise_id
        self.include_authed_users = include_authed_users
        self._rng = rng or random.Random(0)
        self._response_url_factory = response_url_factory
        self._user_names = user_names or {}
        self._channel_names = channel_names or {}
        self._ts_factory = ts_factory
        self._last_ts_us = 0

    # ---- ids

    def _alnum(self, n: int) -> str:
        return "".join(self._rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))

    def event_id(self) -> str:
        return f"Ev0{self._alnum(9)}"

    def trigger_id(self) -> str:
        digits = "".join(self._rng.choice(string.digits) for _ in range(13))
        hexs = "".join(self._rng.choice("0123456789abcdef") for _ in range(32))
        return f"{digits}.{self._rng.randrange(10**9, 10**10)}.{hexs}"

    def block_id(self) -> str:
        return "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(5))

    def client_msg_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def new_ts(self) -> str:
        if self._ts_factory is not None:
            return self._ts_factory()
        now = int(time.time() * 1_000_000)
        self._last_ts_us = max(now, self._last_ts_us + 1)
        return _us_to_ts(self._last_ts_us)

    def response_url(self, channel: str | None = None, user: str | None = None) -> str:
        if self._response_url_factory is not None:
            return self._response_url_factory(channel, user)
        rid = self._alnum(10)
        return f"https://hooks.slack.com/commands/{self.team_id}/{rid}/{self._alnum(24)}"

    # ---- events

    def event_callback(
        self, event: JSONDict, *, event_id: str | None = None, event_time: int | None = None
    ) -> JSONDict:
        """Wrap ``event`` in the ``event_callback`` envelope Slack POSTs to the Events URL."""
        event = dict(event)
        event.setdefault("event_ts", event.get("ts") or self.new_ts())
        when = event_time if event_time is not None else int(float(event["event_ts"]))
        context = base64.b64encode(
            json.dumps({"et": event["type"], "tid": self.team_id, "aid": self.api_app_id}).encode()
        ).decode()
        envelope: JSONDict = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": self.enterprise_id,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or self.event_id(),
            "event_time": when,
            "authorizations": [
                {
                    "enterprise_id": self.enterprise_id,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{context}",
        }
        if self.include_authed_users:
            # Deprecated by Slack in favour of "authorizations" but still required by the public
            # wrapper schema; drop it with include_authed_users=False to test the modern shape.
            envelope["authed_users"] = [self.bot_user_id]
        return envelope

    def _user_message_fields(
        self, user: str, text: str, ts: str | None, files: Sequence[JSONDict] | None
    ) -> JSONDict:
        ts = ts or self.new_ts()
        fields: JSONDict = {
            "user": user,
            "ts": ts,
            "client_msg_id": self.client_msg_id(),
            "text": text,
            "team": self.team_id,
            "blocks": rich_text_blocks(text, self.block_id()) if text else [],
        }
        if files:
            fields["files"] = [dict(f) for f in files]
            fields["upload"] = False
            fields["display_as_bot"] = False
        return fields

    def app_mention(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        ts: str | None = None,
        thread_ts: str | None = None,
        files: Sequence[JSONDict] | None = None,
        event_id: str | None = None,
    ) -> JSONDict:
        """``app_mention`` event in an envelope; ``text`` should contain ``<@BOT_USER_ID>``."""
        event: JSONDict = {
            "type": "app_mention",
            **self._user_message_fields(user, text, ts, files),
        }
        event["channel"] = channel
        if thread_ts:
            event["thread_ts"] = thread_ts
        event["event_ts"] = event["ts"]
        return self.event_callback(event, event_id=event_id)

    def message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        ts: str | None = None,
        thread_ts: str | None = None,
        parent_user_id: str | None = None,
        channel_type: Literal["channel", "group", "im", "mpim"] = "channel",
        files: Sequence[JSONDict] | None = None,
        event_id: str | None = None,
    ) -> JSONDict:
        """A person's ``message`` event: a channel message, a thread reply, a DM (with
        ``channel_type='im'``) or a file share (when ``files`` is given)."""
        event: JSONDict = {"type": "message", **self._user_message_fields(user, text, ts, files)}
        if files:
            event["subtype"] = "file_share"
        event["channel"] = channel
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = parent_user_id or user
        event["event_ts"] = event["ts"]
        event["channel_type"] = channel_type
        return self.event_callback(event, event_id=event_id)

    def bot_profile(self, bot_id: str | None = None, name: str = "teambot") -> JSONDict:
        bid = bot_id or self.bot_id
        icon = "https://a.slack-edge.com/80588/img/plugins/app/bot_{}.png"
        return {
            "id": bid,
            "deleted": False,
            "name": name,
            "updated": 1_700_000_000,
            "app_id": self.api_app_id,
            "icons": {k: icon.format(k[-2:]) for k in ("image_36", "image_48", "image_72")},
            "team_id": self.team_id,
        }

    def bot_message(
        self,
        channel: str,
        text: str,
        *,
        bot_id: str | None = None,
        user: str | None = None,
        app_id: str | None = None,
        ts: str | None = None,
        thread_ts: str | None = None,
        parent_user_id: str | None = None,
        channel_type: Literal["channel", "group", "im", "mpim"] = "channel",
        legacy: bool = False,
        username: str = "teambot",
        event_id: str | None = None,
    ) -> JSONDict:
        """A message posted by an app: carries ``bot_id``. By default it is the modern shape (a
        bot token's post: ``user`` is the bot user, no subtype); ``legacy=True`` gives the
        ``subtype: bot_message`` shape of webhooks and legacy integrations (no ``user``)."""
        ts = ts or self.new_ts()
        bid = bot_id or self.bot_id
        event: JSONDict = {"type": "message", "text": text, "ts": ts, "bot_id": bid}
        if legacy:
            event["subtype"] = "bot_message"
            event["username"] = username
        else:
            event["user"] = user or self.bot_user_id
            event["app_id"] = app_id or self.api_app_id
            event["bot_profile"] = self.bot_profile(bid)
            event["team"] = self.team_id
            event["blocks"] = rich_text_blocks(text, self.block_id()) if text else []
        event["channel"] = channel
        if thread_ts:
            event["thread_ts"] = thread_ts
            if parent_user_id or not legacy:
                event["parent_user_id"] = parent_user_id or event["user"]
        event["event_ts"] = ts
        event["channel_type"] = channel_type
        return self.event_callback(event, event_id=event_id)

    def message_changed(
        self,
        channel: str,
        *,
        user: str,
        ts: str,
        new_text: str,
        old_text: str,
        thread_ts: str | None = None,
        channel_type: Literal["channel", "group", "im", "mpim"] = "channel",
        event_id: str | None = None,
    ) -> JSONDict:
        """``message`` / ``message_changed``: ``message`` is the edited message (with ``edited``),
        ``previous_message`` the old one; the event's own ``ts`` is the edit's."""
        edit_ts = self.new_ts()
        message: JSONDict = {
            "type": "message",
            **self._user_message_fields(user, new_text, ts, None),
            "edited": {"user": user, "ts": edit_ts},
        }
        previous: JSONDict = {
            "type": "message",
            **self._user_message_fields(user, old_text, ts, None),
        }
        previous["client_msg_id"] = message["client_msg_id"]
        for m in (message, previous):
            if thread_ts:
                m["thread_ts"] = thread_ts
                m["parent_user_id"] = user
        event: JSONDict = {
            "type": "message",
            "subtype": "message_changed",
            "message": message,
            "previous_message": previous,
            "channel": channel,
            "hidden": True,
            "ts": edit_ts,
            "event_ts": edit_ts,
            "channel_type": channel_type,
        }
        return self.event_callback(event, event_id=event_id)

    def message_deleted(
        self,
        channel: str,
        *,
        user: str,
        deleted_ts: str,
        old_text: str,
        thread_ts: str | None = None,
        channel_type: Literal["channel", "group", "im", "mpim"] = "channel",
        event_id: str | None = None,
    ) -> JSONDict:
        """``message`` / ``message_deleted`` with the ``previous_message`` and ``deleted_ts``."""
        now = self.new_ts()
        previous: JSONDict = {
            "type": "message",
            **self._user_message_fields(user, old_text, deleted_ts, None),
        }
        if thread_ts:
            previous["thread_ts"] = thread_ts
            previous["parent_user_id"] = user
        event: JSONDict = {
            "type": "message",
            "subtype": "message_deleted",
            "previous_message": previous,
            "channel": channel,
            "hidden": True,
            "deleted_ts": deleted_ts,
            "ts": now,
            "event_ts": now,
            "channel_type": channel_type,
        }
        return self.event_callback(event, event_id=event_id)

    def agent_session_stopped(
        self, channel: str, thread_ts: str, user: str, streaming: Sequence[str] = ()
    ) -> JSONDict:
        """The user pressed Stop on an agent session (docs.slack.dev, agent_session_stopped)."""
        return self.event_callback(
            {
                "type": "agent_session_stopped",
                "channel": channel,
                "thread_ts": thread_ts,
                "user": user,
                "streaming_message_ts": list(streaming),
                "event_ts": self.new_ts(),
            }
        )

    def assistant_thread_started(
        self, channel: str, thread_ts: str, user: str, context: JSONDict | None = None
    ) -> JSONDict:
        """A user opened a new thread in the agent container."""
        return self.event_callback(
            {
                "type": "assistant_thread_started",
                "assistant_thread": {
                    "user_id": user,
                    "context": dict(context or {}),
                    "channel_id": channel,
                    "thread_ts": thread_ts,
                },
                "event_ts": self.new_ts(),
            }
        )

    def assistant_thread_context_changed(
        self, channel: str, thread_ts: str, user: str, context: JSONDict
    ) -> JSONDict:
        """The user moved to another channel while the agent thread is open."""
        return self.event_callback(
            {
                "type": "assistant_thread_context_changed",
                "assistant_thread": {
                    "user_id": user,
                    "context": dict(context),
                    "channel_id": channel,
                    "thread_ts": thread_ts,
                },
                "event_ts": self.new_ts(),
            }
        )

    def app_home_opened(self, user: str) -> JSONDict:
        return self.event_callback(
            {
                "type": "app_home_opened",
                "user": user,
                "channel": "D0HOME00001",
                "tab": "home",
                "event_ts": self.new_ts(),
            }
        )

    def block_action(
        self,
        *,
        user: str,
        channel: str,
        message_ts: str,
        action: JSONDict,
        response_url: str | None = None,
    ) -> JSONDict:
        """A ``block_actions`` payload: ``user`` used ``action`` on a message's block."""
        return {
            "type": "block_actions",
            "token": self.verification_token,
            "api_app_id": self.api_app_id,
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": self.team_id,
            },
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "channel": {"id": channel, "name": self._channel_names.get(channel, channel)},
            "message": {"ts": message_ts, "type": "message"},
            "trigger_id": self.trigger_id(),
            "response_url": response_url or self.response_url(channel, user),
            "actions": [{**action, "action_ts": self.new_ts()}],
        }

    def view_submission(self, *, user: str, view: JSONDict, values: JSONDict) -> JSONDict:
        """A ``view_submission`` payload: ``user`` sent the modal ``view`` (as opened) with
        ``values`` (block_id → action_id → element state)."""
        return {
            "type": "view_submission",
            "token": self.verification_token,
            "api_app_id": self.api_app_id,
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": self.team_id,
            },
            "trigger_id": self.trigger_id(),
            "view": {**view, "state": {"values": values}, "team_id": self.team_id},
        }

    def url_verification(self, challenge: str | None = None) -> JSONDict:
        """The handshake Slack sends when the Events request URL is saved."""
        return {
            "token": self.verification_token,
            "challenge": challenge or self._alnum(48),
            "type": "url_verification",
        }

    # ---- slash commands and shortcuts

    def slash_command(
        self,
        command: str,
        text: str,
        *,
        user_id: str,
        channel_id: str,
        response_url: str | None = None,
        trigger_id: str | None = None,
        user_name: str | None = None,
        channel_name: str | None = None,
    ) -> dict[str, str]:
        """The form fields of a slash command POST (``application/x-www-form-urlencoded``)."""
        fields = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name or self._channel_names.get(channel_id, "general"),
            "user_id": user_id,
            "user_name": user_name or self._user_names.get(user_id, "user"),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or self.response_url(channel_id, user_id),
            "trigger_id": trigger_id or self.trigger_id(),
        }
        if self.enterprise_id:
            fields["enterprise_id"] = self.enterprise_id
        return fields

    def message_shortcut(
        self,
        callback_id: str,
        *,
        user_id: str,
        channel_id: str,
        message: JSONDict,
        response_url: str | None = None,
        trigger_id: str | None = None,
        user_name: str | None = None,
        channel_name: str | None = None,
    ) -> JSONDict:
        """A ``message_action`` payload (a message shortcut); send it with
        :meth:`shortcut_form`, which wraps it as the ``payload`` form field."""
        name = user_name or self._user_names.get(user_id, "user")
        return {
            "type": "message_action",
            "token": self.verification_token,
            "action_ts": self.new_ts(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {"id": user_id, "username": name, "team_id": self.team_id, "name": name},
            "channel": {
                "id": channel_id,
                "name": channel_name or self._channel_names.get(channel_id, "general"),
            },
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": trigger_id or self.trigger_id(),
            "response_url": response_url or self.response_url(channel_id, user_id),
            "message_ts": message.get("ts", ""),
            "message": message,
        }

    def user_message_object(
        self, user: str, text: str, *, ts: str | None = None, thread_ts: str | None = None
    ) -> JSONDict:
        """A message object as it appears inside shortcut payloads and history."""
        msg: JSONDict = {"type": "message", **self._user_message_fields(user, text, ts, None)}
        if thread_ts:
            msg["thread_ts"] = thread_ts
        return msg

    @staticmethod
    def shortcut_form(payload: Mapping[str, Any]) -> dict[str, str]:
        """Interactivity requests are a form with one field, ``payload=<json>``."""
        return {"payload": json.dumps(payload, separators=(",", ":"))}


class SlackSigner:
    """Signs bodies the way Slack does (``v0:<timestamp>:<body>`` HMAC-SHA256).

    Uses ``slack_sdk``'s :class:`SignatureVerifier.generate_signature`, so the app's verifier and
    this signer agree by construction.
    """

    USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"

    def __init__(self, signing_secret: str) -> None:
        self.signing_secret = signing_secret
        self.verifier = SignatureVerifier(signing_secret)

    def headers(
        self,
        body: bytes | str,
        *,
        content_type: str,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> dict[str, str]:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        signature = self.verifier.generate_signature(timestamp=ts, body=body)
        assert signature is not None
        headers = {
            "Content-Type": content_type,
            "User-Agent": self.USER_AGENT,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        }
        if retry_num is not None:
            # Slack retries an event up to 3 times; reasons: http_timeout, http_error,
            # too_many_requests, connection_failed, ssl_error, unknown_error.
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        return headers

    def json_request(
        self,
        payload: Mapping[str, Any],
        *,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> SignedRequest:
        """Events API delivery: a JSON body."""
        body = json.dumps(payload).encode()
        return SignedRequest(
            body,
            self.headers(
                body,
                content_type="application/json",
                timestamp=timestamp,
                retry_num=retry_num,
                retry_reason=retry_reason,
            ),
        )

    def form_request(
        self, fields: Mapping[str, str], *, timestamp: int | None = None
    ) -> SignedRequest:
        """Slash commands and interactivity: an urlencoded form body."""
        body = urlencode(fields).encode()
        return SignedRequest(
            body,
            self.headers(
                body, content_type="application/x-www-form-urlencoded", timestamp=timestamp
            ),
        )


# --------------------------------------------------------------------------- the fake


class FakeSlack:
    """An in-process fake of Slack's Web API on ``127.0.0.1:<random port>``.

    Seed the workspace with :meth:`add_user`, :meth:`add_channel`, :meth:`add_im`,
    :meth:`add_message`, :meth:`seed_thread` and :meth:`add_file`; drive the code under test;
    observe with :attr:`calls`, :meth:`calls_to`, :meth:`thread`, :meth:`ephemerals`,
    :attr:`responses` and :attr:`statuses`; inject faults with :meth:`rate_limit`, :meth:`fail`,
    :meth:`server_error`, :meth:`refuse_streaming` and :meth:`break_stream_after`.

    IDs default to ones that match the spec's patterns (``T`` + 8 or more, ``B`` + 8 or more,
    channel IDs ``C``/``G``/``D`` + 8 or more): pick IDs of that form when seeding, or the spec
    validation in your tests will (rightly) complain.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        scopes: Sequence[str] | None = None,
        team_id: str = "T0000000001",
        team_name: str = "Teambot Test",
        team_domain: str = "teambot-test",
        bot_user_id: str = "U0000000BOT",
        bot_id: str = "B0000000BOT",
        bot_name: str = "teambot",
        api_app_id: str = "A0000000APP",
        signing_secret: str = "8f742231b10e8888abcd99yyyzzz85a5",
        verification_token: str = "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        page_cap: int | None = None,
        replies_parent_on_every_page: bool = True,
        file_auth_failure: Literal["redirect", "forbidden"] = "redirect",
        seed: int = 0,
    ) -> None:
        """
        ``page_cap`` clamps ``limit`` for conversations.history/replies, e.g. 15 to act like a
        commercially distributed non-Marketplace app (docs.slack.dev, rate-limit changes of
        2025-05-29). ``replies_parent_on_every_page``: whether continuation pages of
        conversations.replies repeat the thread's parent first (observed behaviour; not
        documented either way). ``file_auth_failure``: what a ``url_private`` GET without the
        bot token gets - ``redirect`` (302 to a sign-in page that answers 200 HTML, Slack's
        behaviour) or ``forbidden`` (403).
        """
        self.bot_token = bot_token
        #: The app-level token (Socket Mode) that apps.connections.open takes.
        self.app_token = app_token
        #: The bot token's scopes, sent as ``x-oauth-scopes`` on every call it makes.
        self.scopes: list[str] = list(BOT_SCOPES if scopes is None else scopes)
        self.team_id = team_id
        self.team_name = team_name
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.api_app_id = api_app_id
        self.signing_secret = signing_secret
        self.verification_token = verification_token
        self.page_cap = page_cap
        self.replies_parent_on_every_page = replies_parent_on_every_page
        self.file_auth_failure = file_auth_failure

        self._rng = random.Random(seed)
        self._users: dict[str, JSONDict] = {}
        self._channels: dict[str, _Channel] = {}
        self._messages: dict[str, dict[str, _Message]] = {}
        self._files: dict[str, JSONDict] = {}
        self._file_data: dict[str, bytes] = {}
        self._stalled_files: dict[str, tuple[float, int]] = {}
        self._closing = asyncio.Event()
        self._ephemerals: list[Ephemeral] = []
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._thread_status: dict[tuple[str, str], str] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._streaming_refusal: tuple[str, int | None] | None = None
        self._stream_break: tuple[int, str] | None = None
        self._appends_since_break = 0
        self._last_ts_us = 0

        self.calls: list[Call] = []
        self.responses: list[ResponseUrlPost] = []
        self.statuses: list[StatusUpdate] = []
        #: Modals opened (views.open), Home tabs published (user → view), agent thread
        #: prompts and titles ((channel, thread) → value), agent session statuses in order.
        self.views: list[JSONDict] = []
        self.homes: dict[str, JSONDict] = {}
        self.prompts: dict[tuple[str, str], list[JSONDict]] = {}
        self.titles: dict[tuple[str, str], str] = {}
        self.sessions: list[tuple[str, str, str]] = []
        self._triggers_used: set[str] = set()
        self.file_downloads: list[FileDownload] = []

        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._handlers: dict[str, Callable[[JSONDict], Awaitable[JSONDict]]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "assistant.threads.setStatus": self._assistant_set_status,
            "assistant.threads.setSuggestedPrompts": self._assistant_set_prompts,
            "assistant.threads.setTitle": self._assistant_set_title,
            "agents.sessions.setStatus": self._agents_set_status,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.info": self._conversations_info,
            "conversations.members": self._conversations_members,
            "users.info": self._users_info,
            "reactions.add": self._reactions_add,
        }
        self.add_user(
            bot_user_id,
            bot_name,
            display_name=bot_name,
            real_name=bot_name,
            is_bot=True,
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/files/{path:.+}", self._handle_file)
        app.router.add_get("/signin", self._handle_signin)
        app.router.add_post("/response/{rid}", self._handle_response_url)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])

    async def close(self) -> None:
        self._closing.set()  # stalled downloads end
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started: use 'async with FakeSlack() as slack'")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api/``: ``AsyncWebClient(base_url=...)``, ``SLACK_API_URL``."""
        return f"{self.base_url}/api/"

    def client(self, **kwargs: Any) -> AsyncWebClient:
        """An ``AsyncWebClient`` with the bot token, pointed at the fake."""
        from slack_sdk.web.async_client import AsyncWebClient

        kwargs.setdefault("token", self.bot_token)
        return AsyncWebClient(base_url=self.api_url, **kwargs)

    @property
    def payloads(self) -> SlackPayloads:
        """Inbound request builders bound to this workspace (``response_url`` points here)."""
        return SlackPayloads(
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.api_app_id,
            bot_user_id=self.bot_user_id,
            bot_id=self.bot_id,
            verification_token=self.verification_token,
            rng=self._rng,
            response_url_factory=self.response_url,
            user_names={uid: str(u["name"]) for uid, u in self._users.items()},
            channel_names={cid: c.name for cid, c in self._channels.items()},
            ts_factory=self._next_ts,
        )

    @property
    def signer(self) -> SlackSigner:
        return SlackSigner(self.signing_secret)

    # ------------------------------------------------------------------ seeding

    def add_user(
        self,
        id: str,
        name: str,
        *,
        display_name: str = "",
        real_name: str = "",
        is_bot: bool = False,
        tz: str = "Europe/Berlin",
        tz_offset: int = 3600,
        email: str | None = None,
        is_admin: bool = False,
        is_owner: bool = False,
        is_restricted: bool = False,
        team_id: str | None = None,
    ) -> JSONDict:
        """Add a workspace member; returns the ``users.info`` user object. `team_id`: a
        member of another workspace (Slack Connect)."""
        real = real_name or name
        avatar = f"https://avatars.slack-edge.com/2024-01-01/{id.lower()}_"
        profile: JSONDict = {
            "title": "",
            "phone": "",
            "skype": "",
            "real_name": real,
            "real_name_normalized": real,
            "display_name": display_name,
            "display_name_normalized": display_name,
            "fields": {},
            "status_text": "",
            "status_emoji": "",
            "status_expiration": 0,
            "avatar_hash": f"g{id.lower()[:11]}",
            "first_name": real.split(" ")[0],
            "last_name": " ".join(real.split(" ")[1:]),
            "image_24": f"{avatar}24.png",
            "image_32": f"{avatar}32.png",
            "image_48": f"{avatar}48.png",
            "image_72": f"{avatar}72.png",
            "image_192": f"{avatar}192.png",
            "image_512": f"{avatar}512.png",
            "team": self.team_id,
        }
        if is_bot:
            profile["always_active"] = True
            if id == self.bot_user_id:
                profile["bot_id"] = self.bot_id
                profile["api_app_id"] = self.api_app_id
        elif email is not None:
            profile["email"] = email
        user: JSONDict = {
            "id": id,
            "team_id": team_id or self.team_id,
            "name": name,
            "deleted": False,
            "color": f"{self._rng.randrange(0x1000000):06x}",
            "real_name": real,
            "tz": tz,
            "tz_label": tz,
            "tz_offset": tz_offset,
            "profile": profile,
            "is_admin": is_admin or is_owner,
            "is_owner": is_owner,
            "is_primary_owner": False,
            "is_restricted": is_restricted,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
        }
        self._users[id] = user
        return user

    def add_channel(
        self,
        id: str,
        name: str,
        *,
        is_private: bool = False,
        members: Iterable[str] = (),
        bot_is_member: bool = True,
        topic: str = "",
        purpose: str = "",
        is_archived: bool = False,
    ) -> None:
        """Add a public or private channel; the bot is a member unless ``bot_is_member=False``."""
        member_list = list(dict.fromkeys(members))
        if bot_is_member and self.bot_user_id not in member_list:
            member_list.append(self.bot_user_id)
        self._channels[id] = _Channel(
            id=id,
            name=name,
            is_private=is_private,
            is_im=False,
            members=member_list,
            created=1_700_000_000,
            creator=member_list[0] if member_list else self.bot_user_id,
            topic=topic,
            purpose=purpose,
            is_archived=is_archived,
        )
        self._messages.setdefault(id, {})

    def add_im(self, user: str, id: str | None = None) -> str:
        """Open (or return) the direct-message conversation between ``user`` and the bot."""
        for channel in self._channels.values():
            if channel.is_im and channel.im_user == user:
                return channel.id
        cid = id or f"D0{self._alnum(9)}"
        self._channels[cid] = _Channel(
            id=cid,
            name=cid,
            is_private=True,
            is_im=True,
            members=[user, self.bot_user_id],
            created=1_700_000_000,
            creator=user,
            im_user=user,
        )
        self._messages.setdefault(cid, {})
        return cid

    def add_message(
        self,
        channel: str,
        text: str,
        user: str,
        thread_ts: str | None = None,
        files: Sequence[JSONDict | str] | None = None,
        ts: str | None = None,
        *,
        reply_broadcast: bool = False,
    ) -> str:
        """Add a message someone posted (the bot too, if ``user`` is the bot user); returns ts."""
        self._require_channel(channel)
        if ts is None:
            ts = self._next_ts()
        else:
            self._last_ts_us = max(self._last_ts_us, _ts_to_us(ts))
        if thread_ts is not None:
            thread_ts = self._thread_root(channel, thread_ts) or thread_ts
        is_bot = user == self.bot_user_id
        msg = _Message(
            channel=channel,
            ts=ts,
            text=text,
            user=user,
            bot_id=self.bot_id if is_bot else None,
            thread_ts=thread_ts,
            blocks=rich_text_blocks(text, self._block_id()) if text else [],
            files=[self._file_ref(f) for f in files or ()],
            reply_broadcast=reply_broadcast,
            client_msg_id=None if is_bot else str(uuid.UUID(int=self._rng.getrandbits(128))),
        )
        self._messages[channel][ts] = msg
        return ts

    def seed_thread(
        self,
        channel: str,
        n: int,
        users: Sequence[str] = (),
        *,
        text: str = "message {i}",
        parent_text: str = "thread parent",
    ) -> str:
        """Add a parent and ``n`` replies (authors cycle through ``users``); returns parent ts."""
        people = [u for u in self._users if u != self.bot_user_id] or [self.bot_user_id]
        authors = list(users) or people[:1]
        parent = self.add_message(channel, parent_text, user=authors[0])
        for i in range(n):
            self.add_message(
                channel,
                text.format(i=i + 1),
                user=authors[(i + 1) % len(authors)],
                thread_ts=parent,
            )
        return parent

    def add_file(
        self,
        name: str,
        mimetype: str,
        data: bytes,
        *,
        user: str | None = None,
        title: str | None = None,
        filetype: str | None = None,
        channels: Sequence[str] = (),
    ) -> JSONDict:
        """Store a file; returns its file object (the shape ``files`` carries on messages/events)
        with ``url_private`` served by this fake (it needs the bot token)."""
        fid = f"F0{self._alnum(9)}"
        owner = user or next((u for u in self._users if u != self.bot_user_id), self.bot_user_id)
        ext = filetype or (name.rsplit(".", 1)[-1].lower() if "." in name else "binary")
        base = f"{self.base_url}/files/{self.team_id}-{fid}"
        created = int(time.time())
        file_obj: JSONDict = {
            "id": fid,
            "created": created,
            "timestamp": created,
            "name": name,
            "title": title or name,
            "mimetype": mimetype,
            "filetype": ext,
            "pretty_type": ext.upper(),
            "user": owner,
            "user_team": self.team_id,
            "editable": False,
            "size": len(data),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": bool(channels),
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{base}/{quote(name)}",
            "url_private_download": f"{base}/download/{quote(name)}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{owner}/{fid}/{quote(name)}",
            "permalink_public": f"https://slack-files.com/{self.team_id}-{fid}-{self._alnum(10).lower()}",
            "channels": [c for c in channels if c.startswith("C")],
            "groups": [c for c in channels if c.startswith("G")],
            "ims": [c for c in channels if c.startswith("D")],
            "comments_count": 0,
            "has_rich_preview": False,
            "is_starred": False,
        }
        self._files[fid] = file_obj
        self._file_data[fid] = data
        return copy.deepcopy(file_obj)

    def response_url(self, channel: str | None = None, user: str | None = None) -> str:
        """A fresh ``response_url`` served by this fake (what slash commands/shortcuts carry)."""
        rid = f"{self.team_id}{self._alnum(12)}"
        self._response_urls[rid] = _ResponseUrl(id=rid, channel=channel, user=user)
        return f"{self.base_url}/response/{rid}"

    # ---- conveniences that store a message and build the matching inbound event

    def mention(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: Sequence[JSONDict] | None = None,
    ) -> JSONDict:
        """Store a message from ``user`` that mentions the bot and return its ``app_mention``
        envelope (the ts and text of event and stored message agree)."""
        if f"<@{self.bot_user_id}>" not in text:
            text = f"<@{self.bot_user_id}> {text}"
        ts = self.add_message(channel, text, user=user, thread_ts=thread_ts, files=files)
        root = self._messages[channel][ts].thread_ts
        return self.payloads.app_mention(channel, user, text, ts=ts, thread_ts=root, files=files)

    def user_message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: Sequence[JSONDict] | None = None,
    ) -> JSONDict:
        """Store a message from ``user`` and return its ``message`` envelope (``channel_type``
        follows the conversation: ``im`` for a DM, ``group`` for a private channel)."""
        ts = self.add_message(channel, text, user=user, thread_ts=thread_ts, files=files)
        msg = self._messages[channel][ts]
        parent_user = None
        if msg.thread_ts:
            parent_user = self._messages[channel][msg.thread_ts].user
        return self.payloads.message(
            channel,
            user,
            text,
            ts=ts,
            thread_ts=msg.thread_ts,
            parent_user_id=parent_user,
            channel_type=self._channel_type(channel),
            files=files,
        )

    # ------------------------------------------------------------------ faults

    def rate_limit(self, method: str, times: int | None = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls to ``method`` get HTTP 429, ``Retry-After: retry_after`` and
        ``{"ok": false, "error": "ratelimited"}`` (``times=None``: until :meth:`clear_faults`)."""
        if times is not None and times <= 0:
            return
        self._faults.setdefault(method, deque()).append(
            _Fault("ratelimit", times, error="ratelimited", retry_after=retry_after, status=429)
        )

    def fail(self, method: str, error: str, times: int | None = 1) -> None:
        """The next ``times`` calls to ``method`` answer ``{"ok": false, "error": error}``."""
        if times is not None and times <= 0:
            return
        self._faults.setdefault(method, deque()).append(_Fault("error", times, error=error))

    def server_error(self, method: str, status: int = 500, times: int | None = 1) -> None:
        """The next ``times`` calls to ``method`` get an HTTP 5xx (500 or 503 are the codes
        ``slack_sdk``'s server-error retry handler retries)."""
        if times is not None and times <= 0:
            return
        error = "service_unavailable" if status == 503 else "internal_error"
        self._faults.setdefault(method, deque()).append(
            _Fault("http", times, error=error, status=status)
        )

    def stall_file(self, file_id: str, stall: float = 60.0, sent: int = 0) -> None:
        """Downloads of the file ``file_id`` stall: the status line and headers (with the
        full ``Content-Length``) and its first ``sent`` bytes go out, then nothing for
        ``stall`` seconds (or until the fake closes), then the rest."""
        self._stalled_files[file_id] = (stall, sent)

    def clear_faults(self) -> None:
        self._stalled_files.clear()
        self._faults.clear()
        self._streaming_refusal = None
        self._stream_break = None

    def refuse_streaming(
        self, error: str = "channel_type_not_supported", times: int | None = None
    ) -> None:
        """Make ``chat.startStream`` refuse (every call, or the next ``times``). Errors Slack's
        method page lists that mean "no streaming here": ``channel_type_not_supported``
        (default), ``not_allowed_token_type``, ``missing_scope``, ``access_denied``,
        ``restricted_action``, ``ekm_access_denied``, ``unknown_method`` (method unavailable).
        The ``missing_recipient_*`` errors the fake produces on its own for channel streams
        started without ``recipient_user_id`` / ``recipient_team_id``."""
        self._streaming_refusal = None if times is not None and times <= 0 else (error, times)

    def break_stream_after(
        self, n_appends: int, error: str = "message_not_in_streaming_state"
    ) -> None:
        """Let ``n_appends`` more ``chat.appendStream`` calls succeed, then fail the rest with
        ``error``. With the default error the open streams are also ended (as when Slack expires
        a stream), so ``chat.stopStream`` fails the same way; other errors only hit appends.
        It stays armed (streams started later break too) until :meth:`clear_faults`."""
        self._stream_break = (n_appends, error)
        self._appends_since_break = 0

    def expire_streams(self) -> None:
        """End every open stream as Slack does after a stream's lifetime (about five minutes):
        later appends/stops get ``message_not_in_streaming_state``; the text so far stays."""
        for msgs in self._messages.values():
            for msg in msgs.values():
                if msg.stream == "streaming":
                    msg.stream = "expired"

    # ------------------------------------------------------------------ observation

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[ThreadMessage]:
        """The messages of a thread as a reader sees them: parent first, then replies; deleted
        ones gone (a deleted parent with replies shows as Slack's tombstone)."""
        root = self._thread_root(channel, thread_ts) or thread_ts
        msgs = self._messages.get(channel, {})
        out = [msgs[root]] if root in msgs else []
        out += sorted(
            (m for m in msgs.values() if m.thread_ts == root and m.ts != root),
            key=lambda m: _ts_to_us(m.ts),
        )
        return [self._view(m) for m in out if not m.deleted]

    def messages(self, channel: str) -> list[ThreadMessage]:
        """Top-level messages of a channel (and broadcast replies), oldest first."""
        msgs = self._messages.get(channel, {}).values()
        top = [m for m in msgs if self._is_top_level(m) and not m.deleted]
        return [self._view(m) for m in sorted(top, key=lambda m: _ts_to_us(m.ts))]

    def message(self, channel: str, ts: str) -> ThreadMessage | None:
        msg = self._messages.get(channel, {}).get(ts)
        return None if msg is None or msg.deleted else self._view(msg)

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        return [e for e in self._ephemerals if user is None or e.user == user]

    def thread_status(self, channel: str, thread_ts: str) -> str:
        """The assistant status currently shown in a thread ('' when none)."""
        return self._thread_status.get((channel, thread_ts), "")

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: JSONDict = dict(request.query)
        content_type = request.content_type if request.body_exists else ""
        headers = dict(request.headers)
        status = 200
        extra_headers: dict[str, str] = {}
        body_error: str | None = None
        if request.method == "POST" and request.body_exists:
            raw = await request.read()
            if content_type == "application/json":
                try:
                    parsed = json.loads(raw or b"null")
                except json.JSONDecodeError:
                    body_error = "invalid_json"
                else:
                    if not isinstance(parsed, dict):
                        body_error = "json_not_object"
                    elif method in _JSON_METHODS:
                        args.update(parsed)
            elif content_type == "application/x-www-form-urlencoded":
                args.update(parse_qsl(raw.decode(), keep_blank_values=True))
            elif content_type == "multipart/form-data":
                form = await request.post()
                args.update({k: v for k, v in form.items() if isinstance(v, str)})
            elif raw:
                body_error = "invalid_post_type"
        elif request.method not in {"GET", "POST"}:
            body_error = "invalid_post_type"

        token = None
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        arg_token = args.pop("token", None)
        token = token or (str(arg_token) if arg_token else None)

        try:
            handler = self._handlers.get(method)
            if handler is None:
                raise _ApiError("unknown_method", status=404)
            if body_error:
                raise _ApiError(body_error)
            if not token:
                raise _ApiError("not_authed")
            if token != (self.app_token if method in _APP_TOKEN_METHODS else self.bot_token):
                raise _ApiError("invalid_auth")
            if method not in _APP_TOKEN_METHODS:
                extra_headers["x-oauth-scopes"] = ",".join(self.scopes)
            self._apply_fault(method)
            result = await handler(args)
            body: JSONDict = {"ok": True, **result}
        except _ApiError as err:
            status = err.status
            extra_headers = err.headers
            body = {"ok": False, "error": err.error}
            if method not in self._handlers:
                body["req_method"] = method
            if err.messages:
                body["response_metadata"] = {"messages": err.messages}
        self.calls.append(
            Call(
                method=method,
                args=args,
                headers=headers,
                http_method=request.method,
                content_type=content_type,
                time=time.monotonic(),
                status=status,
                response=body,
            )
        )
        return web.json_response(body, status=status, headers=extra_headers)

    def _apply_fault(self, method: str) -> None:
        queue = self._faults.get(method)
        if not queue:
            return
        fault = queue[0]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.popleft()
        if fault.kind == "ratelimit":
            raise _ApiError(
                "ratelimited", status=429, headers={"Retry-After": str(fault.retry_after)}
            )
        raise _ApiError(fault.error, status=fault.status)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        auth = request.headers.get("Authorization", "")
        authorized = auth.lower().startswith("bearer ") and auth[7:].strip() == self.bot_token
        match = re.match(rf"{re.escape(self.team_id)}-(F[A-Z0-9]+)/(?:download/)?(.+)$", path)
        fid = match.group(1) if match else ""
        if not authorized:
            status = 403 if self.file_auth_failure == "forbidden" else 302
            self.file_downloads.append(FileDownload(path, False, status))
            if status == 403:
                return web.Response(status=403, text="Forbidden", content_type="text/plain")
            target = f"/signin?redir={quote(request.path_qs)}"
            return web.Response(status=302, headers={"Location": target})
        if fid not in self._files:
            self.file_downloads.append(FileDownload(path, True, 404))
            return web.Response(status=404, text="Not Found", content_type="text/plain")
        self.file_downloads.append(FileDownload(path, True, 200))
        info = self._files[fid]
        if fid in self._stalled_files:
            return await self._stalled_file(request, fid)
        return web.Response(
            body=self._file_data[fid],
            content_type=str(info["mimetype"]),
            headers={"Content-Disposition": f'attachment; filename="{info["name"]}"'},
        )

    async def _stalled_file(self, request: web.Request, fid: str) -> web.StreamResponse:
        stall, sent = self._stalled_files[fid]
        data = self._file_data[fid]
        info = self._files[fid]
        response = web.StreamResponse(
            headers={"Content-Disposition": f'attachment; filename="{info["name"]}"'}
        )
        response.content_type = str(info["mimetype"])
        response.content_length = len(data)
        await response.prepare(request)
        head = data[: max(0, min(sent, len(data) - 1))]
        if head:
            await response.write(head)
        # Until the stall ends, the fake closes or the client hangs up.
        ends = time.monotonic() + stall
        while time.monotonic() < ends and not self._closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return response
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 0.05)
        with contextlib.suppress(ConnectionError):
            await response.write(data[len(head) :])
            await response.write_eof()
        return response

    async def _handle_signin(self, request: web.Request) -> web.Response:
        page = (
            "<!DOCTYPE html><html><head><title>Slack</title></head>"
            f"<body><h1>Sign in to {self.team_name}</h1></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        raw = await request.read()
        entry = self._response_urls.get(rid)
        try:
            if request.content_type == "application/json":
                body = json.loads(raw or b"{}")
            else:
                form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
                body = json.loads(form.get("payload", "{}"))
        except json.JSONDecodeError:
            body = {"_raw": raw.decode(errors="replace")}
        if not isinstance(body, dict):
            body = {"_raw": body}
        if entry is None:
            status, answer = 404, {"ok": False, "error": "invalid_url"}
        elif entry.uses >= RESPONSE_URL_MAX_USES:
            status, answer = 404, {"ok": False, "error": "used_url"}
        elif not (body.get("text") or body.get("blocks") or body.get("delete_original")):
            status, answer = 400, {"ok": False, "error": "no_text"}
        else:
            entry.uses += 1
            status, answer = 200, {"ok": True}
        self.responses.append(ResponseUrlPost(rid, body, time.monotonic(), status))
        return web.json_response(answer, status=status)

    # ------------------------------------------------------------------ internals

    def _alnum(self, n: int) -> str:
        return "".join(self._rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))

    def _block_id(self) -> str:
        return "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(5))

    def _next_ts(self) -> str:
        now = int(time.time() * 1_000_000)
        self._last_ts_us = max(now, self._last_ts_us + 1)
        return _us_to_ts(self._last_ts_us)

    def _require_channel(self, channel: str) -> _Channel:
        if channel not in self._channels:
            raise KeyError(f"unknown channel {channel!r}: add_channel() or add_im() it first")
        return self._channels[channel]

    def _channel_type(self, channel: str) -> Literal["channel", "group", "im", "mpim"]:
        ch = self._channels[channel]
        if ch.is_im:
            return "im"
        return "group" if ch.is_private else "channel"

    def _file_ref(self, f: JSONDict | str) -> JSONDict:
        if isinstance(f, str):
            return copy.deepcopy(self._files[f])
        return copy.deepcopy(f)

    def _thread_root(self, channel: str, ts: str) -> str | None:
        msg = self._messages.get(channel, {}).get(ts)
        if msg is None:
            return None
        return msg.thread_ts or msg.ts

    def _replies(self, channel: str, root: str) -> list[_Message]:
        return sorted(
            (
                m
                for m in self._messages[channel].values()
                if m.thread_ts == root and m.ts != root and not m.deleted
            ),
            key=lambda m: _ts_to_us(m.ts),
        )

    @staticmethod
    def _is_top_level(msg: _Message) -> bool:
        return msg.thread_ts is None or msg.thread_ts == msg.ts or msg.reply_broadcast

    def _view(self, msg: _Message) -> ThreadMessage:
        return ThreadMessage(
            ts=msg.ts,
            user=msg.user,
            text=msg.text,
            is_bot=msg.bot_id is not None,
            streamed=msg.stream is not None,
            streaming=msg.stream == "streaming",
            thread_ts=msg.thread_ts,
            blocks=copy.deepcopy(msg.blocks),
            files=copy.deepcopy(msg.files),
            edited=msg.edited is not None,
            reactions={k: list(v) for k, v in msg.reactions.items()},
            subtype=msg.subtype,
            chunks=copy.deepcopy(msg.chunks),
        )

    def _bot_profile(self) -> JSONDict:
        icon = "https://a.slack-edge.com/80588/img/plugins/app/bot_{}.png"
        return {
            "id": self.bot_id,
            "deleted": False,
            "name": self.bot_name,
            "updated": 1_700_000_000,
            "app_id": self.api_app_id,
            "icons": {k: icon.format(k[-2:]) for k in ("image_36", "image_48", "image_72")},
            "team_id": self.team_id,
        }

    def _wire(self, msg: _Message, *, thread_meta: bool = True) -> JSONDict:
        """The message object Slack returns (objs_message shape)."""
        out: JSONDict = {"type": "message"}
        if msg.subtype:
            out["subtype"] = msg.subtype
        out["text"] = msg.text
        if msg.user:
            out["user"] = msg.user
        out["ts"] = msg.ts
        if msg.client_msg_id:
            out["client_msg_id"] = msg.client_msg_id
        if msg.bot_id:
            out["bot_id"] = msg.bot_id
            out["bot_profile"] = self._bot_profile()
            if msg.username:
                out["username"] = msg.username
            if msg.icon_emoji:
                out["icons"] = {"emoji": msg.icon_emoji}
        out["team"] = self.team_id
        if msg.blocks:
            out["blocks"] = copy.deepcopy(msg.blocks)
        if msg.attachments:
            out["attachments"] = copy.deepcopy(msg.attachments)
        if msg.files:
            out["files"] = copy.deepcopy(msg.files)
            out["upload"] = False
            out["display_as_bot"] = False
        if msg.reactions:
            out["reactions"] = [
                {"name": name, "users": list(users), "count": len(users)}
                for name, users in msg.reactions.items()
            ]
        if msg.thread_ts and msg.thread_ts != msg.ts:
            out["thread_ts"] = msg.thread_ts
            parent = self._messages[msg.channel].get(msg.thread_ts)
            if parent is not None and parent.user:
                out["parent_user_id"] = parent.user
        elif thread_meta:
            replies = self._replies(msg.channel, msg.ts)
            if replies:
                users = list(dict.fromkeys(r.user for r in replies if r.user))
                out["thread_ts"] = msg.ts
                out["reply_count"] = len(replies)
                out["reply_users_count"] = len(users)
                out["latest_reply"] = replies[-1].ts
                if users:
                    out["reply_users"] = users[:5]
                out["subscribed"] = False
        return out

    def _resolve_channel(self, raw: object, *, ids_only: bool = False) -> _Channel:
        """``channel`` may be an ID, ``#name``/``name``, or a user ID (the app's DM with them);
        the conversations.* readers take IDs only."""
        value = str(raw or "").strip()
        if not value:
            raise _ApiError("channel_not_found")
        if value in self._channels:
            return self._channels[value]
        if ids_only:
            raise _ApiError("channel_not_found")
        name = value.lstrip("#")
        for channel in self._channels.values():
            if not channel.is_im and channel.name == name:
                return channel
        if value in self._users and value != self.bot_user_id:
            return self._channels[self.add_im(value)]
        raise _ApiError("channel_not_found")

    def _readable(self, channel: _Channel) -> None:
        if self.bot_user_id in channel.members:
            return
        if channel.is_private or channel.is_im:
            raise _ApiError("channel_not_found")
        raise _ApiError("not_in_channel")

    def _writable(self, channel: _Channel) -> None:
        self._readable(channel)
        if channel.is_archived:
            raise _ApiError("is_archived")

    def _get_message(self, channel: _Channel, ts: object) -> _Message:
        msg = self._messages[channel.id].get(str(ts or ""))
        if msg is None or msg.deleted:
            raise _ApiError("message_not_found")
        return msg

    def _content(self, args: JSONDict) -> tuple[str, list[JSONDict], list[JSONDict], bool]:
        """Validate text/blocks/attachments/markdown_text; returns text, blocks, attachments and
        whether any content was given."""
        text = args.get("text")
        text = "" if text is None else str(text)
        markdown_text = args.get("markdown_text")
        blocks = _json_arg(args.get("blocks"), "invalid_blocks_format")
        attachments = _json_arg(args.get("attachments"), "invalid_attachments")
        if blocks is not None and not isinstance(blocks, list):
            raise _ApiError("invalid_blocks_format")
        if attachments is not None and not isinstance(attachments, list):
            raise _ApiError("invalid_attachments")
        blocks = list(blocks or [])
        attachments = list(attachments or [])
        if markdown_text is not None and str(markdown_text) != "":
            if text or blocks:
                raise _ApiError(
                    "invalid_arguments",
                    messages=["[ERROR] markdown_text cannot be used with text or blocks"],
                )
            md = str(markdown_text)
            if len(md) > MAX_MARKDOWN_TEXT_CHARS:
                raise _ApiError("msg_too_long")
            return md, [{"type": "markdown", "text": md}], attachments, True
        if len(text) > MAX_TEXT_CHARS:
            raise _ApiError("msg_too_long")
        if len(blocks) > MAX_BLOCKS:
            raise _ApiError(
                "invalid_blocks",
                messages=[
                    f"[ERROR] no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
                ],
            )
        for i, block in enumerate(blocks):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise _ApiError(
                    "invalid_blocks",
                    messages=[f"[ERROR] missing required field: type [json-pointer:/blocks/{i}]"],
                )
        check_blocks(blocks)
        for i, attachment in enumerate(attachments):
            if not isinstance(attachment, dict):
                raise _ApiError("invalid_attachments")
            attachment.setdefault("id", i + 1)
        present = bool(text) or bool(blocks) or bool(attachments)
        return text, blocks, attachments, present

    def _clear_status(self, channel: str, thread_ts: str | None) -> None:
        if thread_ts and self._thread_status.get((channel, thread_ts)):
            self._thread_status[(channel, thread_ts)] = ""

    # ------------------------------------------------------------------ Web API methods

    async def _auth_test(self, args: JSONDict) -> JSONDict:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _apps_connections_open(self, args: JSONDict) -> JSONDict:
        # A Socket Mode WebSocket URL; this fake serves no WebSocket behind it.
        return {"url": f"wss://wss-primary.slack.com/link/?ticket={uuid.uuid4()}&app_id=A0"}

    async def _chat_post_message(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel"))
        self._writable(channel)
        text, blocks, attachments, present = self._content(args)
        if not present:
            raise _ApiError("no_text")
        thread_ts = args.get("thread_ts")
        root: str | None = None
        if thread_ts:
            root = self._thread_root(channel.id, str(thread_ts))
            if root is None:
                raise _ApiError("thread_not_found")
        metadata = _json_arg(args.get("metadata"), "invalid_metadata_format")
        msg = _Message(
            channel=channel.id,
            ts=self._next_ts(),
            text=text,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=root,
            blocks=blocks,
            attachments=attachments,
            reply_broadcast=bool(root) and _as_bool(args.get("reply_broadcast")),
            username=str(args["username"]) if args.get("username") else None,
            icon_emoji=str(args["icon_emoji"]) if args.get("icon_emoji") else None,
            metadata=metadata if isinstance(metadata, dict) else None,
            options={
                k: args[k]
                for k in ("mrkdwn", "unfurl_links", "unfurl_media", "parse", "link_names")
                if k in args
            },
        )
        if msg.reply_broadcast:
            msg.subtype = "thread_broadcast"
        self._messages[channel.id][msg.ts] = msg
        self._clear_status(channel.id, root)
        return {"channel": channel.id, "ts": msg.ts, "message": self._wire(msg)}

    async def _chat_update(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel"))
        self._readable(channel)
        msg = self._get_message(channel, args.get("ts"))
        if msg.bot_id != self.bot_id:
            raise _ApiError("cant_update_message")
        text, blocks, attachments, present = self._content(args)
        if not present and "blocks" not in args and "attachments" not in args:
            raise _ApiError("no_text")
        msg.text = text
        if "blocks" in args or "markdown_text" in args:
            msg.blocks = blocks
        if "attachments" in args:
            msg.attachments = attachments
        msg.edited = {"user": self.bot_user_id, "ts": self._next_ts()}
        wire = self._wire(msg, thread_meta=False)
        wire["edited"] = dict(msg.edited)
        return {"channel": channel.id, "ts": msg.ts, "text": msg.text, "message": wire}

    async def _chat_delete(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel"))
        self._readable(channel)
        msg = self._get_message(channel, args.get("ts"))
        if msg.bot_id != self.bot_id:
            raise _ApiError("cant_delete_message")
        if (msg.thread_ts in (None, msg.ts)) and self._replies(channel.id, msg.ts):
            # A parent with replies becomes a tombstone; the thread stays.
            msg.subtype = "tombstone"
            msg.text = "This message was deleted."
            msg.blocks, msg.attachments, msg.files = [], [], []
            msg.user, msg.bot_id = "USLACKBOT", None
        else:
            msg.deleted = True
        return {"channel": channel.id, "ts": msg.ts}

    async def _chat_post_ephemeral(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel"))
        self._writable(channel)
        user = str(args.get("user") or "")
        if user not in channel.members:
            # Also what a missing or unknown ``user`` gets: the spec's enum has no user_not_found.
            raise _ApiError("user_not_in_channel")
        text, blocks, _attachments, present = self._content(args)
        if not present:
            raise _ApiError("no_text")
        ts = self._next_ts()
        thread_ts = args.get("thread_ts")
        self._ephemerals.append(
            Ephemeral(
                channel=channel.id,
                user=user,
                text=text,
                blocks=blocks,
                thread_ts=str(thread_ts) if thread_ts else None,
                message_ts=ts,
            )
        )
        return {"message_ts": ts}

    # ---- streaming (docs.slack.dev chat.startStream / appendStream / stopStream)

    def _stream_content(self, args: JSONDict) -> tuple[str, list[JSONDict]]:
        """Text to append and the chunks, from ``markdown_text`` and/or ``chunks``."""
        appended = ""
        markdown_text = args.get("markdown_text")
        if markdown_text is not None:
            appended += str(markdown_text)
            if len(str(markdown_text)) > MAX_MARKDOWN_TEXT_CHARS:
                raise _ApiError("msg_too_long")
        chunks = _json_arg(args.get("chunks"), "invalid_chunks")
        if chunks is None:
            chunks = []
        if not isinstance(chunks, list):
            raise _ApiError("invalid_chunks")
        for chunk in chunks:
            if not isinstance(chunk, dict) or chunk.get("type") not in _CHUNK_TYPES:
                raise _ApiError("invalid_chunks")
            if chunk["type"] == "markdown_text":
                piece = chunk.get("text")
                if not isinstance(piece, str):
                    raise _ApiError("invalid_chunks")
                if len(piece) > MAX_MARKDOWN_TEXT_CHARS:
                    raise _ApiError("msg_too_long")
                appended += piece
            if chunk["type"] == "blocks":
                inner = chunk.get("blocks")
                if not isinstance(inner, list) or len(inner) > MAX_BLOCKS:
                    raise _ApiError("invalid_blocks")
        recorded = [copy.deepcopy(c) for c in chunks]
        if markdown_text is not None:
            recorded.insert(0, {"type": "markdown_text", "text": str(markdown_text)})
        return appended, recorded

    def _stream_message(self, args: JSONDict) -> tuple[_Channel, _Message]:
        channel = self._resolve_channel(args.get("channel"))
        self._writable(channel)
        msg = self._get_message(channel, args.get("ts"))
        if msg.stream is None or msg.bot_id != self.bot_id:
            raise _ApiError("message_not_in_streaming_state")
        if msg.stream != "streaming":
            raise _ApiError("message_not_in_streaming_state")
        return channel, msg

    async def _chat_start_stream(self, args: JSONDict) -> JSONDict:
        if self._streaming_refusal is not None:
            error, times = self._streaming_refusal
            if times is not None:
                self._streaming_refusal = (error, times - 1) if times > 1 else None
            raise _ApiError(error)
        channel = self._resolve_channel(args.get("channel"))
        self._writable(channel)
        if not channel.is_im:
            # "Required when streaming to channels" (recipient_user_id / recipient_team_id).
            if not args.get("recipient_user_id"):
                raise _ApiError("missing_recipient_user_id")
            if not args.get("recipient_team_id"):
                raise _ApiError("missing_recipient_team_id")
        root: str | None = None
        if args.get("thread_ts"):
            root = self._thread_root(channel.id, str(args["thread_ts"]))
            if root is None:
                raise _ApiError("thread_not_found")
        text, chunks = self._stream_content(args)
        msg = _Message(
            channel=channel.id,
            ts=self._next_ts(),
            text=text,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=root,
            stream="streaming",
            chunks=chunks,
            username=str(args["username"]) if args.get("username") else None,
            icon_emoji=str(args["icon_emoji"]) if args.get("icon_emoji") else None,
            options={
                k: args[k]
                for k in ("recipient_user_id", "recipient_team_id", "task_display_mode")
                if k in args
            },
        )
        self._messages[channel.id][msg.ts] = msg
        self._clear_status(channel.id, root)
        return {"channel": channel.id, "ts": msg.ts}

    async def _chat_append_stream(self, args: JSONDict) -> JSONDict:
        channel, msg = self._stream_message(args)
        if self._stream_break is not None:
            allowed, error = self._stream_break
            if self._appends_since_break >= allowed:
                if error == "message_not_in_streaming_state":
                    self.expire_streams()
                raise _ApiError(error)
        text, chunks = self._stream_content(args)
        if not chunks:
            raise _ApiError("no_text")
        msg.text += text
        msg.chunks.extend(chunks)
        self._appends_since_break += 1
        return {"channel": channel.id, "ts": msg.ts}

    async def _chat_stop_stream(self, args: JSONDict) -> JSONDict:
        channel, msg = self._stream_message(args)
        text, chunks = self._stream_content(args)
        blocks = _json_arg(args.get("blocks"), "invalid_blocks_format")
        if blocks is not None and (not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS):
            raise _ApiError("invalid_blocks")
        if blocks:
            check_blocks(blocks)
        metadata = _json_arg(args.get("metadata"), "invalid_metadata_format")
        msg.text += text
        msg.chunks.extend(chunks)
        if blocks:
            # "rendered at the bottom of the finalized message"
            msg.blocks = [*msg.blocks, *blocks]
        if isinstance(metadata, dict):
            msg.metadata = metadata
        msg.stream = "stopped"
        return {"channel": channel.id, "ts": msg.ts, "message": self._wire(msg)}

    async def _assistant_set_status(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel_id"))
        self._writable(channel)
        thread_ts = str(args.get("thread_ts") or "")
        root = self._thread_root(channel.id, thread_ts) if thread_ts else None
        if root is None:
            raise _ApiError("invalid_thread_ts")
        if "status" not in args:
            raise _ApiError(
                "invalid_arguments", messages=["[ERROR] missing required field: status"]
            )
        loading = _json_arg(args.get("loading_messages"), "invalid_arguments")
        if loading is None:
            loading = []
        if not isinstance(loading, list) or len(loading) > MAX_LOADING_MESSAGES:
            raise _ApiError(
                "invalid_arguments",
                messages=[
                    f"[ERROR] no more than {MAX_LOADING_MESSAGES} items allowed "
                    "[json-pointer:/loading_messages]"
                ],
            )
        status = str(args.get("status") or "")
        self._thread_status[(channel.id, root)] = status
        self.statuses.append(
            StatusUpdate(channel.id, root, status, [str(x) for x in loading], time.monotonic())
        )
        return {}

    # ---- agent surface and views (docs.slack.dev method pages; views.* also in the spec)

    def _agent_thread(self, args: JSONDict) -> tuple[str, str]:
        channel = self._resolve_channel(args.get("channel_id"))
        thread_ts = str(args.get("thread_ts") or "")
        root = self._thread_root(channel.id, thread_ts) if thread_ts else None
        if root is None:
            raise _ApiError("invalid_thread_ts")
        return channel.id, root

    async def _assistant_set_prompts(self, args: JSONDict) -> JSONDict:
        where = self._agent_thread(args)
        prompts = _json_arg(args.get("prompts"), "invalid_arguments")
        if not isinstance(prompts, list) or not prompts or len(prompts) > MAX_SUGGESTED_PROMPTS:
            raise _ApiError(
                "invalid_arguments",
                messages=[f"[ERROR] 1 to {MAX_SUGGESTED_PROMPTS} prompts [json-pointer:/prompts]"],
            )
        for i, prompt in enumerate(prompts):
            if not (
                isinstance(prompt, dict)
                and isinstance(prompt.get("title"), str)
                and isinstance(prompt.get("message"), str)
                and prompt["title"]
                and prompt["message"]
            ):
                raise _ApiError(
                    "invalid_arguments",
                    messages=[f"[ERROR] title and message required [json-pointer:/prompts/{i}]"],
                )
        self.prompts[where] = [dict(p) for p in prompts]
        return {}

    async def _assistant_set_title(self, args: JSONDict) -> JSONDict:
        where = self._agent_thread(args)
        title = str(args.get("title") or "")
        if not title:
            raise _ApiError("invalid_arguments", messages=["[ERROR] missing required field: title"])
        self.titles[where] = title
        return {}

    async def _agents_set_status(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel_id"))
        status = str(args.get("status") or "")
        if status not in AGENT_SESSION_STATUSES:
            raise _ApiError("invalid_arguments", messages=[f"[ERROR] bad status {status!r}"])
        self.sessions.append((channel.id, str(args.get("thread_ts") or ""), status))
        return {}

    def _checked_view(self, args: JSONDict, kinds: set[str]) -> JSONDict:
        view = _json_arg(args.get("view"), "invalid_arguments")
        if not isinstance(view, dict) or view.get("type") not in kinds:
            raise _ApiError("invalid_arguments", messages=["[ERROR] view.type"])
        title = view.get("title")
        if view["type"] == "modal" and not (
            isinstance(title, dict) and title.get("type") == "plain_text" and title.get("text")
        ):
            raise _ApiError("invalid_arguments", messages=["[ERROR] view.title is required"])
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or len(blocks) > MAX_VIEW_BLOCKS:
            raise _ApiError("invalid_arguments", messages=["[ERROR] view.blocks"])
        check_blocks(blocks, surface="view")
        if len(str(view.get("private_metadata") or "")) > 3000:
            raise _ApiError("invalid_arguments", messages=["[ERROR] private_metadata too long"])
        return view

    async def _views_open(self, args: JSONDict) -> JSONDict:
        trigger = str(args.get("trigger_id") or "")
        if not re.fullmatch(r"\d+\.\d+\.[0-9a-f]+", trigger):
            raise _ApiError("invalid_trigger_id")
        if trigger in self._triggers_used:
            raise _ApiError("expired_trigger_id")
        view = self._checked_view(args, {"modal"})
        self._triggers_used.add(trigger)
        opened = {**copy.deepcopy(view), "id": f"V{self._rng.randrange(10**9, 10**10)}"}
        self.views.append(opened)
        return {"view": opened}

    async def _views_publish(self, args: JSONDict) -> JSONDict:
        user = str(args.get("user_id") or "")
        if user not in self._users:
            raise _ApiError("user_not_found")
        view = self._checked_view(args, {"home"})
        self.homes[user] = copy.deepcopy(view)
        return {"view": {**view, "id": f"V{self._rng.randrange(10**9, 10**10)}"}}

    # ---- reading

    @staticmethod
    def _range(args: JSONDict) -> tuple[int, int, bool]:
        try:
            oldest = _ts_to_us(str(args["oldest"])) if args.get("oldest") not in (None, "") else 0
        except ValueError as exc:
            raise _ApiError("invalid_ts_oldest") from exc
        try:
            latest = (
                _ts_to_us(str(args["latest"])) if args.get("latest") not in (None, "") else 2**62
            )
        except ValueError as exc:
            raise _ApiError("invalid_ts_latest") from exc
        return oldest, latest, _as_bool(args.get("inclusive"))

    @staticmethod
    def _in_range(ts: str, oldest: int, latest: int, inclusive: bool) -> bool:
        us = _ts_to_us(ts)
        if inclusive:
            return oldest <= us <= latest
        return oldest < us < latest

    def _cap(self, cap: int) -> int:
        return min(cap, self.page_cap) if self.page_cap else cap

    async def _conversations_history(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel"), ids_only=True)
        self._readable(channel)
        oldest, latest, inclusive = self._range(args)
        cap = self._cap(MAX_HISTORY_LIMIT)
        limit = _parse_limit(args.get("limit"), min(DEFAULT_HISTORY_LIMIT, cap), cap)
        items = sorted(
            (
                m
                for m in self._messages[channel.id].values()
                if self._is_top_level(m)
                and not m.deleted
                and self._in_range(m.ts, oldest, latest, inclusive)
            ),
            key=lambda m: _ts_to_us(m.ts),
            reverse=True,
        )
        start = 0
        if args.get("cursor"):
            cursor_us = _cursor_us(str(args["cursor"]))
            start = next(
                (i for i, m in enumerate(items) if _ts_to_us(m.ts) <= cursor_us), len(items)
            )
        page = items[start : start + limit]
        has_more = start + limit < len(items)
        body: JSONDict = {
            "messages": [self._wire(m) for m in page],
            "has_more": has_more,
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
        }
        if has_more:
            next_ts = items[start + limit].ts.replace(".", "")
            body["response_metadata"] = {"next_cursor": _encode_cursor("next_ts", next_ts)}
        return body

    async def _conversations_replies(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel"), ids_only=True)
        self._readable(channel)
        ts = str(args.get("ts") or "")
        root = self._thread_root(channel.id, ts) if ts else None
        if root is None or self._messages[channel.id][root].deleted:
            raise _ApiError("thread_not_found")
        parent = self._messages[channel.id][root]
        oldest, latest, inclusive = self._range(args)
        cap = self._cap(MAX_REPLIES_LIMIT)
        limit = _parse_limit(args.get("limit"), min(DEFAULT_REPLIES_LIMIT, cap), cap)
        replies = [
            r
            for r in self._replies(channel.id, root)
            if self._in_range(r.ts, oldest, latest, inclusive)
        ]
        sequence: list[_Message] = [parent, *replies]
        start = 0
        if args.get("cursor"):
            cursor_us = _cursor_us(str(args["cursor"]))
            start = next(
                (i for i, m in enumerate(sequence) if i > 0 and _ts_to_us(m.ts) >= cursor_us),
                len(sequence),
            )
        page = sequence[start : start + limit]
        if start > 0 and self.replies_parent_on_every_page:
            page = [parent, *page]
        has_more = start + limit < len(sequence)
        body: JSONDict = {"messages": [self._wire(m) for m in page], "has_more": has_more}
        if has_more:
            next_ts = sequence[start + limit].ts.replace(".", "")
            body["response_metadata"] = {"next_cursor": _encode_cursor("next_ts", next_ts)}
        return body

    def _conversation_object(self, channel: _Channel, *, num_members: bool) -> JSONDict:
        if channel.is_im:
            return {
                "id": channel.id,
                "created": channel.created,
                "is_archived": False,
                "is_im": True,
                "is_org_shared": False,
                "user": channel.im_user or "",
                "is_user_deleted": False,
                "priority": 0,
            }
        obj: JSONDict = {
            "id": channel.id,
            "name": channel.name,
            "is_channel": not channel.is_private,
            "is_group": channel.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": channel.is_private,
            "created": channel.created,
            "is_archived": channel.is_archived,
            "is_general": channel.name == "general",
            "unlinked": 0,
            "name_normalized": channel.name,
            "is_shared": False,
            "is_org_shared": False,
            "is_ext_shared": False,
            "is_pending_ext_shared": False,
            "pending_shared": [],
            "parent_conversation": None,
            "creator": channel.creator,
            "is_member": self.bot_user_id in channel.members,
            "topic": {"value": channel.topic, "creator": "", "last_set": 0},
            "purpose": {"value": channel.purpose, "creator": "", "last_set": 0},
            "previous_names": [],
        }
        if num_members:
            obj["num_members"] = len(channel.members)
        return obj

    async def _conversations_info(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel"), ids_only=True)
        if channel.is_private and self.bot_user_id not in channel.members:
            raise _ApiError("channel_not_found")
        return {
            "channel": self._conversation_object(
                channel, num_members=_as_bool(args.get("include_num_members"))
            )
        }

    async def _conversations_members(self, args: JSONDict) -> JSONDict:
        channel = self._resolve_channel(args.get("channel"), ids_only=True)
        if channel.is_private and self.bot_user_id not in channel.members:
            raise _ApiError("channel_not_found")
        limit = _parse_limit(args.get("limit"), DEFAULT_MEMBERS_LIMIT, 1000)
        members = channel.members
        start = 0
        if args.get("cursor"):
            user = _decode_cursor("user_id", str(args["cursor"]))
            if user not in members:
                raise _ApiError("invalid_cursor")
            start = members.index(user)
        page = members[start : start + limit]
        next_cursor = ""
        if start + limit < len(members):
            next_cursor = _encode_cursor("user_id", members[start + limit])
        return {"members": list(page), "response_metadata": {"next_cursor": next_cursor}}

    async def _users_info(self, args: JSONDict) -> JSONDict:
        user = self._users.get(str(args.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        out = copy.deepcopy(user)
        if _as_bool(args.get("include_locale")):
            out["locale"] = "en-US"
        return {"user": out}

    async def _reactions_add(self, args: JSONDict) -> JSONDict:
        if not args.get("channel") or not args.get("timestamp"):
            raise _ApiError("no_item_specified")
        channel = self._resolve_channel(args.get("channel"))
        self._readable(channel)
        name = str(args.get("name") or "").strip(":")
        if not name or not re.fullmatch(r"[a-z0-9_+\-']+(::skin-tone-[2-6])?", name):
            raise _ApiError("invalid_name")
        msg = self._get_message(channel, args.get("timestamp"))
        users = msg.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise _ApiError("already_reacted")
        users.append(self.bot_user_id)
        return {}
