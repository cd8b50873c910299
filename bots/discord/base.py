"""What the parts of `TeamBot` share: the client's state they rely on, and the helpers
more than one part uses (background work, names, the cache, answers to remember,
private replies, a thread's earlier messages).

`TeamBot` (`bots.discord.bot`) is a `discord.AutoShardedClient` with its handlers mixed
in; each mixin subclasses `ClientBase`, which the type checker sees as that client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.history import chat_message, read_messages, thread_starter
from core import (
    ChatMessage,
    ConversationKey,
    Engine,
    Fetch,
    Intake,
    KeyedLocks,
    Settings,
    SummaryShares,
    WritePacer,
)

if TYPE_CHECKING:
    from bots.discord.knowledge import DiscordKnowledge

    _Client = discord.AutoShardedClient
else:
    _Client = object

__all__ = ["IMPORT_LIMIT", "NO_MENTIONS", "ClientBase"]

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
#: Messages of an existing thread read once, as context, when the bot joins it.
IMPORT_LIMIT = 200


class ClientBase(_Client):
    """The state `TeamBot` sets up, and the helpers its mixins share."""

    settings: Settings
    engine: Engine
    intake: Intake
    pacer: WritePacer
    shares: SummaryShares
    knowledge: DiscordKnowledge
    message_content: bool
    _gates: KeyedLocks
    _stopping: bool

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Run `work` in the background, tracked by the engine until it ends (shutdown
        waits for it; an exception it raises is logged)."""
        return self.engine.spawn(work, name=name)

    async def _cached(self, namespace: str, ident: str) -> str | None:
        try:
            return await self.engine.cache_get(namespace, ident)
        except Exception as error:  # the store is down: behave as if nothing was cached
            log.warning("cache read failed: %s", error)
            return None

    async def _remember_answer(self, key: ConversationKey, message_ids: list[int]) -> None:
        """Replying to an answer posted in a channel continues its conversation."""
        await self.intake.remember_answer(key, [str(i) for i in message_ids])

    def display_name(self, user_id: str) -> str | None:
        """A member's name when known without a request (for mentions the bot must not
        make: they are written as names)."""
        if not user_id.isdigit():
            return None
        user = self.get_user(int(user_id))
        return user.display_name if user is not None else None

    def thread_reader(self, thread: discord.Thread, before: discord.abc.Snowflake) -> Fetch:
        """The earlier messages of a thread the bot did not start (up to IMPORT_LIMIT), for
        core to read once on first contact."""

        async def earlier() -> list[ChatMessage]:
            assert self.user is not None
            messages, _truncated = await read_messages(thread, limit=IMPORT_LIMIT, before=before)
            starter = await thread_starter(thread)
            if starter is not None and all(m.id != starter.id for m in messages):
                messages.insert(0, starter)
            return [c for m in messages if (c := chat_message(m, self.user.id)) is not None]

        return earlier

    async def _tell(self, interaction: discord.Interaction[Any], text: str) -> None:
        """A short private answer to the one who asked."""
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            else:
                await interaction.response.send_message(
                    text, ephemeral=True, allowed_mentions=NO_MENTIONS
                )
        except discord.HTTPException as error:
            log.info("could not answer interaction %s: %s", interaction.id, error)
