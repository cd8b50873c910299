"""Reading Slack: people's names, threads and channel history, files, and who may read what.

Every read goes through the process's one `AsyncWebClient`, whose retry handlers honour
`Retry-After` on HTTP 429 (Slack's 2025 limits for non-Marketplace apps allow one
`conversations.replies` call a minute): a thread is read once, on first contact, and then
memory is the source.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.format import mention_ids, to_plain
from core import Attachment, ChatMessage, Command, NameDirectory, capped_download, raw_command

__all__ = [
    "Access",
    "Identity",
    "SlackReader",
    "display_name",
    "file_attachments",
    "is_conversation_message",
]

log = logging.getLogger(__name__)

Message = dict[str, Any]

#: Subtypes of `message` that are something a person (or bot) said; the rest (joins,
#: topic changes, edits, deletions...) are not conversation.
CONVERSATION_SUBTYPES = frozenset(
    {None, "file_share", "thread_broadcast", "me_message", "bot_message"}
)

#: Page size for conversations.replies / conversations.history (Slack suggests ≤ 200).
PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the bot is in this workspace (from `auth.test`)."""

    team_id: str
    bot_user_id: str
    bot_id: str
    name: str = "teambot"


def is_conversation_message(message: Mapping[str, Any]) -> bool:
    return message.get("subtype") in CONVERSATION_SUBTYPES and not message.get("hidden")


def is_own(message: Mapping[str, Any], identity: Identity) -> bool:
    return message.get("user") == identity.bot_user_id or (
        bool(message.get("bot_id")) and message.get("bot_id") == identity.bot_id
    )


