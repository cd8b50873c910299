"""In-process fake of Discord's REST API v10 and gateway, for tests.

The real ``discord.py`` client talks to this fake over 127.0.0.1: point
``discord.http.Route.BASE`` at :attr:`FakeDiscord.api_url` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` at :attr:`FakeDiscord.gateway_url`.

Behaviour follows Discord's public OpenAPI spec (``tests/specs/discord-openapi.json``:
routes, request bodies, response shapes, error shapes), Discord's documentation (rate-limit
headers, gateway opcodes and close codes, interaction deadlines, error codes) and what the
installed discord.py reads (``http.py``, ``gateway.py``, ``state.py``, ``types/``).

Example::

    async with FakeDiscord(token="bot-token") as dc:
        guild = dc.add_guild("Team")
        general = dc.add_channel(guild, "general")
        alice = dc.add_member(guild, "alice")
        ...  # start a discord.Client against dc.api_url / dc.gateway_url
        await dc.dispatch("MESSAGE_CREATE", dc.message(general, "hello", alice))
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import enum
import hashlib
import importlib
import itertools
import json
import math
import os
import re
import secrets
import socket
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    from jsonschema.protocols import Validator

__all__ = [
    "API_PREFIX",
    "API_VERSION",
    "CallRecord",
    "ChannelType",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "GatewayConnectionRecord",
    "Intent",
    "InteractionState",
    "MessageView",
    "Overwrite",
    "Perm",
    "SpecError",
    "SpecValidator",
    "WriteRecord",
    "default_spec_path",
    "get_spec_validator",
    "snowflake_time",
]

JSON = dict[str, Any]
T = TypeVar("T")

API_VERSION = 10
API_PREFIX = f"/api/v{API_VERSION}"
DISCORD_EPOCH_MS = 1_420_070_400_000
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
MAX_CONTENT_LENGTH = 2000


# --------------------------------------------------------------------------- constants


class Perm(enum.IntFlag):
    """Permission bits (Discord docs: Permissions > Bitwise Permission Flags)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    PRIORITY_SPEAKER = 1 << 8
    STREAM = 1 << 9
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    MANAGE_NICKNAMES = 1 << 27
    MANAGE_ROLES = 1 << 28
    MANAGE_WEBHOOKS = 1 << 29
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    SEND_MESSAGES_IN_THREADS = 1 << 38
    MODERATE_MEMBERS = 1 << 40


ALL_PERMISSIONS = (1 << 51) - 1
#: What a new server's @everyone role can do in text channels (a reasonable default).
DEFAULT_EVERYONE_PERMISSIONS = int(
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.CREATE_PRIVATE_THREADS
    | Perm.SEND_MESSAGES_IN_THREADS
    | Perm.CREATE_INSTANT_INVITE
    | Perm.CHANGE_NICKNAME
    | Perm.CONNECT
    | Perm.SPEAK
)
DM_PERMISSIONS = int(
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.USE_APPLICATION_COMMANDS
)


class Intent(enum.IntFlag):
    """Gateway intents (Discord docs: Gateway > Gateway Intents)."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MODERATION = 1 << 2
    GUILD_EXPRESSIONS = 1 << 3
    GUILD_INTEGRATIONS = 1 << 4
    GUILD_WEBHOOKS = 1 << 5
    GUILD_INVITES = 1 << 6
    GUILD_VOICE_STATES = 1 << 7
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15
    GUILD_SCHEDULED_EVENTS = 1 << 16
    AUTO_MODERATION_CONFIGURATION = 1 << 20
    AUTO_MODERATION_EXECUTION = 1 << 21
    GUILD_MESSAGE_POLLS = 1 << 24
    DIRECT_MESSAGE_POLLS = 1 << 25


PRIVILEGED_INTENTS = int(Intent.GUILD_MEMBERS | Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT)
ALL_INTENTS = (1 << 26) - 1


class ChannelType(enum.IntEnum):
    GUILD_TEXT = 0
    DM = 1
    GUILD_VOICE = 2
    GROUP_DM = 3
    GUILD_CATEGORY = 4
    GUILD_ANNOUNCEMENT = 5
    ANNOUNCEMENT_THREAD = 10
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12
    GUILD_STAGE_VOICE = 13
    GUILD_FORUM = 15


THREAD_TYPES = frozenset({10, 11, 12})
TEXT_LIKE_TYPES = frozenset({0, 1, 2, 3, 5, 10, 11, 12, 13})

# Message types and flags (Discord docs: Message resource)
MT_DEFAULT = 0
MT_REPLY = 19
MT_CHAT_INPUT_COMMAND = 20
MF_HAS_THREAD = 1 << 5
MF_EPHEMERAL = 1 << 6
MF_LOADING = 1 << 7
MF_SUPPRESS_EMBEDS = 1 << 2
MF_SUPPRESS_NOTIFICATIONS = 1 << 12
MF_IS_COMPONENTS_V2 = 1 << 15

# Interaction types and callback types (Discord docs: Receiving and Responding)
IT_PING = 1
IT_APPLICATION_COMMAND = 2
IT_MESSAGE_COMPONENT = 3
IT_AUTOCOMPLETE = 4
IT_MODAL_SUBMIT = 5
CB_PONG = 1
CB_CHANNEL_MESSAGE = 4
CB_DEFERRED_CHANNEL_MESSAGE = 5
CB_DEFERRED_UPDATE_MESSAGE = 6
CB_UPDATE_MESSAGE = 7
CB_AUTOCOMPLETE_RESULT = 8
CB_MODAL = 9

# Gateway opcodes (Discord docs: Opcodes and Status Codes)
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

# Application flags reported in READY.application.flags
APP_FLAG_GATEWAY_PRESENCE = 1 << 12
APP_FLAG_GATEWAY_GUILD_MEMBERS = 1 << 14
APP_FLAG_GATEWAY_MESSAGE_CONTENT = 1 << 18

# Which intent an event needs: (guild intent, direct-message intent)
_EVENT_INTENTS: dict[str, tuple[int, int]] = {
    "GUILD_CREATE": (Intent.GUILDS, 0),
    "GUILD_UPDATE": (Intent.GUILDS, 0),
    "GUILD_DELETE": (Intent.GUILDS, 0),
    "GUILD_ROLE_CREATE": (Intent.GUILDS, 0),
    "GUILD_ROLE_UPDATE": (Intent.GUILDS, 0),
    "GUILD_ROLE_DELETE": (Intent.GUILDS, 0),
    "CHANNEL_CREATE": (Intent.GUILDS, 0),
    "CHANNEL_UPDATE": (Intent.GUILDS, 0),
    "CHANNEL_DELETE": (Intent.GUILDS, 0),
    "THREAD_CREATE": (Intent.GUILDS, 0),
    "THREAD_UPDATE": (Intent.GUILDS, 0),
    "THREAD_DELETE": (Intent.GUILDS, 0),
    "THREAD_LIST_SYNC": (Intent.GUILDS, 0),
    "THREAD_MEMBER_UPDATE": (Intent.GUILDS, 0),
    "GUILD_MEMBER_ADD": (Intent.GUILD_MEMBERS, 0),
    "GUILD_MEMBER_UPDATE": (Intent.GUILD_MEMBERS, 0),
    "GUILD_MEMBER_REMOVE": (Intent.GUILD_MEMBERS, 0),
    "PRESENCE_UPDATE": (Intent.GUILD_PRESENCES, 0),
    "MESSAGE_CREATE": (Intent.GUILD_MESSAGES, Intent.DIRECT_MESSAGES),
    "MESSAGE_UPDATE": (Intent.GUILD_MESSAGES, Intent.DIRECT_MESSAGES),
    "MESSAGE_DELETE": (Intent.GUILD_MESSAGES, Intent.DIRECT_MESSAGES),
    "MESSAGE_DELETE_BULK": (Intent.GUILD_MESSAGES, 0),
    "MESSAGE_REACTION_ADD": (Intent.GUILD_MESSAGE_REACTIONS, Intent.DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE": (Intent.GUILD_MESSAGE_REACTIONS, Intent.DIRECT_MESSAGE_REACTIONS),
    "TYPING_START": (Intent.GUILD_MESSAGE_TYPING, Intent.DIRECT_MESSAGE_TYPING),
}
_CONTENT_EVENTS = frozenset({"MESSAGE_CREATE", "MESSAGE_UPDATE"})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def snowflake_time(snowflake: int) -> float:
    """Unix time (seconds) encoded in a snowflake."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000.0


class _Snowflakes:
    """Discord-style ids: ms since 2015 << 22 | worker << 17 | process << 12 | increment."""

    def __init__(self, worker: int = 1, process: int = 0) -> None:
        self._worker = worker & 0x1F
        self._process = process & 0x1F
        self._increment = itertools.count()
        self._last_now = 0
        self._issued: set[int] = set()

    def make(self, at: float) -> int:
        ms = int(at * 1000) - DISCORD_EPOCH_MS
        value = (
            (ms << 22)
            | (self._worker << 17)
            | (self._process << 12)
            | (next(self._increment) & 0xFFF)
        )
        while value in self._issued:
            value += 1
        self._issued.add(value)
        return value

    def now(self, at: float) -> int:
        value = self.make(at)
        if value <= self._last_now:
            value = self._last_now + 1
            self._issued.add(value)
        self._last_now = value
        return value


# --------------------------------------------------------------------------- spec validation


def default_spec_path() -> Path:
    """``$DISCORD_OPENAPI_SPEC`` or ``tests/specs/discord-openapi.json``."""
    env = os.environ.get("DISCORD_OPENAPI_SPEC")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "specs" / "discord-openapi.json"


@dataclass(frozen=True)
class SpecError:
    """One mismatch between a body and the spec."""

    kind: Literal["request", "response"]
    method: str
    route: str
    location: str
    message: str
    keyword: str
    status: int | None = None


_SPEC_URI = "urn:discord-openapi"


