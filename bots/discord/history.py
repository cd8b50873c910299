"""Discord → core: conversation keys, readable message text, attachments, history.

Everything here translates; nothing decides what the bot does with it.
"""

from __future__ import annotations

import datetime as dt
import logging
import mimetypes
import re
from collections.abc import Collection

import discord
import httpx

from core import Attachment, ChatMessage, ConversationKey, capped_download

__all__ = [
    "PLATFORM",
    "answer_key",
    "channel_key",
    "chat_message",
    "message_text",
    "read_messages",
    "tenant_key",
    "thread_key",
    "thread_starter",
    "to_attachment",
]

log = logging.getLogger(__name__)

PLATFORM = "discord"
#: Message types that carry something someone said (plain, reply, slash-command answers).
_SPOKEN = frozenset(
    {
        discord.MessageType.default,
        discord.MessageType.reply,
        discord.MessageType.chat_input_command,
        discord.MessageType.context_menu_command,
    }
)
_MENTION = re.compile(r"<(@[!&]?|#)(\d{15,21})>")


# --------------------------------------------------------------------------- keys


def channel_key(guild_id: int, channel_id: int) -> ConversationKey:
    """The conversation of a channel outside any thread."""
    return ConversationKey(PLATFORM, str(guild_id), str(channel_id), "-")


def thread_key(guild_id: int, thread: discord.Thread) -> ConversationKey:
    """A thread's conversation; it lives under its parent channel, so erasing a
    channel's memory erases its threads too."""
    return ConversationKey(PLATFORM, str(guild_id), str(thread.parent_id), str(thread.id))


def answer_key(guild_id: int, channel_id: int, message_id: int) -> ConversationKey:
    """The conversation started by an answer posted in a channel. A thread opened
    from that message has the message's id, so it continues the same conversation."""
    return ConversationKey(PLATFORM, str(guild_id), str(channel_id), str(message_id))


def tenant_key(guild_id: int) -> str:
    """The usage and budget unit: one server."""
    return ConversationKey(PLATFORM, str(guild_id), "-", "-").tenant


# --------------------------------------------------------------------------- text


def message_text(
    message: discord.Message,
    *,
    drop_users: Collection[int] = (),
    drop_roles: Collection[int] = (),
) -> str:
    """The message as a reader sees it: `<@id>` becomes `@Name`, `<#id>` `#channel`;
    mentions of `drop_users` / `drop_roles` (the bot itself) are removed."""
    guild = message.guild
    users = {user.id: user for user in message.mentions}
    roles = {role.id: role for role in message.role_mentions}

    def resolve(match: re.Match[str]) -> str:
        kind, ident = match.group(1), int(match.group(2))
        if kind in ("@", "@!"):
            if ident in drop_users:
                return ""
            user = users.get(ident) or (guild.get_member(ident) if guild else None)
            return f"@{user.display_name}" if user else "@someone"
        if kind == "@&":
            if ident in drop_roles:
                return ""
            role = roles.get(ident) or (guild.get_role(ident) if guild else None)
            return f"@{role.name}" if role else "@some-role"
        channel = guild.get_channel_or_thread(ident) if guild else None
        return f"#{channel.name}" if channel else "#some-channel"

    text = _MENTION.sub(resolve, message.content)
    return re.sub(r"^[ \t]+", "", text).strip()


def _extras(message: discord.Message) -> list[str]:
    parts: list[str] = []
    for embed in message.embeds:
        bits = [b for b in (embed.title, embed.description) if b]
        if bits:
            parts.append("[embed: " + " — ".join(bits) + "]")
    parts.extend(f"[attached: {a.filename}]" for a in message.attachments)
    parts.extend(f"[sticker: {s.name}]" for s in message.stickers)
    return parts


def chat_message(message: discord.Message, bot_id: int) -> ChatMessage | None:
    """A message of the channel's history as a transcript entry (None for system
    messages and messages with nothing readable, e.g. without the Message Content
    intent)."""
    if message.type not in _SPOKEN:
        return None
    text = "\n".join(p for p in [message_text(message), *_extras(message)] if p)
    if not text.strip():
        return None
    ident = str(message.id)
    ts = message.created_at.timestamp()
    if message.author.id == bot_id:
        return ChatMessage(role="assistant", content=text, id=ident, ts=ts)
    return ChatMessage.user(text, message.author.display_name, id=ident, ts=ts)


# --------------------------------------------------------------------------- attachments


def _mime(attachment: discord.Attachment) -> str:
    raw = attachment.content_type or mimetypes.guess_type(attachment.filename)[0] or ""
    mime = raw.split(";", 1)[0].strip().lower()
    return mime or "application/octet-stream"


def to_attachment(
    attachment: discord.Attachment, http: httpx.AsyncClient, max_bytes: int
) -> Attachment:
    """A core Attachment whose `fetch` downloads the file from Discord's CDN, stopping once
    more than `max_bytes` have come (the reader then notes the file as too large)."""
    url = attachment.url

    async def fetch() -> bytes:
        return await capped_download(http, url, max_bytes)

    return Attachment(
        name=attachment.filename, mime=_mime(attachment), size=attachment.size, fetch=fetch
    )


# --------------------------------------------------------------------------- history


async def read_messages(
    channel: discord.abc.Messageable,
    *,
    limit: int,
    after: dt.datetime | None = None,
    before: discord.abc.Snowflake | None = None,
) -> tuple[list[discord.Message], bool]:
    """The newest `limit` messages (oldest first) after `after` / before `before`,
    read page by page (100 per request); and whether older ones were left out."""
    newest_first = [
        message
        async for message in channel.history(
            limit=limit + 1, after=after, before=before, oldest_first=False
        )
    ]
    truncated = len(newest_first) > limit
    return list(reversed(newest_first[:limit])), truncated


async def thread_starter(thread: discord.Thread) -> discord.Message | None:
    """The channel message a thread was started from, if it was started from one."""
    if thread.starter_message is not None:
        return thread.starter_message
    parent = thread.parent
    if not isinstance(parent, discord.TextChannel):
        return None  # forum posts and others keep their first message inside the thread
    try:
        return await parent.fetch_message(thread.id)
    except (discord.NotFound, discord.Forbidden):
        return None
    except discord.HTTPException as error:
        log.info("could not read the starter of thread %s: %s", thread.id, error)
        return None