async def display_name(client: AsyncWebClient, user_id: str) -> str:
    """A person's display name as `users.info` gives it (the id when it gives none): the
    `lookup` of the bot's `NameDirectory`."""
    try:
        response = await client.users_info(user=user_id)
    except SlackApiError as error:
        log.info("users.info %s failed: %s", user_id, error.response.get("error"))
        return user_id
    user: dict[str, Any] = response.get("user") or {}
    profile: dict[str, Any] = user.get("profile") or {}
    for candidate in (
        profile.get("display_name"),
        profile.get("real_name"),
        user.get("real_name"),
        user.get("name"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return user_id


@dataclass(frozen=True, slots=True)
class Access:
    """May this user have this conversation read for them? (`reason` when not.)"""

    allowed: bool
    reason: str = ""
    name: str = ""


class SlackReader:
    """Fetches conversations and turns them into the engine's `ChatMessage`s."""

    def __init__(
        self, client: AsyncWebClient, directory: NameDirectory, identity: Identity
    ) -> None:
        self.client = client
        self.directory = directory
        self.identity = identity

    # --- fetching ---------------------------------------------------------------------

    async def thread(
        self, channel: str, thread_ts: str, *, before: str | None = None
    ) -> list[Message]:
        """Every message of a thread, parent first, paginated; with `before`, only the ones
        older than that ts."""
        found: dict[str, Message] = {}
        cursor: str | None = None
        while True:
            args: dict[str, Any] = {"channel": channel, "ts": thread_ts, "limit": PAGE_SIZE}
            if before:
                args["latest"] = before
                args["inclusive"] = False
            if cursor:
                args["cursor"] = cursor
            response = await self.client.conversations_replies(**args)
            for message in response.get("messages") or []:
                ts = str(message.get("ts", ""))
                if ts and (before is None or _order(ts) < _order(before)):
                    found[ts] = message
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not response.get("has_more", True):
                break
        return [found[ts] for ts in sorted(found, key=_order)]

    async def channel_window(
        self, channel: str, oldest: float, *, max_messages: int = 5000, max_threads: int = 200
    ) -> tuple[list[Message], list[str]]:
        """Messages of a channel since `oldest` (epoch seconds), thread replies included,
        oldest first. Returns (messages, notes about what was left out)."""
        top: list[Message] = []
        cursor: str | None = None
        notes: list[str] = []
        while len(top) < max_messages:
            args: dict[str, Any] = {"channel": channel, "oldest": f"{oldest:.6f}"}
            args["limit"] = PAGE_SIZE
            if cursor:
                args["cursor"] = cursor
            response = await self.client.conversations_history(**args)
            top.extend(response.get("messages") or [])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not response.get("has_more"):
                break
        if len(top) >= max_messages:
            notes.append(f"Only the latest {max_messages:,} messages were read.")
        top = top[:max_messages]
        out: dict[str, Message] = {str(m["ts"]): m for m in top if m.get("ts")}
        threads = [
            m
            for m in top
            if m.get("reply_count") and _ts(str(m.get("latest_reply") or m["ts"])) >= oldest
        ]
        threads.sort(key=lambda m: _ts(str(m.get("latest_reply") or m["ts"])), reverse=True)
        if len(threads) > max_threads:
            notes.append(f"Replies of {len(threads) - max_threads} older threads were left out.")
        for parent in threads[:max_threads]:
            for reply in await self.thread(channel, str(parent["ts"])):
                if _ts(str(reply["ts"])) >= oldest:
                    out.setdefault(str(reply["ts"]), reply)
        return [out[ts] for ts in sorted(out, key=_order)], notes

    async def access(
        self, user_id: str, channel: str, *, asked_from: str, asked_from_name: str = ""
    ) -> Access:
        """Checks, before anything is read, that `user_id` can read `channel` themselves.

        Asked from inside the channel: yes (they are in it; Slack told us its name). Else
        the bot looks the channel up; a private channel, group DM or DM needs the user
        among its members; a public one is open to full members of the installing
        workspace, while guests and people of other workspaces (Slack Connect, other
        organizations of an Enterprise Grid) need to be in it."""
        if channel == asked_from:
            return Access(True, name=asked_from_name or channel)
        try:
            info = await self.client.conversations_info(channel=channel)
        except SlackApiError as error:
            code = error.response.get("error")
            if code in ("channel_not_found", "not_in_channel", "missing_scope"):
                return Access(False, "I can't see that conversation. Invite me to it first.")
            raise
        conversation: dict[str, Any] = info.get("channel") or {}
        name = str(conversation.get("name") or channel)
        restricted = conversation.get("is_private") or conversation.get("is_im")
        restricted = restricted or conversation.get("is_mpim")
        if not restricted:
            user = (await self.client.users_info(user=user_id)).get("user") or {}
            if self._full_member(user):
                return Access(True, name=name)
        if await self._is_member(user_id, channel):
            return Access(True, name=name)
        return Access(
            False,
            f"You're not a member of #{name}, so I can't summarize it for you.",
            name=name,
        )

    def _full_member(self, user: Mapping[str, Any]) -> bool:
        """A member of the installing workspace who is not a guest."""
        if user.get("is_restricted") or user.get("is_ultra_restricted"):
            return False
        team = str(user.get("team_id") or "")
        return bool(team) and team == self.identity.team_id

    async def is_admin(self, user_id: str) -> bool:
        """A workspace admin or owner (they may decide others' approval requests)."""
        try:
            user = (await self.client.users_info(user=user_id)).get("user") or {}
        except SlackApiError:
            return False
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    async def _is_member(self, user_id: str, channel: str) -> bool:
        cursor: str | None = None
        while True:
            args: dict[str, Any] = {"channel": channel, "limit": 1000}
            if cursor:
                args["cursor"] = cursor
            response = await self.client.conversations_members(**args)
            if user_id in (response.get("members") or []):
                return True
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return False

    # --- converting ------------------------------------------------------------------

    async def plain_text(self, message: Mapping[str, Any], *, addressed: bool = False) -> str:
        """The message's text as the model reads it; `addressed` drops the leading
        mention of the bot."""
        text = str(message.get("text") or "")
        ids = [uid for uid in mention_ids(text) if uid != self.identity.bot_user_id]
        names = await self.directory.names(ids)
        names[self.identity.bot_user_id] = self.identity.name
        strip = self.identity.bot_user_id if addressed else None
        return to_plain(text, names, strip_leading=strip)

    async def speaker(self, message: Mapping[str, Any]) -> tuple[str, str, bool]:
        """(id, display name, is a bot) of a message's author."""
        user = message.get("user")
        if (message.get("bot_id") and not user) or message.get("subtype") == "bot_message":
            profile = message.get("bot_profile") or {}
            name = str(profile.get("name") or message.get("username") or "a bot")
            return str(message.get("bot_id") or user or "bot"), name, True
        if not user:
            return "unknown", "someone", False
        return str(user), await self.directory.name(str(user)), bool(message.get("bot_id"))

    async def chat_messages(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        transcript: bool = False,
        channel: str = "",
    ) -> list[ChatMessage]:
        """Slack messages → engine history: the bot's own as assistant turns, everyone
        else's as user turns with their name; files become a note. A `transcript` (for a
        summary) leaves out the bot's earlier summaries and the requests for them."""
        out: list[ChatMessage] = []
        for message in messages:
            if not is_conversation_message(message):
                continue
            if transcript and await self._about_summaries(message, channel):
                continue
            ts = str(message.get("ts") or "")
            text = await self.plain_text(message)
            files = [f for f in message.get("files") or [] if isinstance(f, dict)]
            if files:
                names = ", ".join(str(f.get("name") or f.get("title") or "file") for f in files)
                text = f"{text}\n[attached: {names}]".strip()
            if not text:
                continue
            if is_own(message, self.identity):
                entry = ChatMessage.assistant(text)
                entry = entry.model_copy(update={"id": ts, "ts": _ts(ts)})
            else:
                _uid, name, _bot = await self.speaker(message)
                entry = ChatMessage.user(text, name, id=ts, ts=_ts(ts))
            out.append(entry)
        return out

    async def _about_summaries(self, message: Mapping[str, Any], channel: str) -> bool:
        """The bot's own summaries (it remembers which messages it posted as such) and the
        requests for them are left out of a summary's transcript."""
        text = str(message.get("text") or "")
        if is_own(message, self.identity):
            channel = str(message.get("channel") or channel)
            ident = f"{channel}:{message.get('ts')}"
            return await self.directory.remembered("slack-summary-post", ident)
        if not text.lstrip().startswith(f"<@{self.identity.bot_user_id}>"):
            return False
        return raw_command(text) is Command.SUMMARIZE


def file_attachments(
    files: Sequence[Mapping[str, Any]],
    http: httpx.AsyncClient,
    token: str,
    *,
    api_url: str,
    max_bytes: int,
) -> tuple[Attachment, ...]:
    """Slack file objects → `Attachment`s whose `fetch()` downloads `url_private` with the
    bot token (only from Slack's own hosts), reading at most `max_bytes` + 1 bytes."""
    trusted = {urlsplit(api_url).hostname or ""}
    out: list[Attachment] = []
    for file in files:
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        name = str(file.get("name") or file.get("title") or "file")
        mime = str(file.get("mimetype") or "application/octet-stream")
        size = int(file.get("size") or 0)
        fetch = _downloader(http, url, token, trusted, max_bytes, mime)
        out.append(Attachment(name=name, mime=mime, size=size, fetch=fetch))
    return tuple(out)


def _trusted_host(url: str, trusted: set[str]) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in trusted:
        return True
    return parts.scheme == "https" and (
        host == "slack.com"
        or host.endswith((".slack.com", ".slack-edge.com", ".slack-gov.com"))
        or host == "slack-gov.com"
    )


def _downloader(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    trusted: set[str],
    max_bytes: int,
    mime: str,
) -> Callable[[], Awaitable[bytes]]:
    async def fetch() -> bytes:
        if not url or not _trusted_host(url, trusted):
            raise ValueError("the file has no Slack download link")
        # A missing files:read scope answers with a redirect to a sign-in page.
        return await capped_download(
            http,
            url,
            max_bytes,
            headers={"Authorization": f"Bearer {token}"},
            refuse_html=not mime.startswith("text/html"),
        )

    return fetch


def _order(ts: str) -> tuple[int, int]:
    """A Slack timestamp ("1712345678.000123") as exact integers, for ordering (a float
    cannot tell apart two messages a microsecond apart at today's epoch)."""
    seconds, _, micros = ts.partition(".")
    try:
        return int(seconds), int(micros.ljust(6, "0")[:6] or 0)
    except ValueError:
        return 0, 0


def _ts(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0