def _escape_pointer(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


class SpecValidator:
    """Checks request and response bodies against Discord's OpenAPI document.

    Requests are checked against a copy of the spec relaxed where Discord is known
    (through discord.py, which relies on it) to accept more than the spec says: snowflakes
    may be JSON integers as well as strings. Responses are checked against the spec as
    written, except where it contradicts Discord's docs: ``errors[..]._errors[].code`` may
    be a string (docs: ``"BASE_TYPE_MAX_LENGTH"``; spec: integer) and a 429 body needs no
    ``code`` (docs: ``code?``; spec: required).
    """

    def __init__(self, spec: JSON) -> None:
        from openapi_schema_validator import OAS31Validator, oas31_format_checker
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.spec = spec
        request_spec = copy.deepcopy(spec)
        schemas = request_spec["components"]["schemas"]
        snowflake = schemas["SnowflakeType"]
        schemas["SnowflakeType"] = {
            "oneOf": [snowflake, {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1}]
        }
        response_spec = copy.deepcopy(spec)
        # Discord's rate-limit docs show 429 bodies without "code" ("code?": only for some)
        limited = response_spec["components"]["schemas"]["RatelimitedResponse"]
        limited["allOf"][0] = {
            "type": "object",
            "required": ["message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        }
        inner = response_spec["components"]["schemas"]["InnerErrors"]
        inner["properties"]["_errors"]["items"] = {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": ["integer", "string"]}, "message": {"type": "string"}},
        }

        def registry(doc: JSON) -> Any:
            resource = Resource.from_contents(doc, default_specification=DRAFT202012)
            return Registry().with_resource(_SPEC_URI, resource)

        self._registries = {"request": registry(request_spec), "response": registry(response_spec)}
        self._validator_cls = OAS31Validator
        self._format_checker = oas31_format_checker
        self._validators: dict[tuple[str, str], Validator] = {}
        self._templates: list[tuple[re.Pattern[str], str]] = []
        for template in spec["paths"]:
            regex = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            self._templates.append((re.compile(regex), template))
        # literal segments beat parameters ("/users/@me" before "/users/{user_id}")
        self._templates.sort(key=lambda item: (item[1].count("{"), -len(item[1])))

    def match_route(self, path: str) -> str | None:
        """Spec path template for a concrete path relative to the API base."""
        for regex, template in self._templates:
            if regex.match(path):
                return template
        return None

    def operation(self, method: str, route: str) -> JSON | None:
        op = self.spec["paths"].get(route, {}).get(method.lower())
        return op if isinstance(op, dict) else None

    def _validator(self, kind: str, pointer: str) -> Validator:
        key = (kind, pointer)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validator_cls(
                {"$ref": f"{_SPEC_URI}#{pointer}"},
                registry=self._registries[kind],
                format_checker=self._format_checker,
            )
            self._validators[key] = validator
        return validator

    def _errors(
        self, kind: Literal["request", "response"], method: str, route: str, pointer: str, body: Any
    ) -> list[SpecError]:
        validator = self._validator(kind, pointer)
        errors = []
        for err in validator.iter_errors(body):
            location = ".".join(str(p) for p in err.absolute_path)
            errors.append(
                SpecError(kind, method, route, location, err.message[:500], str(err.validator))
            )
        return errors

    def request_errors(self, method: str, route: str, body: Any) -> list[SpecError]:
        """Errors of a JSON (or ``payload_json``) request body; [] when the spec has no schema."""
        op = self.operation(method, route)
        if op is None or "requestBody" not in op:
            return []
        content = op["requestBody"].get("content", {})
        if "application/json" not in content:
            return []
        pointer = "/".join(
            [
                "/paths",
                _escape_pointer(route),
                method.lower(),
                "requestBody/content/application~1json/schema",
            ]
        )
        return self._errors("request", method, route, pointer, body)

    def response_errors(self, method: str, route: str, status: int, body: Any) -> list[SpecError]:
        """Errors of a response body against the response the spec documents for ``status``."""
        op = self.operation(method, route)
        if op is None:
            return [SpecError("response", method, route, "", "route not in spec", "route", status)]
        responses = op.get("responses", {})
        key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
        response = responses.get(key)
        if response is None:
            return [
                SpecError(
                    "response", method, route, "", f"status {status} not documented", "status"
                )
            ]
        base = ["/paths", _escape_pointer(route), method.lower(), "responses", key]
        if "$ref" in response:
            ref = response["$ref"]
            base = [ref.split("#", 1)[1]]
            response = self._resolve(ref)
        if "content" not in response:
            if body is None:
                return []
            return [SpecError("response", method, route, "", "spec documents no body", "body")]
        pointer = "/".join([*base, "content/application~1json/schema"])
        return [
            SpecError(e.kind, e.method, e.route, e.location, e.message, e.keyword, status)
            for e in self._errors("response", method, route, pointer, body)
        ]

    def _resolve(self, ref: str) -> JSON:
        node: Any = self.spec
        for part in ref.split("#", 1)[1].strip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return dict(node)


@lru_cache(maxsize=4)
def _load_validator(path: str) -> SpecValidator:
    with open(path, encoding="utf-8") as fh:
        return SpecValidator(json.load(fh))


def get_spec_validator(path: Path | None = None) -> SpecValidator:
    """The process-wide validator (the spec is loaded and compiled once per process)."""
    return _load_validator(str((path or default_spec_path()).resolve()))


# --------------------------------------------------------------------------- state models


@dataclass
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None

    def payload(self) -> JSON:
        """A user object as Discord sends it (spec: UserResponse)."""
        data: JSON = {
            "id": str(self.id),
            "username": self.username,
            "avatar": self.avatar,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "global_name": self.global_name,
            "primary_guild": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "banner": None,
            "accent_color": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    managed: bool = False
    mentionable: bool = False
    hoist: bool = False
    color: int = 0
    bot_id: int | None = None

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "name": self.name,
            "description": None,
            "color": self.color,
            "colors": {
                "primary_color": self.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": self.hoist,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(int(self.permissions)),
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class FakeMember:
    guild_id: int
    user: FakeUser
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: float = field(default_factory=time.time)

    @property
    def id(self) -> int:
        return self.user.id

    def payload(self, *, with_user: bool = True) -> JSON:
        """A guild member object (spec: GuildMemberResponse)."""
        data: JSON = {
            "avatar": None,
            "banner": None,
            "communication_disabled_until": None,
            "flags": 0,
            "joined_at": _iso(self.joined_at),
            "nick": self.nick,
            "pending": False,
            "premium_since": None,
            "roles": [str(r) for r in self.roles],
            "mute": False,
            "deaf": False,
        }
        if with_user:
            data["user"] = self.user.payload()
        return data


@dataclass(frozen=True)
class Overwrite:
    """A permission overwrite: ``type`` 0 = role, 1 = member."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(int(self.allow)),
            "deny": str(int(self.deny)),
        }


@dataclass
class FakeChannel:
    id: int
    type: int
    name: str
    guild_id: int | None = None
    parent_id: int | None = None
    position: int = 0
    topic: str | None = None
    nsfw: bool = False
    overwrites: list[Overwrite] = field(default_factory=list)
    # threads
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    auto_archive_duration: int = 1440
    invitable: bool = True
    created_at: float = field(default_factory=time.time)
    thread_member_ids: set[int] = field(default_factory=set)
    starter_message_id: int | None = None
    total_message_sent: int = 0
    # DMs
    recipient_ids: list[int] = field(default_factory=list)
    # messages, oldest first (ids are time-ordered)
    message_ids: list[int] = field(default_factory=list)

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    @property
    def last_message_id(self) -> int | None:
        return self.message_ids[-1] if self.message_ids else None


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    bot_role_id: int | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]


@dataclass
class FakeAttachment:
    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> JSON:
        """An attachment object (spec: MessageAttachmentResponse)."""
        data: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass
class _StoredMessage:
    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str
    created_at: float
    type: int = MT_DEFAULT
    flags: int = 0
    tts: bool = False
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    mention_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    allowed_mentions: JSON | None = None
    reference: JSON | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: JSON | None = None
    interaction_legacy: JSON | None = None
    nonce: str | int | None = None
    thread_id: int | None = None
    edited_at: float | None = None
    edits: int = 0
    deleted: bool = False
    poll: JSON | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MF_EPHEMERAL)


@dataclass(frozen=True)
class MessageView:
    """What a person in the channel would see of one message."""

    id: int
    channel_id: int
    content: str
    author_id: int
    author_name: str
    author_is_bot: bool
    edits: int
    flags: int
    allowed_mentions: JSON | None
    mention_ids: tuple[int, ...]
    embeds: tuple[JSON, ...]
    attachments: tuple[JSON, ...]
    reference_id: int | None
    type: int
    created_at: float
    edited_at: float | None
    webhook_id: int | None
    interaction_id: int | None
    thread_id: int | None
    components: tuple[JSON, ...] = ()

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MF_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & MF_LOADING)


@dataclass
class InteractionState:
    """Everything the fake knows about one interaction, live."""

    id: int
    token: str
    application_id: int
    type: int
    name: str
    guild_id: int | None
    channel_id: int
    user_id: int
    created_at: float
    dispatched_at: float | None = None
    callback_type: int | None = None
    callback_at: float | None = None
    callback_data: JSON | None = None
    ephemeral: bool = False
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    component_message_id: int | None = None
    modal: JSON | None = None
    autocomplete_choices: list[JSON] | None = None
    rejected: list[tuple[float, int, int]] = field(default_factory=list)
    invalidated: bool = False
    _fake: FakeDiscord | None = field(default=None, repr=False, compare=False)

    @property
    def acknowledged(self) -> bool:
        return self.callback_type is not None

    @property
    def deferred(self) -> bool:
        return self.callback_type in (CB_DEFERRED_CHANNEL_MESSAGE, CB_DEFERRED_UPDATE_MESSAGE)

    @property
    def original(self) -> MessageView | None:
        if self._fake is None or self.original_message_id is None:
            return None
        return self._fake.message_view(self.original_message_id)

    @property
    def original_content(self) -> str | None:
        view = self.original
        return None if view is None else view.content

    @property
    def followups(self) -> list[MessageView]:
        if self._fake is None:
            return []
        views = [self._fake.message_view(i) for i in self.followup_ids]
        return [v for v in views if v is not None]


@dataclass
class CallRecord:
    """One REST request the fake received."""

    method: str
    path: str
    route: str | None
    query: dict[str, str]
    time: float
    json: Any = None
    files: list[tuple[str, str, int]] = field(default_factory=list)
    status: int | None = None
    response: Any = None
    response_headers: dict[str, str] = field(default_factory=dict)
    authorized: bool = False


@dataclass(frozen=True)
class WriteRecord:
    """A message create / edit / delete in a channel (for edit-budget assertions)."""

    time: float
    channel_id: int
    message_id: int
    kind: Literal["create", "edit", "delete"]
    via: Literal["channel", "interaction", "webhook", "seed", "user"]


@dataclass(frozen=True)
class GatewayConnectionRecord:
    path: str
    query: dict[str, str]
    time: float


@dataclass
class CommandSync:
    time: float
    guild_id: int | None
    names: list[str]
    payload: Any


@dataclass
class _RateLimitRule:
    method: str | None
    regex: re.Pattern[str]
    retry_after: float
    remaining: int | None
    global_: bool
    scope: str
    via: bool
    hits: int = 0


@dataclass
class _Bucket:
    limit: int
    per: float
    bucket_hash: str
    reset_at: float = 0.0
    count: int = 0


@dataclass
class _EditBudget:
    channel_id: int | None
    max_edits: int
    per: float
    retry_after: float | None
    scope: str


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def payload(self) -> JSON:
        data: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            data["errors"] = self.errors
        return data


class _RateLimited(Exception):
    def __init__(
        self, retry_after: float, scope: str, global_: bool = False, bucket: _Bucket | None = None
    ) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after
        self.scope = scope
        self.global_ = global_
        self.bucket = bucket


def _walk_components(components: Any) -> Iterable[JSON]:
    """Every component in a tree (rows, containers, labels), depth first."""
    stack = list(components or []) if isinstance(components, list) else []
    stack.reverse()
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield node
        children = list(node.get("components") or [])
        if isinstance(node.get("component"), dict):
            children.append(node["component"])
        if isinstance(node.get("accessory"), dict):
            children.append(node["accessory"])
        stack.extend(reversed(children))


def _text_inputs(modal: JSON) -> list[JSON]:
    return [c for c in _walk_components(modal.get("components")) if c.get("type") == 4]


def _check_components(components: Any, path: list[str | int], *, v2: bool = False) -> None:
    """What Discord checks of message components beyond the schema: at most 5 rows (of a
    classic message), custom_ids unique in the message, a link button has a url and no
    custom_id, every other button a custom_id and no url."""
    if not isinstance(components, list):
        return
    if not v2 and len(components) > 5:
        raise _form_error(
            [*path, "components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."
        )
    seen: set[str] = set()
    for node in _walk_components(components):
        custom_id = node.get("custom_id")
        if node.get("type") == 2:
            link = node.get("style") == 5
            if link and (custom_id or not node.get("url")):
                raise _form_error(
                    [*path, "components"],
                    "COMPONENT_INVALID",
                    "A link button needs a url and no custom_id.",
                )
            if not link and node.get("style") != 6 and (not custom_id or node.get("url")):
                raise _form_error(
                    [*path, "components"],
                    "COMPONENT_CUSTOM_ID_REQUIRED",
                    "A button needs a custom_id.",
                )
            if not link and not node.get("label") and not node.get("emoji"):
                raise _form_error(
                    [*path, "components"],
                    "COMPONENT_INVALID",
                    "A button needs a label or an emoji.",
                )
        if custom_id:
            if custom_id in seen:
                raise _form_error(
                    [*path, "components"],
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(custom_id)


def _check_modal(data: Any) -> None:
    """A modal (callback type 9) as Discord checks it: a title (1-45) and custom_id,
    1-5 top-level components, unique custom_ids, each text input's label (in a row) and
    min_length <= max_length, a prefilled value within max_length."""
    path: list[str | int] = ["data"]
    if not isinstance(data, dict):
        raise _form_error(path, "BASE_TYPE_REQUIRED", "This field is required")
    title = data.get("title")
    if not isinstance(title, str) or not 1 <= len(title) <= 45:
        raise _form_error(
            [*path, "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length."
        )
    if not data.get("custom_id"):
        raise _form_error([*path, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
    rows = data.get("components")
    if not isinstance(rows, list) or not 1 <= len(rows) <= 5:
        raise _form_error(
            [*path, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
        )
    seen: set[str] = set()
    for row in rows:
        labelled = isinstance(row, dict) and row.get("type") == 18
        for node in _walk_components([row]):
            if node.get("type") != 4:
                continue
            if not labelled and not node.get("label"):
                raise _form_error(
                    [*path, "components"], "BASE_TYPE_REQUIRED", "A text input needs a label."
                )
            low, high = int(node.get("min_length") or 0), int(node.get("max_length") or 4000)
            if low > high:
                raise _form_error(
                    [*path, "components"], "COMPONENT_INVALID", "min_length is above max_length."
                )
            if len(node.get("value") or "") > high:
                raise _form_error(
                    [*path, "components"],
                    "BASE_TYPE_MAX_LENGTH",
                    "The value is longer than max_length.",
                )
            custom_id = node.get("custom_id") or ""
            if custom_id in seen:
                raise _form_error(
                    [*path, "components"],
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(custom_id)


def _check_interactive(body: JSON) -> None:
    """Components of a message write, or an interaction callback's message or modal."""
    if "type" in body and isinstance(body.get("data"), dict) and "content" not in body:
        if body["type"] == CB_MODAL:
            _check_modal(body["data"])
            return
        data = body["data"]
        _check_components(
            data.get("components"),
            ["data"],
            v2=bool(int(data.get("flags") or 0) & MF_IS_COMPONENTS_V2),
        )
        return
    _check_components(
        body.get("components"), [], v2=bool(int(body.get("flags") or 0) & MF_IS_COMPONENTS_V2)
    )


def _form_error(path: Sequence[str | int], code: str, message: str) -> _ApiError:
    """400 Invalid Form Body with Discord's nested ``errors`` tree."""
    tree: JSON = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(list(path)):
        tree = {str(part): tree}
    return _ApiError(400, 50035, "Invalid Form Body", tree)


def _merge_trees(target: JSON, tree: JSON) -> None:
    for key, value in tree.items():
        if key == "_errors":
            target.setdefault("_errors", []).extend(value)
        else:
            _merge_trees(target.setdefault(key, {}), value)


# option type -> how a Python value becomes that option's JSON value (STRING, INTEGER, ...)
_OPTION_COERCE: dict[int, Callable[[Any], Any]] = {3: str, 4: int, 5: bool, 10: float}

_SPEC_KEYWORD_CODES = {
    "maxLength": "BASE_TYPE_MAX_LENGTH",
    "minLength": "BASE_TYPE_MIN_LENGTH",
    "required": "BASE_TYPE_REQUIRED",
    "type": "BASE_TYPE_BAD_TYPE",
    "maximum": "NUMBER_TYPE_MAX",
    "minimum": "NUMBER_TYPE_MIN",
    "maxItems": "BASE_TYPE_MAX_LENGTH",
    "enum": "BASE_TYPE_CHOICES",
}


_BODY_KEY: web.ResponseKey[Any] = web.ResponseKey("fake_discord_body")
_REQ_BODY: web.RequestKey[Any] = web.RequestKey("fake_discord_body")
_REQ_FILES: web.RequestKey[list[tuple[str, str, bytes, str]]] = web.RequestKey("fake_discord_files")


# --------------------------------------------------------------------------- gateway plumbing


class _GatewayConn:
    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.compress = compress
        self.session: _Session | None = None
        self._lock = asyncio.Lock()
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Any = None
        if compress == "zstd-stream":
            zstandard = importlib.import_module("zstandard")
            self._zstd = zstandard.ZstdCompressor().compressobj()
            self._zstd_flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    async def send(self, payload: JSON) -> bool:
        data = json.dumps(payload, separators=(",", ":"))
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                if self._zlib is not None:
                    raw = self._zlib.compress(data.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(raw)
                elif self._zstd is not None:
                    raw = self._zstd.compress(data.encode()) + self._zstd.flush(self._zstd_flush)
                    await self.ws.send_bytes(raw)
                else:
                    await self.ws.send_str(data)
            except (ConnectionError, RuntimeError):
                return False
        return True


@dataclass
class _Session:
    session_id: str
    shard: tuple[int, int] | None
    intents: int
    identify: JSON
    seq: int = 0
    buffer: list[JSON] = field(default_factory=list)
    conn: _GatewayConn | None = None
    ready: bool = False
    invalid: bool = False

    @property
    def shard_id(self) -> int:
        return self.shard[0] if self.shard else 0

    @property
    def shard_count(self) -> int:
        return self.shard[1] if self.shard else 1


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    """Fake Discord REST API v10 + gateway on 127.0.0.1, run inside the test's event loop."""

    def __init__(
        self,
        token: str = "bot-token",
        application_id: int | None = None,
        bot_user_id: int | None = None,
        *,
        bot_username: str = "teambot",
        heartbeat_interval_ms: int = 41_250,
        recommended_shards: int = 1,
        min_shards: int = 1,
        interaction_ack_deadline: float = 3.0,
        interaction_token_ttl: float = 15 * 60.0,
        validate_requests: bool = True,
        spec_path: Path | None = None,
        bucket_limits: Mapping[str, tuple[int, float]] | None = None,
        default_bucket_limit: tuple[int, float] = (50, 1.0),
        enforce_bucket_limits: bool = True,
        allowed_intents: int | None = None,
        echo_bot_messages: bool = True,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
    ) -> None:
        self.token = token
        self._time_offset = 0.0
        self._ids = _Snowflakes()
        self.application_id = application_id or self._ids.make(time.time() - 86400 * 400)
        self.bot_user = FakeUser(
            id=bot_user_id or self.application_id, username=bot_username, bot=True
        )
        self.app_owner = FakeUser(id=self._ids.make(time.time() - 86400 * 800), username="owner")
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.recommended_shards = recommended_shards
        self.min_shards = min_shards
        self.interaction_ack_deadline = interaction_ack_deadline
        self.interaction_token_ttl = interaction_token_ttl
        self.validate_requests = validate_requests
        self._spec_path = spec_path
        self._bucket_limits: dict[str, tuple[int, float]] = {
            "POST /channels/{channel_id}/messages": (5, 5.0),
            "PATCH /channels/{channel_id}/messages/{message_id}": (5, 5.0),
            "DELETE /channels/{channel_id}/messages/{message_id}": (5, 1.0),
            "POST /channels/{channel_id}/typing": (5, 5.0),
        }
        if bucket_limits:
            self._bucket_limits.update(bucket_limits)
        self._default_bucket_limit = default_bucket_limit
        self.enforce_bucket_limits = enforce_bucket_limits
        self.allowed_intents = allowed_intents
        self.echo_bot_messages = echo_bot_messages
        self.attachment_size_limit = attachment_size_limit

        # world state
        self._users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self._guilds: dict[int, FakeGuild] = {}
        self._channels: dict[int, FakeChannel] = {}
        self._messages: dict[int, _StoredMessage] = {}
        self._attachments: dict[int, FakeAttachment] = {}
        self._interactions: dict[int, InteractionState] = {}
        self._interactions_by_token: dict[str, InteractionState] = {}
        self._commands: dict[int | None, list[JSON]] = {}
        self._nonces: dict[tuple[int, int, str], int] = {}

        # observations
        self.calls: list[CallRecord] = []
        self.unhandled_calls: list[CallRecord] = []
        self.spec_errors: list[SpecError] = []
        self.writes: list[WriteRecord] = []
        self.command_syncs: list[CommandSync] = []
        self.threads: list[FakeChannel] = []
        self.typing: list[tuple[float, int]] = []
        self.gateway_connections: list[GatewayConnectionRecord] = []
        self.gateway_received: list[JSON] = []
        self.identifies: list[JSON] = []
        self.resumes: list[JSON] = []
        self.heartbeats = 0
        self.presence_updates: list[JSON] = []

        # machinery
        self._rules: list[_RateLimitRule] = []
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._edit_budgets: list[_EditBudget] = []
        self._sessions: dict[str, _Session] = {}
        self._conns: set[_GatewayConn] = set()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = False
        self._stalled_attachments: dict[int, tuple[float, int]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.validate_requests:
            get_spec_validator(self._spec_path)  # load and compile once, fail early
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        self._closing = True
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake discord shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """REST base, the value for ``discord.http.Route.BASE`` / ``DISCORD_API_URL``."""
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """Gateway URL, the value for ``DiscordWebSocket.DEFAULT_GATEWAY``."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway/resume"

    # ------------------------------------------------------------------ time

    def now(self) -> float:
        """The fake's wall clock (``time.time()`` plus :meth:`advance_time` offsets)."""
        return time.time() + self._time_offset

    def advance_time(self, seconds: float) -> None:
        """Move the fake's clock forward (expires interaction tokens without sleeping)."""
        self._time_offset += seconds
        self._notify()

    def _new_id(self) -> int:
        return self._ids.now(self.now())

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is this helper's point
        message: str = "",
    ) -> T:
        """Wait until ``predicate()`` is truthy (re-checked after every change); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(message or f"condition not met within {timeout}s")
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    async def wait_ready(
        self,
        shards: int | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - the deadline is this helper's point
    ) -> None:
        """Wait until ``shards`` sessions (default 1) got READY and their GUILD_CREATEs."""
        wanted = shards or 1
        await self.wait_until(
            lambda: len([s for s in self._sessions.values() if s.ready and s.conn]) >= wanted,
            timeout,
            f"{wanted} gateway session(s) not ready within {timeout}s",
        )

    # ------------------------------------------------------------------ world building

    def add_user(
        self,
        username: str,
        *,
        bot: bool = False,
        id: int | None = None,
        global_name: str | None = None,
    ) -> FakeUser:
        user = FakeUser(
            id=id or self._ids.make(self.now() - 86400 * 300),
            username=username,
            global_name=global_name if global_name is not None else username.title(),
            bot=bot,
        )
        self._users[user.id] = user
        return user

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        id: int | None = None,
        owner: FakeUser | None = None,
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: int = 0,
    ) -> FakeGuild:
        """A guild with @everyone (id == guild id), the bot as member with its managed role."""
        gid = id or self._ids.make(self.now() - 86400 * 200)
        owner = (
            self._user(owner) if owner else self.add_user(f"{name.lower().replace(' ', '-')}-owner")
        )
        guild = FakeGuild(id=gid, name=name, owner_id=owner.id, created_at=snowflake_time(gid))
        guild.roles[gid] = FakeRole(gid, gid, "@everyone", permissions=int(everyone_permissions))
        self._guilds[gid] = guild
        guild.members[owner.id] = FakeMember(gid, owner, joined_at=snowflake_time(gid))
        bot_role = FakeRole(
            self._ids.make(self.now() - 86400),
            gid,
            self.bot_user.username,
            permissions=int(bot_permissions),
            position=1,
            managed=True,
            bot_id=self.bot_user.id,
        )
        guild.roles[bot_role.id] = bot_role
        guild.bot_role_id = bot_role.id
        guild.members[self.bot_user.id] = FakeMember(
            gid, self.bot_user, roles=[bot_role.id], joined_at=self.now() - 86400
        )
        return guild

    def add_role(
        self,
        guild: FakeGuild | int,
        name: str,
        *,
        permissions: int = 0,
        position: int | None = None,
        mentionable: bool = False,
        hoist: bool = False,
        color: int = 0,
        id: int | None = None,
    ) -> FakeRole:
        g = self.guild(guild)
        role = FakeRole(
            id=id or self._new_id(),
            guild_id=g.id,
            name=name,
            permissions=int(permissions),
            position=position if position is not None else len(g.roles),
            mentionable=mentionable,
            hoist=hoist,
            color=color,
        )
        g.roles[role.id] = role
        return role

    def add_member(
        self,
        guild: FakeGuild | int,
        user: FakeUser | str | int,
        *,
        roles: Iterable[FakeRole | int] = (),
        nick: str | None = None,
        bot: bool = False,
    ) -> FakeMember:
        g = self.guild(guild)
        if isinstance(user, str):
            u = self.add_user(user, bot=bot)
        elif isinstance(user, int):
            u = self._users[user]
        else:
            u = user
            self._users.setdefault(u.id, u)
        member = FakeMember(
            g.id,
            u,
            roles=[r.id if isinstance(r, FakeRole) else int(r) for r in roles],
            nick=nick,
            joined_at=self.now() - 3600,
        )
        g.members[u.id] = member
        return member

    @staticmethod
    def overwrite(
        target: FakeRole | FakeMember | FakeUser | FakeGuild, *, allow: int = 0, deny: int = 0
    ) -> Overwrite:
        """An overwrite for a role (or ``FakeGuild`` = @everyone) or a member."""
        if isinstance(target, FakeRole):
            return Overwrite(target.id, 0, int(allow), int(deny))
        if isinstance(target, FakeGuild):
            return Overwrite(target.id, 0, int(allow), int(deny))
        return Overwrite(target.id, 1, int(allow), int(deny))

    def set_overwrite(
        self,
        channel: FakeChannel | int,
        target: FakeRole | FakeMember | FakeUser | FakeGuild,
        *,
        allow: int = 0,
        deny: int = 0,
    ) -> Overwrite:
        ch = self.channel(channel)
        ow = self.overwrite(target, allow=allow, deny=deny)
        ch.overwrites = [o for o in ch.overwrites if (o.id, o.type) != (ow.id, ow.type)] + [ow]
        return ow

    def add_channel(
        self,
        guild: FakeGuild | int,
        name: str,
        *,
        type: int = ChannelType.GUILD_TEXT,
        parent: FakeChannel | int | None = None,
        topic: str | None = None,
        overwrites: Iterable[Overwrite] = (),
        position: int | None = None,
        owner: FakeUser | FakeMember | int | None = None,
        id: int | None = None,
    ) -> FakeChannel:
        """A guild channel; ``type=11/12`` (with ``parent``) makes a thread."""
        g = self.guild(guild)
        parent_id = None if parent is None else self.channel(parent).id
        if int(type) in THREAD_TYPES and parent_id is None:
            raise ValueError("a thread needs a parent channel")
        cid = id or self._ids.make(self.now() - 86400 * 100)
        ch = FakeChannel(
            id=cid,
            type=int(type),
            name=name,
            guild_id=g.id,
            parent_id=parent_id,
            position=position if position is not None else len(g.channel_ids),
            topic=topic,
            overwrites=list(overwrites),
            created_at=snowflake_time(cid),
        )
        if ch.is_thread:
            owner_id = self._user_id(owner) if owner is not None else self.bot_user.id
            ch.owner_id = owner_id
            ch.thread_member_ids = {owner_id}
        self._channels[cid] = ch
        g.channel_ids.append(cid)
        return ch

    def add_thread(
        self,
        parent: FakeChannel | int,
        name: str,
        *,
        private: bool = False,
        owner: FakeUser | FakeMember | int | None = None,
        archived: bool = False,
    ) -> FakeChannel:
        p = self.channel(parent)
        if p.guild_id is None:
            raise ValueError("threads live in guild channels")
        thread = self.add_channel(
            p.guild_id,
            name,
            type=ChannelType.PRIVATE_THREAD if private else ChannelType.PUBLIC_THREAD,
            parent=p,
            owner=owner,
        )
        thread.archived = archived
        return thread

    def add_dm_channel(self, user: FakeUser | FakeMember | int) -> FakeChannel:
        uid = self._user_id(user)
        for ch in self._channels.values():
            if ch.type == ChannelType.DM and ch.recipient_ids == [uid]:
                return ch
        ch = FakeChannel(id=self._new_id(), type=ChannelType.DM, name="", recipient_ids=[uid])
        self._channels[ch.id] = ch
        return ch

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        description: str | None = None,
    ) -> FakeAttachment:
        """An uploaded file served by the fake (for ``interaction(..., attachments=...)``)."""
        aid = self._new_id()
        att = FakeAttachment(
            id=aid,
            filename=filename,
            data=data,
            content_type=content_type,
            url=self._attachment_url("ephemeral-attachments", self.application_id, aid, filename),
            description=description,
            ephemeral=True,
        )
        self._attachments[aid] = att
        return att

    def _attachment_url(self, kind: str, scope: int, aid: int, filename: str) -> str:
        expires = int(self.now() + 86400)
        sig = hashlib.sha256(f"{aid}{expires}".encode()).hexdigest()[:64]
        return (
            f"{self.base_url}/{kind}/{scope}/{aid}/{filename}"
            f"?ex={expires:x}&is={int(self.now()):x}&hm={sig}&"
        )

    def _new_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str,
        description: str | None,
    ) -> FakeAttachment:
        aid = self._new_id()
        att = FakeAttachment(
            id=aid,
            filename=filename,
            data=data,
            content_type=content_type,
            url=self._attachment_url("attachments", channel_id, aid, filename),
            description=description,
        )
        self._attachments[aid] = att
        return att

    def seed_messages(
        self,
        channel: FakeChannel | int,
        n: int,
        *,
        authors: Sequence[FakeUser | FakeMember | int] | None = None,
        content: str | Callable[[int], str] = "seed message {i}",
        spacing: float = 60.0,
    ) -> list[int]:
        """``n`` past messages (oldest first), ``spacing`` seconds apart; returns their ids."""
        ch = self.channel(channel)
        users = [self._user(a) for a in authors] if authors else [self._default_user(ch)]
        start = self.now() - spacing * (n + 1)
        ids = []
        for i in range(n):
            at = start + i * spacing
            text = content(i) if callable(content) else content.format(i=i)
            msg = _StoredMessage(
                id=self._ids.make(at),
                channel_id=ch.id,
                guild_id=ch.guild_id,
                author=users[i % len(users)],
                content=text,
                created_at=at,
            )
            self._store_message(ch, msg, via="seed")
            ids.append(msg.id)
        return ids

    # ------------------------------------------------------------------ lookups

    def guild(self, guild: FakeGuild | int | None = None) -> FakeGuild:
        if guild is None:
            if not self._guilds:
                raise LookupError("no guild added")
            return next(iter(self._guilds.values()))
        if isinstance(guild, FakeGuild):
            return guild
        return self._guilds[int(guild)]

    def channel(self, channel: FakeChannel | int) -> FakeChannel:
        if isinstance(channel, FakeChannel):
            return channel
        return self._channels[int(channel)]

    def user(self, user: FakeUser | FakeMember | int) -> FakeUser:
        return self._user(user)

    def member(self, guild: FakeGuild | int, user: FakeUser | FakeMember | int) -> FakeMember:
        return self.guild(guild).members[self._user_id(user)]

    @staticmethod
    def _user_id(user: FakeUser | FakeMember | int) -> int:
        if isinstance(user, FakeMember):
            return user.user.id
        if isinstance(user, FakeUser):
            return user.id
        return int(user)

    def _user(self, user: FakeUser | FakeMember | int) -> FakeUser:
        if isinstance(user, FakeMember):
            return user.user
        if isinstance(user, FakeUser):
            self._users.setdefault(user.id, user)
            return user
        return self._users[int(user)]

    def _default_user(self, channel: FakeChannel) -> FakeUser:
        if channel.guild_id is None:
            return self._users[channel.recipient_ids[0]]
        guild = self._guilds[channel.guild_id]
        for member in guild.members.values():
            if not member.user.bot and member.user.id != guild.owner_id:
                return member.user
        return self.add_member(guild, "tester").user

    def _default_channel(self, guild: FakeGuild) -> FakeChannel:
        for cid in guild.channel_ids:
            ch = self._channels[cid]
            if ch.type == ChannelType.GUILD_TEXT:
                return ch
        return self.add_channel(guild, "general")

    def commands(self, guild: FakeGuild | int | None = None) -> list[JSON]:
        """Registered application commands (global, or for ``guild``)."""
        key = None if guild is None else self.guild(guild).id
        return copy.deepcopy(self._commands.get(key, []))

    # ------------------------------------------------------------------ permissions

    def permissions_for(self, user: FakeUser | FakeMember | int, channel: FakeChannel | int) -> int:
        """Discord's permission algorithm: base roles, then @everyone/role/member overwrites."""
        ch = self.channel(channel)
        uid = self._user_id(user)
        if ch.guild_id is None:
            return DM_PERMISSIONS if uid in ch.recipient_ids or uid == self.bot_user.id else 0
        guild = self._guilds[ch.guild_id]
        base = self._base_permissions(guild, uid)
        if base == ALL_PERMISSIONS:
            return ALL_PERMISSIONS
        target = self._channels[ch.parent_id] if ch.is_thread and ch.parent_id else ch
        perms = base
        overwrites = {(o.type, o.id): o for o in target.overwrites}
        everyone = overwrites.get((0, guild.id))
        if everyone:
            perms = (perms & ~everyone.deny) | everyone.allow
        member = guild.members.get(uid)
        allow = deny = 0
        for rid in member.roles if member else []:
            ow = overwrites.get((0, rid))
            if ow:
                allow |= ow.allow
                deny |= ow.deny
        perms = (perms & ~deny) | allow
        own = overwrites.get((1, uid))
        if own:
            perms = (perms & ~own.deny) | own.allow
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        private = ch.type == ChannelType.PRIVATE_THREAD and uid not in ch.thread_member_ids
        if private and not perms & Perm.MANAGE_THREADS:
            return 0
        return perms

    def _base_permissions(self, guild: FakeGuild, uid: int) -> int:
        if uid == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(uid)
        if member is None:
            return 0
        perms = guild.everyone.permissions
        for rid in member.roles:
            role = guild.roles.get(rid)
            if role:
                perms |= role.permissions
        if perms & Perm.ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def _require(self, channel: FakeChannel, perm: int) -> None:
        perms = self.permissions_for(self.bot_user, channel)
        if not perms & Perm.VIEW_CHANNEL:
            raise _ApiError(403, 50001, "Missing Access")
        if perm and not perms & perm:
            raise _ApiError(403, 50013, "Missing Permissions")

    # ------------------------------------------------------------------ payloads

    def channel_payload(self, channel: FakeChannel | int, *, for_user: int | None = None) -> JSON:
        """A channel object as the gateway and REST send it."""
        ch = self.channel(channel)
        if ch.type == ChannelType.DM:
            data: JSON = {
                "id": str(ch.id),
                "type": ch.type,
                "last_message_id": str(ch.last_message_id) if ch.last_message_id else None,
                "flags": 0,
                "recipients": [self._users[u].payload() for u in ch.recipient_ids],
            }
        elif ch.is_thread:
            data = {
                "id": str(ch.id),
                "type": ch.type,
                "guild_id": str(ch.guild_id),
                "parent_id": str(ch.parent_id),
                "owner_id": str(ch.owner_id),
                "name": ch.name,
                "last_message_id": str(ch.last_message_id) if ch.last_message_id else None,
                "last_pin_timestamp": None,
                "rate_limit_per_user": 0,
                "message_count": len(self._visible_ids(ch)),
                "member_count": min(len(ch.thread_member_ids), 50),
                "total_message_sent": ch.total_message_sent,
                "flags": 0,
                "thread_metadata": {
                    "archived": ch.archived,
                    "auto_archive_duration": ch.auto_archive_duration,
                    "archive_timestamp": _iso(ch.created_at),
                    "locked": ch.locked,
                    "create_timestamp": _iso(ch.created_at),
                },
            }
            if ch.type == ChannelType.PRIVATE_THREAD:
                data["thread_metadata"]["invitable"] = ch.invitable
            if self.bot_user.id in ch.thread_member_ids:
                data["member"] = {
                    "id": str(ch.id),
                    "user_id": str(self.bot_user.id),
                    "join_timestamp": _iso(ch.created_at),
                    "flags": 0,
                }
        else:
            data = {
                "id": str(ch.id),
                "type": ch.type,
                "guild_id": str(ch.guild_id),
                "name": ch.name,
                "position": ch.position,
                "permission_overwrites": [o.payload() for o in ch.overwrites],
                "parent_id": str(ch.parent_id) if ch.parent_id else None,
                "nsfw": ch.nsfw,
                "flags": 0,
            }
            if ch.type != ChannelType.GUILD_CATEGORY:
                data["topic"] = ch.topic
                data["last_message_id"] = str(ch.last_message_id) if ch.last_message_id else None
                data["rate_limit_per_user"] = 0
            if ch.type == ChannelType.GUILD_VOICE:
                data.update(bitrate=64000, user_limit=0, rtc_region=None)
            if ch.type == ChannelType.GUILD_FORUM:
                data.update(
                    available_tags=[],
                    default_reaction_emoji=None,
                    default_sort_order=None,
                    default_forum_layout=0,
                )
        if for_user is not None:
            data["permissions"] = str(self.permissions_for(for_user, ch))
        return data

    def guild_payload(self, guild: FakeGuild | int, *, intents: int = ALL_INTENTS) -> JSON:
        """GUILD_CREATE data. Members: the bot only, or everyone with GUILD_PRESENCES
        (as Discord does since gateway v8)."""
        g = self.guild(guild)
        if intents & Intent.GUILD_PRESENCES:
            members = list(g.members.values())
        else:
            members = [g.members[self.bot_user.id]]
        channels = [self._channels[c] for c in g.channel_ids]
        return {
            "id": str(g.id),
            "name": g.name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(g.owner_id),
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in g.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "max_members": 500000,
            "nsfw_level": 0,
            "nsfw": False,
            "premium_progress_bar_enabled": False,
            "incidents_data": None,
            "joined_at": _iso(g.members[self.bot_user.id].joined_at),
            "large": len(g.members) > 250,
            "unavailable": False,
            "member_count": len(g.members),
            "voice_states": [],
            "members": [m.payload() for m in members],
            "channels": [self.channel_payload(c) for c in channels if not c.is_thread],
            "threads": [
                self.channel_payload(c)
                for c in channels
                if c.is_thread and not c.archived and self.permissions_for(self.bot_user, c)
            ],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
            "lazy": True,
        }

    def _message_payload(
        self, msg: _StoredMessage, *, gateway: bool = False, nested: bool = False
    ) -> JSON:
        guild = self._guilds.get(msg.guild_id) if msg.guild_id else None
        mentions = []
        for uid in msg.mention_ids:
            user = self._users.get(uid)
            if user is None:
                continue
            entry = user.payload()
            if gateway and guild and uid in guild.members:
                entry["member"] = guild.members[uid].payload(with_user=False)
            mentions.append(entry)
        data: JSON = {
            "type": msg.type,
            "content": msg.content,
            "mentions": mentions,
            "mention_roles": [str(r) for r in msg.mention_role_ids],
            "attachments": [a.payload() for a in msg.attachments],
            "embeds": copy.deepcopy(msg.embeds),
            "timestamp": _iso(msg.created_at),
            "edited_timestamp": _iso(msg.edited_at) if msg.edited_at else None,
            "flags": msg.flags,
            "components": copy.deepcopy(msg.components),
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "author": msg.author.payload(),
            "pinned": False,
            "mention_everyone": msg.mention_everyone,
            "tts": msg.tts,
        }
        if msg.webhook_id is not None:
            data["webhook_id"] = str(msg.webhook_id)
        if msg.application_id is not None:
            data["application_id"] = str(msg.application_id)
        if msg.nonce is not None:
            data["nonce"] = msg.nonce
        if msg.interaction_metadata is not None:
            data["interaction_metadata"] = copy.deepcopy(msg.interaction_metadata)
        if msg.interaction_legacy is not None:
            data["interaction"] = copy.deepcopy(msg.interaction_legacy)
        if msg.poll is not None:
            data["poll"] = copy.deepcopy(msg.poll)
        if msg.thread_id is not None and msg.thread_id in self._channels:
            data["thread"] = self.channel_payload(msg.thread_id)
        if msg.reference is not None:
            data["message_reference"] = dict(msg.reference)
            if not nested:
                ref_id = msg.reference.get("message_id")
                ref = self._messages.get(int(ref_id)) if ref_id else None
                if ref is not None and not ref.deleted:
                    data["referenced_message"] = self._message_payload(ref, nested=True)
                else:
                    data["referenced_message"] = None
        if gateway and guild is not None:
            data["guild_id"] = str(guild.id)
            if msg.author.id in guild.members and msg.webhook_id is None:
                data["member"] = guild.members[msg.author.id].payload(with_user=False)
        return data

    def message_payload(self, message_id: int, *, gateway: bool = False) -> JSON:
        """The REST (or, with ``gateway=True``, MESSAGE_CREATE) shape of a stored message."""
        return self._message_payload(self._messages[int(message_id)], gateway=gateway)

    # ------------------------------------------------------------------ builders

    def message(
        self,
        channel: FakeChannel | int,
        content: str,
        author: FakeUser | FakeMember | int | None = None,
        *,
        mentions: Sequence[FakeUser | FakeMember | int] | None = None,
        mention_roles: Sequence[FakeRole | int] = (),
        attachments: Sequence[FakeAttachment | tuple[str, bytes] | tuple[str, bytes, str]] = (),
        message_reference: int | MessageView | None = None,
        embeds: Sequence[JSON] = (),
    ) -> JSON:
        """A user's message: stored in the channel, returned as MESSAGE_CREATE data.

        ``mentions`` defaults to the ``<@id>`` mentions parsed from ``content``.
        """
        ch = self.channel(channel)
        user = self._user(author) if author is not None else self._default_user(ch)
        msg = _StoredMessage(
            id=self._new_id(),
            channel_id=ch.id,
            guild_id=ch.guild_id,
            author=user,
            content=content,
            created_at=self.now(),
            embeds=[dict(e) for e in embeds],
        )
        msg.created_at = snowflake_time(msg.id)
        if mentions is None:
            msg.mention_ids = self._parse_user_mentions(content)
        else:
            msg.mention_ids = [self._user_id(m) for m in mentions]
        msg.mention_role_ids = [r.id if isinstance(r, FakeRole) else int(r) for r in mention_roles]
        msg.mention_everyone = "@everyone" in content or "@here" in content
        for item in attachments:
            if isinstance(item, FakeAttachment):
                att = item
                att.url = self._attachment_url("attachments", ch.id, att.id, att.filename)
                att.ephemeral = False
            else:
                ctype = item[2] if len(item) > 2 else "application/octet-stream"
                att = self._new_attachment(ch.id, item[0], item[1], ctype, None)
            msg.attachments.append(att)
        if message_reference is not None:
            ref_id = (
                message_reference.id
                if isinstance(message_reference, MessageView)
                else int(message_reference)
            )
            msg.reference = self._reference_payload(ch, ref_id)
            msg.type = MT_REPLY
            ref = self._messages.get(ref_id)
            if ref is not None and ref.author.id not in msg.mention_ids:
                msg.mention_ids.append(ref.author.id)
        self._store_message(ch, msg, via="user")
        return self._message_payload(msg, gateway=True)

    def _reference_payload(self, channel: FakeChannel, message_id: int) -> JSON:
        ref: JSON = {"type": 0, "channel_id": str(channel.id), "message_id": str(message_id)}
        if channel.guild_id is not None:
            ref["guild_id"] = str(channel.guild_id)
        return ref

    def interaction(
        self,
        command_name: str,
        options: Mapping[str, Any] | Sequence[JSON] | None = None,
        user: FakeUser | FakeMember | int | None = None,
        channel: FakeChannel | int | None = None,
        guild: FakeGuild | int | None = None,
        *,
        attachments: Sequence[FakeAttachment | tuple[str, bytes] | tuple[str, bytes, str]] = (),
        locale: str = "en-US",
    ) -> JSON:
        """INTERACTION_CREATE data for a slash command (type 2, CHAT_INPUT).

        ``command_name`` may be ``"group sub"`` for subcommands. ``options`` maps option names
        to values (str / int / float / bool, FakeUser / FakeMember, FakeChannel, FakeRole,
        FakeAttachment); types come from the synced command when there is one. Files in
        ``attachments`` go to ``data.resolved.attachments`` and fill attachment options.
        """
        ch, g = self._interaction_place(channel, guild)
        invoker = self._user(user) if user is not None else self._default_user(ch)
        parts = command_name.split()
        definition = self._command_definition(parts[0], g)
        resolved: JSON = {}
        atts: list[FakeAttachment] = []
        for item in attachments:
            if isinstance(item, FakeAttachment):
                atts.append(item)
            else:
                ctype = item[2] if len(item) > 2 else "application/octet-stream"
                atts.append(self.add_attachment(item[0], item[1], ctype))
        for att in atts:
            resolved.setdefault("attachments", {})[str(att.id)] = att.payload()

        # walk down subcommand groups
        leaf_def = definition
        for sub in parts[1:]:
            subs = (leaf_def or {}).get("options") or []
            leaf_def = next((o for o in subs if o.get("name") == sub), None)
        leaf_options = self._build_options(leaf_def, options, resolved, ch, g)
        if leaf_def is not None:
            used = {o["name"] for o in leaf_options}
            spare = [
                a for a in atts if str(a.id) not in {str(o.get("value")) for o in leaf_options}
            ]
            for opt in leaf_def.get("options") or []:
                if opt.get("type") == 11 and opt["name"] not in used and spare:
                    att = spare.pop(0)
                    leaf_options.append({"name": opt["name"], "type": 11, "value": str(att.id)})
        nested: list[JSON] = leaf_options
        for depth in range(len(parts) - 1, 0, -1):
            kind = 1 if depth == len(parts) - 1 else 2
            nested = [{"name": parts[depth], "type": kind, "options": nested}]
        data: JSON = {
            "id": str(definition["id"]) if definition else str(self._new_id()),
            "name": parts[0],
            "type": 1,
            "options": nested,
        }
        if resolved:
            data["resolved"] = resolved
        if definition and definition.get("guild_id"):
            data["guild_id"] = definition["guild_id"]
        payload = self._interaction_base(IT_APPLICATION_COMMAND, invoker, ch, g, locale)
        payload["data"] = data
        self._register_interaction(payload, command_name, invoker, ch, g)
        return payload

    def component_interaction(
        self,
        message: int | MessageView,
        custom_id: str,
        user: FakeUser | FakeMember | int | None = None,
        *,
        component_type: int = 2,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
    ) -> JSON:
        """INTERACTION_CREATE data for a button / select on a message (type 3)."""
        mid = message.id if isinstance(message, MessageView) else int(message)
        msg = self._messages[mid]
        if component_type == 2:
            found = [b for b in _walk_components(msg.components) if b.get("custom_id") == custom_id]
            if not found:
                raise ValueError(f"message {mid} has no component {custom_id!r} to click")
            if found[0].get("disabled"):
                raise ValueError(f"{custom_id!r} is disabled: Discord would not send the click")
        ch = self._channels[msg.channel_id]
        g = self._guilds.get(ch.guild_id) if ch.guild_id else None
        invoker = self._user(user) if user is not None else self._default_user(ch)
        payload = self._interaction_base(IT_MESSAGE_COMPONENT, invoker, ch, g, locale)
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
        payload["data"] = data
        payload["message"] = self._message_payload(msg)
        state = self._register_interaction(payload, custom_id, invoker, ch, g)
        state.component_message_id = mid
        return payload

    def modal_submit(
        self,
        shown: InteractionState,
        values: Mapping[str, str],
        user: FakeUser | FakeMember | int | None = None,
        *,
        locale: str = "en-US",
    ) -> JSON:
        """INTERACTION_CREATE data for a person submitting the modal that `shown` answered
        with (type 5). `values` maps text inputs' custom_ids to what was typed; Discord's
        client enforces required, min_length and max_length before it lets anyone submit,
        so breaking them here is a test bug (ValueError)."""
        modal = shown.modal
        if shown.callback_type != CB_MODAL or modal is None:
            raise ValueError("that interaction was not answered with a modal")
        ch = self._channels[shown.channel_id]
        g = self._guilds.get(ch.guild_id) if ch.guild_id else None
        invoker = self._user(user) if user is not None else self._users[shown.user_id]
        if invoker.id != shown.user_id:
            raise ValueError("only the person the modal was shown to can submit it")
        inputs = {i["custom_id"]: i for i in _text_inputs(modal)}
        unknown = set(values) - set(inputs)
        if unknown:
            raise ValueError(f"the modal has no text input {sorted(unknown)}")
        rows: list[JSON] = []
        for custom_id, spec in inputs.items():
            value = values.get(custom_id, spec.get("value") or "")
            if not value and spec.get("required", True):
                raise ValueError(f"{custom_id} is required: Discord would not submit the modal")
            if value and len(value) < int(spec.get("min_length") or 0):
                raise ValueError(f"{custom_id} is shorter than its min_length")
            if len(value) > int(spec.get("max_length") or 4000):
                raise ValueError(f"{custom_id} is longer than its max_length")
            rows.append(
                {
                    "type": 1,
                    "components": [{"type": 4, "custom_id": custom_id, "value": value}],
                }
            )
        payload = self._interaction_base(IT_MODAL_SUBMIT, invoker, ch, g, locale)
        payload["data"] = {"custom_id": modal["custom_id"], "components": rows}
        if shown.component_message_id is not None:
            payload["message"] = self._message_payload(self._messages[shown.component_message_id])
        state = self._register_interaction(payload, modal["custom_id"], invoker, ch, g)
        state.component_message_id = shown.component_message_id
        return payload

    def _interaction_place(
        self, channel: FakeChannel | int | None, guild: FakeGuild | int | None
    ) -> tuple[FakeChannel, FakeGuild | None]:
        if channel is not None:
            ch = self.channel(channel)
            g = self._guilds.get(ch.guild_id) if ch.guild_id else None
            return ch, g
        g = self.guild(guild)
        return self._default_channel(g), g

    def _interaction_base(
        self,
        itype: int,
        invoker: FakeUser,
        ch: FakeChannel,
        g: FakeGuild | None,
        locale: str,
    ) -> JSON:
        iid = self._new_id()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(120)
        payload: JSON = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "channel_id": str(ch.id),
            "channel": self.channel_payload(ch, for_user=invoker.id),
            "app_permissions": str(self.permissions_for(self.bot_user, ch)),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.attachment_size_limit,
        }
        if g is not None:
            member = g.members.get(invoker.id) or self.add_member(g, invoker)
            member_data = member.payload()
            member_data["permissions"] = str(self.permissions_for(invoker, ch))
            member_data["unusual_dm_activity_until"] = None
            payload.update(
                guild_id=str(g.id),
                guild={"id": str(g.id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member_data,
                authorizing_integration_owners={"0": str(g.id)},
                context=0,
            )
        else:
            payload.update(
                user=invoker.payload(),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        return payload

    def _register_interaction(
        self,
        payload: JSON,
        name: str,
        invoker: FakeUser,
        ch: FakeChannel,
        g: FakeGuild | None,
    ) -> InteractionState:
        state = InteractionState(
            id=int(payload["id"]),
            token=payload["token"],
            application_id=self.application_id,
            type=payload["type"],
            name=name,
            guild_id=g.id if g else None,
            channel_id=ch.id,
            user_id=invoker.id,
            created_at=self.now(),
            _fake=self,
        )
        self._interactions[state.id] = state
        self._interactions_by_token[state.token] = state
        return state

    def _command_definition(self, name: str, guild: FakeGuild | None) -> JSON | None:
        scopes: list[int | None] = [guild.id] if guild else []
        scopes.append(None)
        for scope in scopes:
            for cmd in self._commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        return None

    def _build_options(
        self,
        definition: JSON | None,
        options: Mapping[str, Any] | Sequence[JSON] | None,
        resolved: JSON,
        ch: FakeChannel,
        g: FakeGuild | None,
    ) -> list[JSON]:
        if options is None:
            return []
        if not isinstance(options, dict):
            return [dict(o) for o in options if isinstance(o, dict)]
        defs = {o["name"]: o for o in (definition or {}).get("options") or []}
        out: list[JSON] = []
        for name, value in options.items():
            declared = defs.get(name, {}).get("type")
            if isinstance(value, FakeAttachment):
                resolved.setdefault("attachments", {})[str(value.id)] = value.payload()
                out.append({"name": name, "type": 11, "value": str(value.id)})
            elif isinstance(value, FakeUser | FakeMember):
                user = self._user(value)
                resolved.setdefault("users", {})[str(user.id)] = user.payload()
                if g is not None and user.id in g.members:
                    member = g.members[user.id].payload(with_user=False)
                    member["permissions"] = str(self.permissions_for(user, ch))
                    resolved.setdefault("members", {})[str(user.id)] = member
                out.append({"name": name, "type": declared or 6, "value": str(user.id)})
            elif isinstance(value, FakeChannel):
                cdata = self.channel_payload(value, for_user=self.bot_user.id)
                resolved.setdefault("channels", {})[str(value.id)] = cdata
                out.append({"name": name, "type": 7, "value": str(value.id)})
            elif isinstance(value, FakeRole):
                resolved.setdefault("roles", {})[str(value.id)] = value.payload()
                out.append({"name": name, "type": declared or 8, "value": str(value.id)})
            elif declared in _OPTION_COERCE:
                out.append(
                    {"name": name, "type": declared, "value": _OPTION_COERCE[declared](value)}
                )
            elif isinstance(value, bool):
                out.append({"name": name, "type": 5, "value": value})
            elif isinstance(value, int):
                out.append({"name": name, "type": 4, "value": value})
            elif isinstance(value, float):
                out.append({"name": name, "type": 10, "value": value})
            else:
                out.append({"name": name, "type": declared or 3, "value": value})
        return out

    # ------------------------------------------------------------------ observation

    def message_view(self, message_id: int) -> MessageView | None:
        msg = self._messages.get(int(message_id))
        if msg is None or msg.deleted:
            return None
        return MessageView(
            id=msg.id,
            channel_id=msg.channel_id,
            content=msg.content,
            author_id=msg.author.id,
            author_name=msg.author.username,
            author_is_bot=msg.author.bot,
            edits=msg.edits,
            flags=msg.flags,
            allowed_mentions=copy.deepcopy(msg.allowed_mentions),
            mention_ids=tuple(msg.mention_ids),
            embeds=tuple(copy.deepcopy(msg.embeds)),
            attachments=tuple(a.payload() for a in msg.attachments),
            reference_id=int(msg.reference["message_id"])
            if msg.reference and msg.reference.get("message_id")
            else None,
            type=msg.type,
            created_at=msg.created_at,
            edited_at=msg.edited_at,
            webhook_id=msg.webhook_id,
            interaction_id=msg.interaction_id,
            thread_id=msg.thread_id,
            components=tuple(copy.deepcopy(msg.components)),
        )

    def messages(
        self, channel: FakeChannel | int, *, include_ephemeral: bool = True
    ) -> list[MessageView]:
        """Messages in a channel, oldest first, as people there see them (deleted ones gone)."""
        ch = self.channel(channel)
        views = [self.message_view(i) for i in ch.message_ids]
        return [v for v in views if v is not None and (include_ephemeral or not v.ephemeral)]

    def interaction_state(self, interaction: int | str | JSON) -> InteractionState:
        """State of an interaction, by id or by the INTERACTION_CREATE payload."""
        raw = interaction["id"] if isinstance(interaction, dict) else interaction
        return self._interactions[int(raw)]

    def calls_to(self, method: str | None = None, route: str | None = None) -> list[CallRecord]:
        """Calls filtered by method and spec route template (``/channels/{channel_id}/...``)."""
        return [
            c
            for c in self.calls
            if (method is None or c.method == method.upper())
            and (route is None or c.route == route)
        ]

    def write_times(
        self, channel: FakeChannel | int, kind: Literal["create", "edit", "delete"] | None = None
    ) -> list[float]:
        cid = self.channel(channel).id
        return [
            w.time for w in self.writes if w.channel_id == cid and (kind is None or w.kind == kind)
        ]

    # ------------------------------------------------------------------ fault injection

    def rate_limit(
        self,
        route_pattern: str,
        retry_after: float = 0.5,
        times: int | None = 1,
        global_: bool = False,
        *,
        scope: Literal["user", "global", "shared"] | None = None,
        via: bool = True,
    ) -> None:
        """Answer the next ``times`` matching requests (None = all) with 429.

        ``route_pattern`` is ``"[METHOD ]/path"`` relative to the API base; ``{name}`` or ``*``
        match one path segment, ``**`` anything. ``via=False`` leaves out ``Via: 1.1 google``
        (discord.py then treats the 429 as a Cloudflare ban and raises).
        """
        method, _, path = route_pattern.strip().rpartition(" ")
        pieces = []
        for segment in path.strip("/").split("/"):
            if segment == "**":
                pieces.append(".*")
            elif segment == "*" or (segment.startswith("{") and segment.endswith("}")):
                pieces.append("[^/]+")
            else:
                pieces.append(re.escape(segment))
        regex = re.compile("^/" + "/".join(pieces) + "$")
        self._rules.append(
            _RateLimitRule(
                method=method.upper() or None,
                regex=regex,
                retry_after=retry_after,
                remaining=times,
                global_=global_,
                scope=scope or ("global" if global_ else "user"),
                via=via,
            )
        )

    def clear_rate_limits(self) -> None:
        self._rules.clear()
        self._edit_budgets.clear()

    def limit_channel_edits(
        self,
        max_edits: int,
        per: float,
        *,
        channel: FakeChannel | int | None = None,
        retry_after: float | None = None,
        scope: Literal["user", "shared"] = "shared",
    ) -> None:
        """429 any message edit that would make a channel exceed ``max_edits`` per ``per`` s."""
        cid = None if channel is None else self.channel(channel).id
        self._edit_budgets.append(_EditBudget(cid, max_edits, per, retry_after, scope))

    def _check_edit_budget(self, channel_id: int) -> None:
        now = self.now()
        for budget in self._edit_budgets:
            if budget.channel_id not in (None, channel_id):
                continue
            recent = [
                w.time
                for w in self.writes
                if w.channel_id == channel_id and w.kind == "edit" and now - w.time < budget.per
            ]
            if len(recent) >= budget.max_edits:
                wait = budget.retry_after
                if wait is None:
                    wait = max(0.001, budget.per - (now - recent[-budget.max_edits]))
                raise _RateLimited(round(wait, 3), budget.scope)

    # ------------------------------------------------------------------ gateway control

    def sessions(self) -> list[JSON]:
        """Summary of gateway sessions: id, shard, intents, seq, connected, ready."""
        return [
            {
                "session_id": s.session_id,
                "shard": list(s.shard) if s.shard else None,
                "intents": s.intents,
                "seq": s.seq,
                "connected": s.conn is not None,
                "ready": s.ready,
                "invalid": s.invalid,
            }
            for s in self._sessions.values()
        ]

    def _live_sessions(self, shard_id: int | None = None) -> list[_Session]:
        return [
            s
            for s in self._sessions.values()
            if s.conn is not None and s.ready and (shard_id is None or s.shard_id == shard_id)
        ]

    async def disconnect(self, shard_id: int | None = None, code: int = 4000) -> None:
        """Close gateway connections (resumable with 4000) to exercise RESUME."""
        for session in self._live_sessions(shard_id):
            conn = session.conn
            session.conn = None
            if conn is not None:
                await conn.ws.close(code=code, message=b"fake disconnect")

    async def send_reconnect(self, shard_id: int | None = None) -> None:
        """Send op 7 RECONNECT."""
        for session in self._live_sessions(shard_id):
            if session.conn is not None:
                await session.conn.send({"op": OP_RECONNECT, "d": None})

    async def invalidate_session(
        self, shard_id: int | None = None, resumable: bool = False
    ) -> None:
        """Send op 9 INVALID_SESSION (``d`` = resumable); non-resumable kills the session."""
        for session in self._live_sessions(shard_id):
            if not resumable:
                session.invalid = True
            if session.conn is not None:
                await session.conn.send({"op": OP_INVALID_SESSION, "d": resumable})

    async def dispatch(self, event_name: str, data: JSON, *, shard_id: int | None = None) -> int:
        """Send a DISPATCH to every session that should get it; returns how many did.

        The shard comes from the guild id (``(guild_id >> 22) % num_shards``), DMs go to
        shard 0; intents filter events, and without MESSAGE_CONTENT message content is
        blanked as Discord does (unless the bot wrote it, is mentioned, or it is a DM).
        Disconnected but resumable sessions buffer the event for RESUME.
        """
        if event_name == "INTERACTION_CREATE":
            state = self._interactions.get(int(data["id"]))
            if state is not None and state.dispatched_at is None:
                state.dispatched_at = self.now()
        guild_id = self._event_guild_id(event_name, data)
        delivered = 0
        for session in list(self._sessions.values()):
            if session.invalid or not session.ready:
                continue
            if shard_id is not None and session.shard_id != shard_id:
                continue
            if guild_id is not None:
                if (guild_id >> 22) % session.shard_count != session.shard_id:
                    continue
            elif session.shard_id != 0 and (
                event_name == "INTERACTION_CREATE" or "channel_id" in data
            ):
                continue  # DMs and other guild-less channel events go to shard 0
            payload = self._filter_for_session(session, event_name, data, guild_id)
            if payload is None:
                continue
            await self._send_dispatch(session, event_name, payload)
            if session.conn is not None:
                delivered += 1
        return delivered

    def _event_guild_id(self, event_name: str, data: JSON) -> int | None:
        if event_name in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"):
            return int(data["id"])
        gid = data.get("guild_id")
        if gid is not None:
            return int(gid)
        cid = data.get("channel_id")
        if cid is not None and int(cid) in self._channels:
            return self._channels[int(cid)].guild_id
        return None

    def _filter_for_session(
        self, session: _Session, event_name: str, data: JSON, guild_id: int | None
    ) -> JSON | None:
        needed = _EVENT_INTENTS.get(event_name)
        if needed is not None:
            intent = needed[0] if guild_id is not None else needed[1]
            if intent and not session.intents & intent:
                return None
        if event_name in _CONTENT_EVENTS and not session.intents & Intent.MESSAGE_CONTENT:
            author = (data.get("author") or {}).get("id")
            mentioned = any(m.get("id") == str(self.bot_user.id) for m in data.get("mentions", []))
            if guild_id is not None and author != str(self.bot_user.id) and not mentioned:
                data = dict(data)
                data.update(content="", embeds=[], attachments=[], components=[])
                data.pop("poll", None)
        return data

    async def _send_dispatch(self, session: _Session, event_name: str, data: JSON) -> None:
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": event_name, "s": session.seq, "d": data}
        session.buffer.append(payload)
        del session.buffer[:-2000]
        if session.conn is not None:
            ok = await session.conn.send(payload)
            if not ok:
                session.conn = None
        self._notify()

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        query = dict(request.query)
        self.gateway_connections.append(GatewayConnectionRecord(request.path, query, self.now()))
        compress = query.get("compress")
        if query.get("v") != str(API_VERSION):
            await ws.close(code=4012, message=b"Invalid API version")
            return ws
        if query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"Decode error: only json encoding is faked")
            return ws
        if compress not in (None, "zlib-stream", "zstd-stream"):
            await ws.close(code=4000, message=b"Unknown compression")
            return ws
        try:
            conn = _GatewayConn(ws, compress)
        except ImportError:
            await ws.close(code=4000, message=b"zstd-stream needs the zstandard package")
            return ws
        self._conns.add(conn)
        try:
            await conn.send(
                {
                    "op": OP_HELLO,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake"]},
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    raw = msg.data
                elif msg.type == WSMsgType.BINARY:
                    raw = msg.data.decode("utf-8", "replace")
                else:
                    break
                try:
                    payload = json.loads(raw)
                    op = payload["op"]
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                self.gateway_received.append(payload)
                await self._on_gateway_op(conn, op, payload.get("d"))
                self._notify()
        finally:
            self._conns.discard(conn)
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            self._notify()
        return ws

    async def _on_gateway_op(self, conn: _GatewayConn, op: int, d: Any) -> None:
        if op == OP_HEARTBEAT:
            self.heartbeats += 1
            await conn.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            await self._on_identify(conn, d if isinstance(d, dict) else {})
        elif op == OP_RESUME:
            await self._on_resume(conn, d if isinstance(d, dict) else {})
        elif op == OP_PRESENCE_UPDATE:
            self.presence_updates.append(d)
        elif op == OP_REQUEST_GUILD_MEMBERS:
            await self._on_request_members(conn, d if isinstance(d, dict) else {})
        elif op == OP_VOICE_STATE_UPDATE:
            pass
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    async def _on_identify(self, conn: _GatewayConn, d: JSON) -> None:
        self.identifies.append(d)
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if d.get("token") not in (self.token, f"Bot {self.token}"):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = d.get("intents")
        if (
            not isinstance(intents, int)
            or isinstance(intents, bool)
            or not 0 <= intents <= ALL_INTENTS
        ):
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return
        allowed = PRIVILEGED_INTENTS if self.allowed_intents is None else self.allowed_intents
        if intents & PRIVILEGED_INTENTS & ~allowed:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = d.get("shard")
        shard_t: tuple[int, int] | None = None
        if shard is not None:
            if (
                not isinstance(shard, list)
                or len(shard) != 2
                or not all(isinstance(x, int) for x in shard)
                or not 0 <= shard[0] < shard[1]
            ):
                await conn.ws.close(code=4010, message=b"Invalid shard.")
                return
            shard_t = (shard[0], shard[1])
        if (shard_t[1] if shard_t else 1) < self.min_shards:
            await conn.ws.close(code=4011, message=b"Sharding required.")
            return
        session = _Session(
            session_id=uuid.uuid4().hex, shard=shard_t, intents=intents, identify=d, conn=conn
        )
        conn.session = session
        self._sessions[session.session_id] = session
        guilds = [
            g
            for g in self._guilds.values()
            if (g.id >> 22) % session.shard_count == session.shard_id
        ]
        ready: JSON = {
            "v": API_VERSION,
            "user_settings": {},
            "user": self._me_payload(),
            "session_type": "normal",
            "session_id": session.session_id,
            "resume_gateway_url": self.resume_gateway_url,
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"],
            "auth": {},
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "_trace": ['["fake-discord-gateway",{"micros":0}]'],
        }
        if shard_t is not None:
            ready["shard"] = list(shard_t)
        await self._send_dispatch(session, "READY", ready)
        for guild in guilds:
            await self._send_dispatch(
                session, "GUILD_CREATE", self.guild_payload(guild, intents=intents)
            )
        session.ready = True
        self._notify()

    async def _on_resume(self, conn: _GatewayConn, d: JSON) -> None:
        self.resumes.append(d)
        session = self._sessions.get(str(d.get("session_id")))
        if d.get("token") not in (self.token, f"Bot {self.token}"):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        seq = d.get("seq")
        if (
            session is None
            or session.invalid
            or not isinstance(seq, int)
            or seq > session.seq
            or (session.buffer and seq < session.buffer[0]["s"] - 1)
        ):
            await conn.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        old = session.conn
        session.conn = conn
        conn.session = session
        if old is not None and old is not conn:
            with contextlib.suppress(Exception):
                await old.ws.close(code=4000)
        for payload in [p for p in session.buffer if p["s"] > seq]:
            await conn.send(payload)
        await self._send_dispatch(session, "RESUMED", {"_trace": ["fake-discord-gateway"]})

    async def _on_request_members(self, conn: _GatewayConn, d: JSON) -> None:
        session = conn.session
        if session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
            return
        guild = self._guilds.get(int(d.get("guild_id", 0)))
        if guild is None:
            return
        user_ids = d.get("user_ids")
        if user_ids is None and not session.intents & Intent.GUILD_MEMBERS:
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return
        members = list(guild.members.values())
        not_found: list[str] = []
        if user_ids is not None:
            ids = [int(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])]
            not_found = [str(u) for u in ids if u not in guild.members]
            members = [m for m in members if m.user.id in ids]
        else:
            query = str(d.get("query", "")).lower()
            members = [m for m in members if m.user.username.lower().startswith(query)]
            limit = int(d.get("limit") or 0)
            if limit:
                members = members[:limit]
        chunk: JSON = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": not_found,
        }
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        if d.get("presences"):
            chunk["presences"] = []
        await self._send_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    def _application_flags(self) -> int:
        allowed = PRIVILEGED_INTENTS if self.allowed_intents is None else self.allowed_intents
        flags = 0
        if allowed & Intent.GUILD_PRESENCES:
            flags |= APP_FLAG_GATEWAY_PRESENCE
        if allowed & Intent.GUILD_MEMBERS:
            flags |= APP_FLAG_GATEWAY_GUILD_MEMBERS
        if allowed & Intent.MESSAGE_CONTENT:
            flags |= APP_FLAG_GATEWAY_MESSAGE_CONTENT
        return flags

    def _me_payload(self) -> JSON:
        data = self.bot_user.payload()
        data.update(mfa_enabled=False, locale="en-US", verified=True, email=None, premium_type=0)
        return data

    # ------------------------------------------------------------------ storage

    def _store_message(
        self,
        ch: FakeChannel,
        msg: _StoredMessage,
        via: Literal["channel", "interaction", "webhook", "seed", "user"],
    ) -> None:
        self._messages[msg.id] = msg
        if not ch.message_ids or msg.id > ch.message_ids[-1]:
            ch.message_ids.append(msg.id)
        else:
            bisect.insort(ch.message_ids, msg.id)
        if ch.is_thread and not msg.ephemeral:
            ch.total_message_sent += 1
        self.writes.append(WriteRecord(msg.created_at, ch.id, msg.id, "create", via))
        self._notify()

    def _visible_ids(self, ch: FakeChannel) -> list[int]:
        out = []
        for mid in ch.message_ids:
            msg = self._messages[mid]
            if not msg.deleted and not msg.ephemeral:
                out.append(mid)
        return out

    def _parse_user_mentions(self, content: str) -> list[int]:
        out: list[int] = []
        for match in re.finditer(r"<@!?(\d+)>", content):
            uid = int(match.group(1))
            if uid in self._users and uid not in out:
                out.append(uid)
        return out

    def _apply_mentions(
        self,
        msg: _StoredMessage,
        allowed: JSON | None,
        *,
        default_replied: bool = True,
    ) -> None:
        """Fill mentions from content as Discord does, limited by ``allowed_mentions``."""
        users = self._parse_user_mentions(msg.content)
        roles = [int(r) for r in re.findall(r"<@&(\d+)>", msg.content)]
        everyone = "@everyone" in msg.content or "@here" in msg.content
        replied = default_replied
        if allowed is not None:
            parse = set(allowed.get("parse") or [])
            allowed_users = {int(u) for u in allowed.get("users") or [] if u is not None}
            allowed_roles = {int(r) for r in allowed.get("roles") or [] if r is not None}
            if "users" not in parse:
                users = [u for u in users if u in allowed_users]
            if "roles" not in parse:
                roles = [r for r in roles if r in allowed_roles]
            everyone = everyone and "everyone" in parse
            replied = bool(allowed.get("replied_user", False))
        if msg.reference and replied:
            ref = self._messages.get(int(msg.reference["message_id"]))
            if ref is not None and ref.author.id not in users:
                users.append(ref.author.id)
        if everyone and msg.guild_id is not None and msg.webhook_id is None:
            ch = self._channels[msg.channel_id]
            everyone = bool(self.permissions_for(msg.author, ch) & Perm.MENTION_EVERYONE)
        msg.mention_ids = users
        msg.mention_role_ids = roles
        msg.mention_everyone = everyone

    @staticmethod
    def _check_allowed_mentions(allowed: Any, path: Sequence[str | int]) -> None:
        if not isinstance(allowed, dict):
            return
        parse = allowed.get("parse") or []
        for key in ("users", "roles"):
            if key in parse and allowed.get(key):
                raise _form_error(
                    [*path, "allowed_mentions"],
                    "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    f'parse:["{key}"] and {key}: [ids] are mutually exclusive.',
                )

    @staticmethod
    def _check_content(content: Any, path: Sequence[str | int]) -> None:
        if isinstance(content, str) and len(content) > MAX_CONTENT_LENGTH:
            raise _form_error(
                [*path, "content"],
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MAX_CONTENT_LENGTH} or fewer in length.",
            )

    @staticmethod
    def _normalize_components(components: Any) -> list[JSON]:
        if not isinstance(components, list):
            return []
        counter = itertools.count(1)

        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                node = {k: walk(v) for k, v in node.items()}
                if "type" in node and "id" not in node:
                    node["id"] = next(counter)
                return node
            if isinstance(node, list):
                return [walk(x) for x in node]
            return node

        return [walk(c) for c in components]

    @staticmethod
    def _normalize_embeds(embeds: Any) -> list[JSON]:
        if not isinstance(embeds, list):
            return []
        out = []
        for embed in embeds:
            if isinstance(embed, dict):
                e = {k: v for k, v in embed.items() if v is not None}
                e.setdefault("type", "rich")
                out.append(e)
        return out

    def _attachments_from_request(
        self,
        channel_id: int,
        body: JSON,
        files: list[tuple[str, str, bytes, str]],
        keep: list[FakeAttachment],
    ) -> list[FakeAttachment]:
        """New attachments from multipart ``files[n]`` plus kept existing ones (by id)."""
        by_field = {name: (filename, data, ctype) for name, filename, data, ctype in files}
        result: list[FakeAttachment] = []
        meta = body.get("attachments")
        if isinstance(meta, list):
            existing = {a.id: a for a in keep}
            for item in meta:
                if not isinstance(item, dict):
                    continue
                key = f"files[{item.get('id')}]"
                if key in by_field:
                    filename, data, ctype = by_field.pop(key)
                    result.append(
                        self._new_attachment(
                            channel_id,
                            item.get("filename") or filename,
                            data,
                            ctype,
                            item.get("description"),
                        )
                    )
                elif str(item.get("id", "")).isdigit() and int(item["id"]) in existing:
                    result.append(existing[int(item["id"])])
        elif keep:
            result.extend(keep)
        for _key, (filename, data, ctype) in by_field.items():
            result.append(self._new_attachment(channel_id, filename, data, ctype, None))
        total = sum(a.size for a in result if a not in keep)
        if total > self.attachment_size_limit:
            raise _ApiError(413, 40005, "Request entity too large")
        return result

    async def _emit_message(self, event: str, msg: _StoredMessage) -> None:
        if msg.ephemeral or not self.echo_bot_messages:
            return
        if event == "MESSAGE_DELETE":
            data: JSON = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id is not None:
                data["guild_id"] = str(msg.guild_id)
        else:
            data = self._message_payload(msg, gateway=True)
        await self.dispatch(event, data)

    # ------------------------------------------------------------------ HTTP plumbing

    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        api = API_PREFIX
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/gateway", self._h_gateway),
            ("GET", "/gateway/bot", self._h_gateway_bot),
            ("GET", "/users/@me", self._h_me),
            ("GET", "/oauth2/applications/@me", self._h_application),
            ("GET", "/applications/{application_id}/commands", self._h_get_commands),
            ("PUT", "/applications/{application_id}/commands", self._h_put_commands),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._h_get_commands,
            ),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._h_put_commands,
            ),
            (
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                self._h_interaction_callback,
            ),
            ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", self._h_wh_get),
            ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", self._h_wh_edit),
            (
                "DELETE",
                "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
                self._h_wh_delete,
            ),
            ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", self._h_wh_get),
            (
                "PATCH",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self._h_wh_edit,
            ),
            (
                "DELETE",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self._h_wh_delete,
            ),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}", self._h_wh_execute),
            ("GET", "/channels/{channel_id}", self._h_get_channel),
            ("GET", "/channels/{channel_id}/messages", self._h_list_messages),
            ("POST", "/channels/{channel_id}/messages", self._h_create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._h_get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._h_edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._h_delete_message),
            (
                "POST",
                "/channels/{channel_id}/messages/{message_id}/threads",
                self._h_thread_from_message,
            ),
            ("POST", "/channels/{channel_id}/threads", self._h_thread_without_message),
            ("POST", "/channels/{channel_id}/typing", self._h_typing),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._h_get_member),
        ]
        for method, path, handler in routes:
            r.add_route(method, api + path, handler)
        r.add_route("*", api + "/{tail:.*}", self._h_not_found)
        for prefix in ("attachments", "ephemeral-attachments"):
            r.add_get(f"/{prefix}/{{scope}}/{{attachment_id}}/{{filename}}", self._h_attachment)
        r.add_get("/gateway", self._gateway_handler)
        r.add_get("/gateway/", self._gateway_handler)
        r.add_get("/gateway/resume", self._gateway_handler)

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        # exactly "application/json", as Discord sends it (discord.py compares the header verbatim)
        resp = web.Response(
            body=json.dumps(body).encode(),
            status=status,
            headers={"Content-Type": "application/json"},
        )
        resp[_BODY_KEY] = body
        return resp

    @staticmethod
    def _no_content() -> web.Response:
        resp = web.Response(status=204)
        resp[_BODY_KEY] = None
        return resp

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        rel = request.path[len(API_PREFIX) :]
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else None
        route: str | None = None
        if canonical and "{tail" not in canonical:
            route = canonical[len(API_PREFIX) :]
        record = CallRecord(
            method=request.method,
            path=rel,
            route=route,
            query=dict(request.query),
            time=self.now(),
        )
        self.calls.append(record)
        bucket: _Bucket | None = None
        try:
            if route is None:
                self.unhandled_calls.append(record)
                return await self._finish(record, None, await handler(request))
            record.authorized = request.headers.get("Authorization") == f"Bot {self.token}"
            if self._needs_auth(route) and not record.authorized:
                raise _ApiError(401, 0, "401: Unauthorized")
            body, files = await self._read_body(request)
            record.json = body
            record.files = [(name, filename, len(data)) for name, filename, data, _ in files]
            bucket = self._take_bucket(request.method, route, request.match_info)
            self._check_injected(request.method, rel)
            if self.validate_requests and body is not None:
                errors = get_spec_validator(self._spec_path).request_errors(
                    request.method, route, body
                )
                if errors:
                    self.spec_errors.extend(errors)
                    tree: JSON = {}
                    for err in errors:
                        path = err.location.split(".") if err.location else []
                        code = _SPEC_KEYWORD_CODES.get(err.keyword, "SPEC_VALIDATION_FAILED")
                        _merge_trees(tree, _form_error(path, code, err.message).errors or {})
                    raise _ApiError(400, 50035, "Invalid Form Body", tree)
            if isinstance(body, dict):
                _check_interactive(body)
            request[_REQ_BODY] = body
            request[_REQ_FILES] = files
            response = await handler(request)
        except _ApiError as exc:
            response = self._json(exc.payload(), exc.status)
        except _RateLimited as exc:
            response = self._rate_limited_response(exc, exc.bucket or bucket, via=True)
        except _InjectedRateLimit as exc:
            response = self._rate_limited_response(
                _RateLimited(exc.rule.retry_after, exc.rule.scope, exc.rule.global_),
                bucket,
                via=exc.rule.via,
            )
        return await self._finish(record, bucket, response)

    async def _finish(
        self, record: CallRecord, bucket: _Bucket | None, response: web.StreamResponse
    ) -> web.StreamResponse:
        if bucket is not None and response.status != 429:
            now = self.now()
            reset_after = max(0.0, bucket.reset_at - now)
            response.headers["X-RateLimit-Limit"] = str(bucket.limit)
            response.headers["X-RateLimit-Remaining"] = str(max(0, bucket.limit - bucket.count))
            response.headers["X-RateLimit-Reset"] = f"{bucket.reset_at:.3f}"
            response.headers["X-RateLimit-Reset-After"] = f"{reset_after:.3f}"
            response.headers["X-RateLimit-Bucket"] = bucket.bucket_hash
        if record.status is None:
            record.status = response.status
            record.response_headers = dict(response.headers)
            record.response = response.get(_BODY_KEY)
            if record.response is None and response.status >= 400:
                text = getattr(response, "text", None)
                if isinstance(text, str):
                    with contextlib.suppress(ValueError):
                        record.response = json.loads(text)
        self._notify()
        return response

    @staticmethod
    def _needs_auth(route: str) -> bool:
        # spec: security [{}, {BotToken}] (token optional) for these
        return not (
            route == "/gateway"
            or route.startswith("/interactions/")
            or route.startswith("/webhooks/{webhook_id}/{webhook_token}")
        )

    async def _read_body(
        self, request: web.Request
    ) -> tuple[Any, list[tuple[str, str, bytes, str]]]:
        files: list[tuple[str, str, bytes, str]] = []
        if request.method in ("GET", "HEAD") or not request.can_read_body:
            return None, files
        ctype = request.content_type
        if ctype == "multipart/form-data":
            body: Any = None
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = getattr(part, "name", None) or ""
                data = await part.read()  # type: ignore[union-attr]
                if name == "payload_json":
                    try:
                        body = json.loads(bytes(data))
                    except ValueError as exc:
                        raise _ApiError(
                            400, 50109, "The request body contains invalid JSON."
                        ) from exc
                else:
                    filename = getattr(part, "filename", None) or name
                    ctype_part = part.headers.get("Content-Type", "application/octet-stream")
                    files.append((name, filename, bytes(data), ctype_part))
            return body, files
        raw = await request.read()
        if not raw:
            return None, files
        try:
            return json.loads(raw), files
        except ValueError as exc:
            raise _ApiError(400, 50109, "The request body contains invalid JSON.") from exc

    def _check_injected(self, method: str, rel: str) -> None:
        for rule in self._rules:
            if rule.remaining is not None and rule.remaining <= 0:
                continue
            if rule.method and rule.method != method:
                continue
            if not rule.regex.match(rel):
                continue
            rule.hits += 1
            if rule.remaining is not None:
                rule.remaining -= 1
            raise _InjectedRateLimit(rule)

    def _take_bucket(self, method: str, route: str, match: Mapping[str, str]) -> _Bucket:
        key = f"{method} {route}"
        limit, per = self._bucket_limits.get(key, self._default_bucket_limit)
        major = "+".join(
            match[k]
            for k in ("channel_id", "guild_id", "webhook_id", "webhook_token", "interaction_id")
            if k in match
        )
        bucket = self._buckets.get((key, major))
        now = self.now()
        if bucket is None:
            digest = hashlib.sha256(key.encode()).hexdigest()[:32]
            bucket = _Bucket(limit=limit, per=per, bucket_hash=digest)
            self._buckets[(key, major)] = bucket
        if now >= bucket.reset_at:
            bucket.count = 0
            bucket.reset_at = now + bucket.per
        if bucket.count >= bucket.limit and self.enforce_bucket_limits:
            raise _RateLimited(round(bucket.reset_at - now, 3), "user", bucket=bucket)
        bucket.count += 1
        return bucket

    def _rate_limited_response(
        self, exc: _RateLimited, bucket: _Bucket | None, *, via: bool
    ) -> web.Response:
        body = {
            "message": "You are being rate limited.",
            "retry_after": exc.retry_after,
            "global": exc.global_,
        }
        resp = self._json(body, 429)
        resp.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        resp.headers["X-RateLimit-Scope"] = exc.scope
        if exc.global_:
            resp.headers["X-RateLimit-Global"] = "true"
        elif bucket is not None:
            resp.headers["X-RateLimit-Limit"] = str(bucket.limit)
            resp.headers["X-RateLimit-Remaining"] = "0"
            resp.headers["X-RateLimit-Reset"] = f"{self.now() + exc.retry_after:.3f}"
            resp.headers["X-RateLimit-Reset-After"] = f"{exc.retry_after:.3f}"
            resp.headers["X-RateLimit-Bucket"] = bucket.bucket_hash
        if via:
            resp.headers["Via"] = "1.1 google"
        return resp

    # ------------------------------------------------------------------ handlers: misc

    async def _h_not_found(self, request: web.Request) -> web.StreamResponse:
        return self._json({"message": "404: Not Found", "code": 0}, 404)

    async def _h_gateway(self, request: web.Request) -> web.StreamResponse:
        return self._json({"url": self.gateway_url})

    async def _h_gateway_bot(self, request: web.Request) -> web.StreamResponse:
        return self._json(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": max(0, 1000 - len(self.identifies)),
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _h_me(self, request: web.Request) -> web.StreamResponse:
        return self._json(self._me_payload())

    async def _h_application(self, request: web.Request) -> web.StreamResponse:
        return self._json(
            {
                "id": str(self.application_id),
                "name": self.bot_user.username,
                "icon": None,
                "description": "",
                "type": None,
                "bot": self.bot_user.payload(),
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": hashlib.sha256(str(self.application_id).encode()).hexdigest(),
                "flags": self._application_flags(),
                "flags_new": str(self._application_flags()),
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "owner": self.app_owner.payload(),
                "approximate_guild_count": len(self._guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "team": None,
                "eligible_oauth2_scopes": [],
                "rpc_origins": [],
                "tags": [],
                "integration_types_config": {"0": {}},
            }
        )

    async def _h_attachment(self, request: web.Request) -> web.StreamResponse:
        try:
            att = self._attachments[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            return web.Response(status=404, text="Not Found")
        if att.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        if att.id in self._stalled_attachments:
            return await self._stalled_attachment(request, att)
        return web.Response(body=att.data, content_type=att.content_type.split(";")[0])

    def stall_attachment(self, attachment_id: int, stall: float = 60.0, sent: int = 0) -> None:
        """Downloads of this attachment from the CDN stall: the status line and headers
        (with the full ``Content-Length``) and its first ``sent`` bytes go out, then
        nothing for ``stall`` seconds (or until the client hangs up or the fake stops),
        then the rest."""
        self._stalled_attachments[attachment_id] = (stall, sent)

    async def _stalled_attachment(
        self, request: web.Request, att: FakeAttachment
    ) -> web.StreamResponse:
        stall, sent = self._stalled_attachments[att.id]
        response = web.StreamResponse()
        response.content_type = att.content_type.split(";")[0]
        response.content_length = len(att.data)
        await response.prepare(request)
        head = att.data[: max(0, min(sent, len(att.data) - 1))]
        if head:
            await response.write(head)
        ends = time.monotonic() + stall
        while time.monotonic() < ends and not self._closing:
            transport = request.transport
            if transport is None or transport.is_closing():
                return response
            await asyncio.sleep(0.05)
        with contextlib.suppress(ConnectionError):
            await response.write(att.data[len(head) :])
            await response.write_eof()
        return response

    # ------------------------------------------------------------------ handlers: commands

    def _command_scope(self, request: web.Request) -> int | None:
        if request.match_info["application_id"] != str(self.application_id):
            raise _ApiError(
                403, 20012, "You are not authorized to perform this action on this application"
            )
        gid = request.match_info.get("guild_id")
        if gid is None:
            return None
        guild = self._guilds.get(int(gid)) if gid.isdigit() else None
        if guild is None:
            raise _ApiError(403, 50001, "Missing Access")
        return guild.id

    async def _h_get_commands(self, request: web.Request) -> web.StreamResponse:
        scope = self._command_scope(request)
        return self._json(copy.deepcopy(self._commands.get(scope, [])))

    async def _h_put_commands(self, request: web.Request) -> web.StreamResponse:
        scope = self._command_scope(request)
        body = request[_REQ_BODY]
        if not isinstance(body, list):
            raise _form_error([], "BASE_TYPE_ARRAY", "Must be an array.")
        existing = {(c["name"], c.get("type", 1)): c for c in self._commands.get(scope, [])}
        seen: set[tuple[str, int]] = set()
        result = []
        version = str(self._new_id())
        for index, item in enumerate(body):
            ctype = int(item.get("type") or 1)
            key = (item["name"], ctype)
            if key in seen:
                raise _form_error(
                    [index, "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    f"Application command names must be unique ({item['name']})",
                )
            seen.add(key)
            old = existing.get(key)
            perms = item.get("default_member_permissions")
            cmd: JSON = {
                "id": old["id"] if old else str(self._new_id()),
                "application_id": str(self.application_id),
                "version": version,
                "default_member_permissions": None if perms is None else str(perms),
                "type": ctype,
                "name": item["name"],
                "name_localizations": item.get("name_localizations"),
                "description": item.get("description") or "",
                "description_localizations": item.get("description_localizations"),
                "dm_permission": bool(item.get("dm_permission", True)),
                "nsfw": bool(item.get("nsfw", False)),
                "integration_types": item.get("integration_types") or [0],
                "contexts": item.get("contexts"),
            }
            if item.get("options"):
                cmd["options"] = self._command_options(item["options"])
            if scope is not None:
                cmd["guild_id"] = str(scope)
            result.append(cmd)
        self._commands[scope] = result
        self.command_syncs.append(
            CommandSync(self.now(), scope, [c["name"] for c in result], copy.deepcopy(body))
        )
        return self._json(copy.deepcopy(result))

    @classmethod
    def _command_options(cls, options: list[JSON]) -> list[JSON]:
        out = []
        for opt in options:
            o = {k: v for k, v in opt.items() if v is not None}
            if "options" in o:
                o["options"] = cls._command_options(o["options"])
            if o.get("type") not in (1, 2):
                o.setdefault("required", False)
            out.append(o)
        return out

    # ------------------------------------------------------------------ handlers: channels

    def _channel_param(self, request: web.Request) -> FakeChannel:
        raw = request.match_info["channel_id"]
        ch = self._channels.get(int(raw)) if raw.isdigit() else None
        if ch is None:
            raise _ApiError(404, 10003, "Unknown Channel")
        return ch

    def _message_param(self, ch: FakeChannel, raw: str) -> _StoredMessage:
        msg = self._messages.get(int(raw)) if raw.isdigit() else None
        if msg is None or msg.deleted or msg.channel_id != ch.id or msg.ephemeral:
            raise _ApiError(404, 10008, "Unknown Message")
        return msg

    async def _h_get_channel(self, request: web.Request) -> web.StreamResponse:
        ch = self._channel_param(request)
        self._require(ch, 0)
        return self._json(self.channel_payload(ch))

    async def _h_list_messages(self, request: web.Request) -> web.StreamResponse:
        ch = self._channel_param(request)
        self._require(ch, 0)
        query = request.query
        try:
            limit = int(query.get("limit", "50"))
        except ValueError as exc:
            raise _form_error(["limit"], "NUMBER_TYPE_COERCE", "Value is not int.") from exc
        if limit < 1:
            raise _form_error(
                ["limit"], "NUMBER_TYPE_MIN", "int value should be greater than or equal to 1."
            )
        if limit > 100:
            raise _form_error(
                ["limit"], "NUMBER_TYPE_MAX", "int value should be less than or equal to 100."
            )
        for key in ("before", "after", "around"):
            if key in query and not query[key].isdigit():
                raise _form_error(
                    [key], "NUMBER_TYPE_COERCE", f'Value "{query[key]}" is not snowflake.'
                )
        perms = self.permissions_for(self.bot_user, ch)
        if not perms & Perm.READ_MESSAGE_HISTORY:
            return self._json([])  # Discord: no messages without READ_MESSAGE_HISTORY
        ids = self._visible_ids(ch)
        if "around" in query:
            pivot = int(query["around"])
            pos = bisect.bisect_left(ids, pivot)
            older = ids[max(0, pos - limit // 2) : pos]
            newer = ids[pos : pos + (limit - len(older))]
            picked = older + newer
        elif "before" in query:
            pos = bisect.bisect_left(ids, int(query["before"]))
            picked = ids[max(0, pos - limit) : pos]
        elif "after" in query:
            pos = bisect.bisect_right(ids, int(query["after"]))
            picked = ids[pos : pos + limit]
        else:
            picked = ids[-limit:]
        return self._json([self._message_payload(self._messages[i]) for i in reversed(picked)])

    async def _h_get_message(self, request: web.Request) -> web.StreamResponse:
        ch = self._channel_param(request)
        self._require(ch, Perm.READ_MESSAGE_HISTORY)
        msg = self._message_param(ch, request.match_info["message_id"])
        return self._json(self._message_payload(msg))

    async def _h_create_message(self, request: web.Request) -> web.StreamResponse:
        ch = self._channel_param(request)
        if ch.type not in TEXT_LIKE_TYPES:
            raise _ApiError(400, 50008, "Cannot send messages in a non-text channel")
        body: JSON = request[_REQ_BODY] or {}
        files: list[tuple[str, str, bytes, str]] = request[_REQ_FILES]
        if ch.guild_id is not None:
            self._require(ch, Perm.SEND_MESSAGES_IN_THREADS if ch.is_thread else Perm.SEND_MESSAGES)
            if ch.is_thread and ch.locked:
                raise _ApiError(403, 50083, "Thread is archived")
            if files and not self.permissions_for(self.bot_user, ch) & Perm.ATTACH_FILES:
                raise _ApiError(403, 50013, "Missing Permissions")
        self._check_content(body.get("content"), [])
        self._check_allowed_mentions(body.get("allowed_mentions"), [])
        if not any(
            [
                body.get("content"),
                body.get("embeds"),
                files,
                body.get("sticker_ids"),
                body.get("components"),
                body.get("poll"),
            ]
        ):
            raise _ApiError(400, 50006, "Cannot send an empty message")
        nonce = body.get("nonce")
        if body.get("enforce_nonce") and nonce is not None:
            prior = self._nonces.get((ch.id, self.bot_user.id, str(nonce)))
            if prior is not None and not self._messages[prior].deleted:
                return self._json(self._message_payload(self._messages[prior]))
        reference = None
        ref_body = body.get("message_reference")
        if isinstance(ref_body, dict) and ref_body.get("message_id") is not None:
            ref_channel = self._channels.get(int(ref_body.get("channel_id") or ch.id))
            ref_msg = self._messages.get(int(ref_body["message_id"]))
            if (
                ref_msg is None
                or ref_msg.deleted
                or ref_channel is None
                or ref_msg.channel_id != ref_channel.id
            ):
                if ref_body.get("fail_if_not_exists", True):
                    raise _form_error(
                        ["message_reference"],
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                        "Unknown message",
                    )
            else:
                if ch.guild_id is not None and not (
                    self.permissions_for(self.bot_user, ch) & Perm.READ_MESSAGE_HISTORY
                ):
                    raise _ApiError(
                        403, 160002, "Cannot reply without permission to read message history"
                    )
                reference = self._reference_payload(ref_channel, ref_msg.id)
        msg = _StoredMessage(
            id=self._new_id(),
            channel_id=ch.id,
            guild_id=ch.guild_id,
            author=self.bot_user,
            content=body.get("content") or "",
            created_at=0.0,
            type=MT_REPLY if reference else MT_DEFAULT,
            flags=int(body.get("flags") or 0)
            & (MF_SUPPRESS_EMBEDS | MF_SUPPRESS_NOTIFICATIONS | MF_IS_COMPONENTS_V2),
            tts=bool(body.get("tts")),
            embeds=self._normalize_embeds(body.get("embeds")),
            components=self._normalize_components(body.get("components")),
            allowed_mentions=copy.deepcopy(body.get("allowed_mentions")),
            reference=reference,
            nonce=nonce,
            poll=body.get("poll"),
        )
        msg.created_at = snowflake_time(msg.id)
        msg.attachments = self._attachments_from_request(ch.id, body, files, [])
        self._apply_mentions(msg, msg.allowed_mentions)
        if nonce is not None:
            self._nonces[(ch.id, self.bot_user.id, str(nonce))] = msg.id
        self._store_message(ch, msg, via="channel")
        await self._emit_message("MESSAGE_CREATE", msg)
        return self._json(self._message_payload(msg))

    def _edit_stored(
        self,
        msg: _StoredMessage,
        body: JSON,
        files: list[tuple[str, str, bytes, str]],
        via: Literal["channel", "interaction", "webhook"] = "channel",
    ) -> None:
        self._check_edit_budget(msg.channel_id)
        if "content" in body:
            msg.content = body["content"] or ""
        if "embeds" in body:
            msg.embeds = self._normalize_embeds(body["embeds"])
        if "components" in body:
            msg.components = self._normalize_components(body["components"])
        if "flags" in body and body["flags"] is not None:
            keep = msg.flags & (MF_EPHEMERAL | MF_HAS_THREAD)
            msg.flags = keep | (int(body["flags"]) & (MF_SUPPRESS_EMBEDS | MF_IS_COMPONENTS_V2))
        if "attachments" in body or files:
            msg.attachments = self._attachments_from_request(
                msg.channel_id, body, files, msg.attachments
            )
        if "allowed_mentions" in body:
            msg.allowed_mentions = copy.deepcopy(body["allowed_mentions"])
        msg.flags &= ~MF_LOADING
        self._apply_mentions(msg, msg.allowed_mentions, default_replied=False)
        msg.edits += 1
        msg.edited_at = self.now()
        self.writes.append(WriteRecord(msg.edited_at, msg.channel_id, msg.id, "edit", via))

    async def _h_edit_message(self, request: web.Request) -> web.StreamResponse:
        ch = self._channel_param(request)
        self._require(ch, 0)
        msg = self._message_param(ch, request.match_info["message_id"])
        body: JSON = request[_REQ_BODY] or {}
        if msg.author.id != self.bot_user.id or msg.webhook_id is not None:
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._check_content(body.get("content"), [])
        self._check_allowed_mentions(body.get("allowed_mentions"), [])
        self._edit_stored(msg, body, request[_REQ_FILES])
        await self._emit_message("MESSAGE_UPDATE", msg)
        return self._json(self._message_payload(msg))

    async def _h_delete_message(self, request: web.Request) -> web.StreamResponse:
        ch = self._channel_param(request)
        self._require(ch, 0)
        msg = self._message_param(ch, request.match_info["message_id"])
        if msg.author.id != self.bot_user.id:
            self._require(ch, Perm.MANAGE_MESSAGES)
        await self._delete_stored(msg, "channel")
        return self._no_content()

    async def _delete_stored(
        self, msg: _StoredMessage, via: Literal["channel", "interaction", "webhook"]
    ) -> None:
        msg.deleted = True
        self.writes.append(WriteRecord(self.now(), msg.channel_id, msg.id, "delete", via))
        await self._emit_message("MESSAGE_DELETE", msg)

    async def _h_typing(self, request: web.Request) -> web.StreamResponse:
        ch = self._channel_param(request)
        if ch.guild_id is not None:
            self._require(ch, Perm.SEND_MESSAGES_IN_THREADS if ch.is_thread else Perm.SEND_MESSAGES)
        self.typing.append((self.now(), ch.id))
        return self._no_content()

    async def _h_get_member(self, request: web.Request) -> web.StreamResponse:
        gid = request.match_info["guild_id"]
        guild = self._guilds.get(int(gid)) if gid.isdigit() else None
        if guild is None:
            raise _ApiError(404, 10004, "Unknown Guild")
        uid = request.match_info["user_id"]
        member = guild.members.get(int(uid)) if uid.isdigit() else None
        if member is None:
            raise _ApiError(404, 10007, "Unknown Member")
        return self._json(member.payload())

    # ------------------------------------------------------------------ handlers: threads

    def _new_thread(
        self, parent: FakeChannel, name: str, ttype: int, body: JSON, thread_id: int | None = None
    ) -> FakeChannel:
        assert parent.guild_id is not None
        guild = self._guilds[parent.guild_id]
        tid = thread_id or self._new_id()
        thread = FakeChannel(
            id=tid,
            type=ttype,
            name=name,
            guild_id=guild.id,
            parent_id=parent.id,
            owner_id=self.bot_user.id,
            auto_archive_duration=int(body.get("auto_archive_duration") or 4320),
            invitable=bool(body.get("invitable", True)),
            created_at=self.now(),
            thread_member_ids={self.bot_user.id},
        )
        self._channels[tid] = thread
        guild.channel_ids.append(tid)
        self.threads.append(thread)
        return thread

    async def _emit_thread_create(self, thread: FakeChannel) -> None:
        data = self.channel_payload(thread)
        data["newly_created"] = True
        await self.dispatch("THREAD_CREATE", data)

    async def _h_thread_from_message(self, request: web.Request) -> web.StreamResponse:
        parent = self._channel_param(request)
        if parent.type not in (ChannelType.GUILD_TEXT, ChannelType.GUILD_ANNOUNCEMENT):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        self._require(parent, Perm.CREATE_PUBLIC_THREADS)
        msg = self._message_param(parent, request.match_info["message_id"])
        if msg.thread_id is not None:
            raise _ApiError(400, 160004, "A thread has already been created for this message")
        body: JSON = request[_REQ_BODY] or {}
        ttype = (
            ChannelType.ANNOUNCEMENT_THREAD
            if parent.type == ChannelType.GUILD_ANNOUNCEMENT
            else ChannelType.PUBLIC_THREAD
        )
        thread = self._new_thread(
            parent, str(body.get("name") or ""), ttype, body, thread_id=msg.id
        )
        thread.starter_message_id = msg.id
        msg.thread_id = thread.id
        msg.flags |= MF_HAS_THREAD
        await self._emit_thread_create(thread)
        return self._json(self.channel_payload(thread), 201)

    async def _h_thread_without_message(self, request: web.Request) -> web.StreamResponse:
        parent = self._channel_param(request)
        body: JSON = request[_REQ_BODY] or {}
        if parent.type == ChannelType.GUILD_FORUM:
            self._require(parent, Perm.SEND_MESSAGES)
            starter = body.get("message")
            if not isinstance(starter, dict):
                raise _form_error(["message"], "BASE_TYPE_REQUIRED", "This field is required")
            self._check_content(starter.get("content"), ["message"])
            thread = self._new_thread(
                parent, str(body.get("name") or ""), ChannelType.PUBLIC_THREAD, body
            )
            first = _StoredMessage(
                id=thread.id,
                channel_id=thread.id,
                guild_id=thread.guild_id,
                author=self.bot_user,
                content=starter.get("content") or "",
                created_at=thread.created_at,
                embeds=self._normalize_embeds(starter.get("embeds")),
                allowed_mentions=starter.get("allowed_mentions"),
            )
            first.attachments = self._attachments_from_request(
                thread.id, starter, request[_REQ_FILES], []
            )
            self._apply_mentions(first, first.allowed_mentions)
            self._store_message(thread, first, via="channel")
            thread.starter_message_id = first.id
            await self._emit_thread_create(thread)
            data = self.channel_payload(thread)
            data["message"] = self._message_payload(first)
            return self._json(data, 201)
        if parent.type not in (ChannelType.GUILD_TEXT, ChannelType.GUILD_ANNOUNCEMENT):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        ttype = int(body.get("type") or ChannelType.PRIVATE_THREAD)
        if ttype not in THREAD_TYPES:
            raise _form_error(["type"], "BASE_TYPE_CHOICES", "Value must be one of {10, 11, 12}.")
        needed = (
            Perm.CREATE_PRIVATE_THREADS
            if ttype == ChannelType.PRIVATE_THREAD
            else Perm.CREATE_PUBLIC_THREADS
        )
        self._require(parent, needed)
        thread = self._new_thread(parent, str(body.get("name") or ""), ttype, body)
        await self._emit_thread_create(thread)
        return self._json(self.channel_payload(thread), 201)

    # ------------------------------------------------------------------ handlers: interactions

    def _interaction_message(
        self,
        state: InteractionState,
        data: JSON,
        files: list[tuple[str, str, bytes, str]],
        *,
        flags: int,
        followup: bool,
    ) -> _StoredMessage:
        ch = self._channels[state.channel_id]
        reference = None
        if followup and state.original_message_id is not None:
            original = self._messages.get(state.original_message_id)
            if original is not None and not original.deleted:
                reference = self._reference_payload(ch, original.id)
        metadata: JSON = {
            "id": str(state.id),
            "type": state.type,
            "user": self._users[state.user_id].payload(),
            "authorizing_integration_owners": (
                {"0": str(state.guild_id)} if state.guild_id else {"0": "0"}
            ),
        }
        if followup and state.original_message_id is not None:
            metadata["original_response_message_id"] = str(state.original_message_id)
        if state.type == IT_MESSAGE_COMPONENT and state.component_message_id is not None:
            metadata["interacted_message_id"] = str(state.component_message_id)
        msg = _StoredMessage(
            id=self._new_id(),
            channel_id=ch.id,
            guild_id=ch.guild_id,
            author=self.bot_user,
            content=data.get("content") or "",
            created_at=0.0,
            type=MT_REPLY if reference else MT_CHAT_INPUT_COMMAND,
            flags=flags,
            tts=bool(data.get("tts")),
            embeds=self._normalize_embeds(data.get("embeds")),
            components=self._normalize_components(data.get("components")),
            allowed_mentions=copy.deepcopy(data.get("allowed_mentions")),
            reference=reference,
            webhook_id=self.application_id,
            application_id=self.application_id,
            interaction_id=state.id,
            interaction_metadata=metadata,
            interaction_legacy={
                "id": str(state.id),
                "type": state.type,
                "name": state.name,
                "user": self._users[state.user_id].payload(),
            },
            poll=data.get("poll"),
        )
        msg.created_at = snowflake_time(msg.id)
        msg.attachments = self._attachments_from_request(ch.id, data, files, [])
        self._apply_mentions(msg, msg.allowed_mentions)
        self._store_message(ch, msg, via="interaction")
        return msg

    async def _h_interaction_callback(self, request: web.Request) -> web.StreamResponse:
        raw_id = request.match_info["interaction_id"]
        state = self._interactions.get(int(raw_id)) if raw_id.isdigit() else None
        if state is None or state.token != request.match_info["interaction_token"]:
            raise _ApiError(404, 10062, "Unknown interaction")
        now = self.now()
        started = state.dispatched_at if state.dispatched_at is not None else state.created_at
        if state.callback_type is not None:
            state.rejected.append((now, 400, 40060))
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if state.invalidated or now - started > self.interaction_ack_deadline:
            state.invalidated = True
            state.rejected.append((now, 404, 10062))
            raise _ApiError(404, 10062, "Unknown interaction")
        body: JSON = request[_REQ_BODY] or {}
        files: list[tuple[str, str, bytes, str]] = request[_REQ_FILES]
        ctype = body.get("type")
        data: JSON = body.get("data") or {}
        allowed_types = {
            IT_PING: {CB_PONG},
            IT_APPLICATION_COMMAND: {CB_CHANNEL_MESSAGE, CB_DEFERRED_CHANNEL_MESSAGE, CB_MODAL},
            IT_MESSAGE_COMPONENT: {
                CB_CHANNEL_MESSAGE,
                CB_DEFERRED_CHANNEL_MESSAGE,
                CB_DEFERRED_UPDATE_MESSAGE,
                CB_UPDATE_MESSAGE,
                CB_MODAL,
            },
            IT_AUTOCOMPLETE: {CB_AUTOCOMPLETE_RESULT},
            IT_MODAL_SUBMIT: {
                CB_CHANNEL_MESSAGE,
                CB_DEFERRED_CHANNEL_MESSAGE,
                CB_DEFERRED_UPDATE_MESSAGE,
                CB_UPDATE_MESSAGE,
            },
        }[state.type]
        if ctype not in allowed_types:
            raise _form_error(
                ["type"],
                "INTERACTION_CALLBACK_TYPE_INVALID",
                "Interaction callback type is not valid for this interaction type.",
            )
        if ctype in (CB_CHANNEL_MESSAGE, CB_UPDATE_MESSAGE):
            self._check_content(data.get("content"), ["data"])
            self._check_allowed_mentions(data.get("allowed_mentions"), ["data"])
            if ctype == CB_CHANNEL_MESSAGE and not any(
                [
                    data.get("content"),
                    data.get("embeds"),
                    files,
                    data.get("components"),
                    data.get("poll"),
                ]
            ):
                raise _ApiError(400, 50006, "Cannot send an empty message")
        ephemeral = bool(int(data.get("flags") or 0) & MF_EPHEMERAL)
        message: _StoredMessage | None = None
        if ctype == CB_CHANNEL_MESSAGE:
            flags = int(data.get("flags") or 0) & (
                MF_EPHEMERAL | MF_SUPPRESS_EMBEDS | MF_SUPPRESS_NOTIFICATIONS | MF_IS_COMPONENTS_V2
            )
            message = self._interaction_message(state, data, files, flags=flags, followup=False)
            state.original_message_id = message.id
        elif ctype == CB_DEFERRED_CHANNEL_MESSAGE:
            flags = MF_LOADING | (MF_EPHEMERAL if ephemeral else 0)
            message = self._interaction_message(state, {}, [], flags=flags, followup=False)
            state.original_message_id = message.id
        elif ctype == CB_UPDATE_MESSAGE:
            assert state.component_message_id is not None
            message = self._messages[state.component_message_id]
            self._edit_stored(message, data, files, "interaction")
            state.original_message_id = message.id
            ephemeral = message.ephemeral
        elif ctype == CB_DEFERRED_UPDATE_MESSAGE:
            state.original_message_id = state.component_message_id
        elif ctype == CB_MODAL:
            state.modal = copy.deepcopy(data)
        elif ctype == CB_AUTOCOMPLETE_RESULT:
            state.autocomplete_choices = copy.deepcopy(data.get("choices") or [])
        state.callback_type = ctype
        state.callback_at = now
        state.callback_data = copy.deepcopy(body)
        state.ephemeral = ephemeral
        if message is not None:
            await self._emit_message(
                "MESSAGE_UPDATE" if ctype == CB_UPDATE_MESSAGE else "MESSAGE_CREATE", message
            )
        self._notify()
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return self._no_content()
        interaction: JSON = {"id": str(state.id), "type": state.type}
        if message is not None:
            interaction.update(
                response_message_id=str(message.id),
                response_message_loading=bool(message.flags & MF_LOADING),
                response_message_ephemeral=message.ephemeral,
            )
        result: JSON = {"interaction": interaction}
        if message is not None and ctype in (CB_CHANNEL_MESSAGE, CB_UPDATE_MESSAGE):
            # spec: a resource only for CHANNEL_MESSAGE (4) / UPDATE_MESSAGE (7)
            result["resource"] = {"type": ctype, "message": self._message_payload(message)}
        return self._json(result)

    def _webhook_interaction(self, request: web.Request) -> InteractionState:
        if request.match_info["webhook_id"] != str(self.application_id):
            raise _ApiError(404, 10015, "Unknown Webhook")
        state = self._interactions_by_token.get(request.match_info["webhook_token"])
        if state is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        if state.invalidated or self.now() - state.created_at > self.interaction_token_ttl:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        return state

    def _webhook_message(self, request: web.Request, state: InteractionState) -> _StoredMessage:
        if state.callback_type is None:
            # not acknowledged yet: Discord answers Unknown Webhook (as for follow-ups)
            raise _ApiError(404, 10015, "Unknown Webhook")
        raw = request.match_info.get("message_id", "@original")
        if raw == "@original":
            mid = state.original_message_id
        else:
            mid = int(raw) if raw.isdigit() else None
            if mid not in {state.original_message_id, *state.followup_ids}:
                mid = None
        msg = self._messages.get(mid) if mid is not None else None
        if msg is None or msg.deleted:
            raise _ApiError(404, 10008, "Unknown Message")
        return msg

    async def _h_wh_get(self, request: web.Request) -> web.StreamResponse:
        state = self._webhook_interaction(request)
        return self._json(self._message_payload(self._webhook_message(request, state)))

    async def _h_wh_edit(self, request: web.Request) -> web.StreamResponse:
        state = self._webhook_interaction(request)
        msg = self._webhook_message(request, state)
        body: JSON = request[_REQ_BODY] or {}
        self._check_content(body.get("content"), [])
        self._check_allowed_mentions(body.get("allowed_mentions"), [])
        was_loading = bool(msg.flags & MF_LOADING)
        self._edit_stored(msg, body, request[_REQ_FILES])
        if was_loading:
            # the deferred "thinking" message becomes the real response, not an edit of it
            msg.edits = 0
            msg.edited_at = None
        self.writes[-1] = WriteRecord(
            self.writes[-1].time, msg.channel_id, msg.id, "edit", "webhook"
        )
        await self._emit_message("MESSAGE_UPDATE", msg)
        return self._json(self._message_payload(msg))

    async def _h_wh_delete(self, request: web.Request) -> web.StreamResponse:
        state = self._webhook_interaction(request)
        msg = self._webhook_message(request, state)
        await self._delete_stored(msg, "webhook")
        return self._no_content()

    async def _h_wh_execute(self, request: web.Request) -> web.StreamResponse:
        state = self._webhook_interaction(request)
        if state.callback_type is None:
            raise _ApiError(404, 10015, "Unknown Webhook")
        body: JSON = request[_REQ_BODY] or {}
        files: list[tuple[str, str, bytes, str]] = request[_REQ_FILES]
        self._check_content(body.get("content"), [])
        self._check_allowed_mentions(body.get("allowed_mentions"), [])
        if not any(
            [
                body.get("content"),
                body.get("embeds"),
                files,
                body.get("components"),
                body.get("poll"),
            ]
        ):
            raise _ApiError(400, 50006, "Cannot send an empty message")
        original = (
            self._messages.get(state.original_message_id) if state.original_message_id else None
        )
        if (
            state.callback_type == CB_DEFERRED_CHANNEL_MESSAGE
            and original is not None
            and original.flags & MF_LOADING
            and not state.followup_ids
        ):
            # Discord: the first follow-up after a deferral replaces the loading message,
            # keeping the deferral's ephemeral flag.
            self._edit_stored(original, body, files)
            original.edits = 0
            original.edited_at = None
            self.writes[-1] = WriteRecord(
                self.writes[-1].time, original.channel_id, original.id, "edit", "webhook"
            )
            await self._emit_message("MESSAGE_UPDATE", original)
            return self._json(self._message_payload(original))
        flags = int(body.get("flags") or 0) & (
            MF_EPHEMERAL | MF_SUPPRESS_EMBEDS | MF_SUPPRESS_NOTIFICATIONS | MF_IS_COMPONENTS_V2
        )
        msg = self._interaction_message(state, body, files, flags=flags, followup=True)
        state.followup_ids.append(msg.id)
        await self._emit_message("MESSAGE_CREATE", msg)
        return self._json(self._message_payload(msg))


class _InjectedRateLimit(Exception):
    def __init__(self, rule: _RateLimitRule) -> None:
        super().__init__("injected 429")
        self.rule = rule
