"""Discord's side of a streamed reply: where the pages go.

Core's `PagedReply` does the work (pages, pacing on the channel's write budget, mention
safety, the final text); a surface here only creates, edits and deletes the page messages:
ordinary channel messages (`ChannelSurface`), or an interaction's deferred response and its
follow-ups (`InteractionSurface`). An interaction token that is about to expire (they live
15 minutes) hands the reply over to a channel surface, with a note. `AllowedMentions` stays
as a second layer under core's text rule: nobody but the asker can be pinged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import discord
from discord.utils import MISSING

from bots.discord.format import MESSAGE_LIMIT, PAGE_LIMIT, close_fence, status_line
from core import (
    ApprovalCard,
    ConversationKey,
    NativeStream,
    PagedReply,
    Rate,
    RateReport,
    SurfaceExpired,
    WritePacer,
    defuse,
)

__all__ = [
    "ChannelSurface",
    "DiscordApprovals",
    "DiscordReply",
    "InteractionSurface",
    "discord_pacer",
    "discord_reply",
    "message_ids",
    "pacing_trace",
    "safe_mentions",
]

log = logging.getLogger(__name__)

#: How long before an interaction token expires (15 minutes) a reply stops using it.
TOKEN_MARGIN = 60.0
#: Discord error codes meaning an interaction's webhook token can no longer be used.
_TOKEN_GONE = {10015, 50027}
_UNKNOWN_MESSAGE = 10008
_CANNOT_REPLY = 160002  # no Read Message History: a reply reference is refused

View = Callable[[], discord.ui.View]


def safe_mentions(*users: discord.abc.Snowflake) -> discord.AllowedMentions:
    """Mentions in the bot's output ping nobody but `users` (the asker): never
    @everyone, @here or a role, whatever the model writes."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=list(users), replied_user=False
    )


def discord_pacer(interval: float) -> WritePacer:
    """Discord's message budgets per channel (creating, editing): 5 writes per 5 s until
    Discord's rate-limit headers say otherwise (DISCORD_EDIT_INTERVAL scales that default
    window: 1.0 is Discord's own). Until a budget was reported once, one write at a time."""
    return WritePacer(Rate(5, 5 * interval), probe=True)


_MESSAGE_ROUTE = re.compile(r"/channels/(\d+)/messages(/\d+)?$")
_WEBHOOK_ROUTE = re.compile(r"/webhooks/\d+/([^/]+)(/messages/[^/]+)?$")
#: Interaction tokens in use → their channel, so their webhook writes count for it.
_INTERACTION_CHANNELS: dict[str, int] = {}


def pacing_trace(pacer: WritePacer) -> aiohttp.TraceConfig:
    """An aiohttp trace for discord.py's HTTP client (its `http_trace` option) that hands
    Discord's rate-limit headers of every message write to `pacer`: the budget learned is
    the one Discord enforces, per channel and route."""
    trace = aiohttp.TraceConfig()

    async def on_end(
        _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.method not in ("POST", "PATCH"):
            return
        path = params.url.path
        match = _MESSAGE_ROUTE.search(path)
        if match is not None:
            channel: int | None = int(match.group(1))
            edit = params.method == "PATCH" and match.group(2) is not None
        else:
            hook = _WEBHOOK_ROUTE.search(path)
            channel = _INTERACTION_CHANNELS.get(hook.group(1)) if hook is not None else None
            edit = params.method == "PATCH"
        if channel is None:
            return
        report = RateReport.from_headers(params.response.headers, params.response.status)
        pacer.observe(f"{channel}:{'edit' if edit else 'new'}", report)

    trace.on_request_end.append(on_end)
    return trace


class DiscordApprovals:
    """Approval cards in a channel or thread (a `core.ApprovalUI`)."""

    def __init__(self, channel: discord.abc.Messageable, mentions: discord.AllowedMentions):
        self.channel = channel
        self.mentions = mentions

    async def show(self, card: ApprovalCard) -> dict[str, str]:
        from bots.discord.commands import approval_view

        text = defuse(card.markdown(), [card.asker_id])[:MESSAGE_LIMIT]
        sent = await self.channel.send(
            text, view=approval_view(card.id), allowed_mentions=self.mentions
        )
        return {"channel": str(sent.channel.id), "message": str(sent.id)}

    async def settle(
        self, card: ApprovalCard, outcome: str, by: str | None, where: Mapping[str, str]
    ) -> None:
        if "message" not in where:
            return
        said = card.settled(outcome, by)
        text = defuse(f"{card.markdown()}\n\n**{said}**")[:MESSAGE_LIMIT]
        message = self.channel.get_partial_message(int(where["message"]))  # type: ignore[attr-defined]
        await message.edit(content=text, view=None, allowed_mentions=discord.AllowedMentions.none())


class DiscordReply(PagedReply):
    """A streamed reply whose final answer carries 👍/👎 (the engine offers feedback on
    an answer before it finishes it)."""

    answer_id: str | None = None

    def offer_feedback(self, answer_id: str) -> None:
        from bots.discord.commands import feedback_view

        self.answer_id = answer_id
        if isinstance(self.surface, _Pages):
            self.surface.final_view = lambda: feedback_view(answer_id)


def discord_reply(
    surface: ChannelSurface | InteractionSurface,
    pacer: WritePacer,
    *,
    asker: int | None = None,
    header: str = "",
    resolve: Callable[[str], str | None] | None = None,
    approvals: DiscordApprovals | None = None,
) -> DiscordReply:
    """A streamed reply that pings nobody but `asker` (and asks for approval, when a
    tool needs it, with `approvals`)."""
    reply = DiscordReply(
        surface,
        pacer,
        header=header,
        allowed_users=[str(asker)] if asker is not None else [],
        resolve=resolve,
    )
    if approvals is not None:
        reply.approval_ui = approvals
    return reply


def message_ids(reply: PagedReply) -> list[int]:
    """The Discord messages a reply shows (on the surface it ended on)."""
    ids: Callable[[], list[int]] | None = getattr(reply.surface, "message_ids", None)
    return ids() if ids is not None else []


class _Pages:
    """What both surfaces share: Discord Markdown, the status line, the final view."""

    limit = PAGE_LIMIT
    status_as_page = True
    failure_apart = False
    final_view: View | None = None

    @property
    def native(self) -> NativeStream | None:
        return None

    @property
    def key(self) -> str:
        return str(self.channel_id)

    @property
    def channel_id(self) -> int:
        raise NotImplementedError

    def render(self, markdown: str) -> str:
        return markdown

    def with_status(self, wire: str, status: str) -> str:
        line = status_line(status)
        return f"{wire}\n{line}" if wire.strip() else line

    #: The conversation whose answer this is: its pages carry a Stop button while the
    #: answer is being written (None: no button).
    stop_key: ConversationKey | None = None
    _stoppable: set[int] | None = None

    def _view(self, index: int, final: bool, last: bool) -> Any:
        """The components to send with page `index`: the final view on the answer's last
        page, a Stop button while it is written, None to take a Stop button away, and
        MISSING to leave the page's components as they are."""
        stoppable = self._stoppable if self._stoppable is not None else set()
        self._stoppable = stoppable
        if final and last and self.final_view is not None:
            stoppable.discard(index)
            return self.final_view()
        if not final and self.stop_key is not None:
            from bots.discord.commands import stop_view

            stoppable.add(index)
            return stop_view(self.stop_key)
        if index in stoppable:
            stoppable.discard(index)
            return None
        return MISSING


class ChannelSurface(_Pages):
    """Pages as ordinary messages in a channel or thread; the first replies to
    `reply_to` when given."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        channel_id: int,
        *,
        mentions: discord.AllowedMentions,
        reply_to: discord.MessageReference | None = None,
        typing: bool = True,
    ) -> None:
        self.channel = channel
        self._channel_id = channel_id
        self.mentions = mentions
        self.reply_to = reply_to
        self.messages: list[discord.Message | None] = []
        self._typing = typing
        self._typing_task: asyncio.Task[None] | None = None

    @property
    def channel_id(self) -> int:
        return self._channel_id

    async def waiting(self, status: str) -> None:
        if self._typing and self._typing_task is None and not self.messages:
            self._typing_task = asyncio.create_task(self._type(), name="discord-typing")

    async def _type(self) -> None:
        # Discord shows "is typing" for 10 s after each trigger.
        while True:
            try:
                await self.channel.typing()
            except discord.HTTPException as error:
                log.debug("typing indicator refused: %s", error)
                return
            await asyncio.sleep(8)

    async def _stop_typing(self) -> None:
        task, self._typing_task = self._typing_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def show(self, index: int, content: str, *, final: bool, last: bool) -> RateReport | None:
        await self._stop_typing()
        view = self._view(index, final, last)
        current = self.messages[index] if index < len(self.messages) else None
        if current is not None:
            try:
                self.messages[index] = await current.edit(
                    content=content, allowed_mentions=self.mentions, view=view
                )
                return None
            except discord.NotFound:
                log.info("message %s was deleted while streaming; sending it again", current.id)
        reference = self.reply_to if index == 0 else None
        try:
            message = await self._send(content, view, reference)
        except discord.Forbidden as error:
            if reference is None or error.code != _CANNOT_REPLY:
                raise
            message = await self._send(content, view, None)
        if index < len(self.messages):
            self.messages[index] = message
        else:
            self.messages.append(message)
        return None

    async def _send(
        self,
        content: str,
        view: Any,
        reference: discord.MessageReference | None,
    ) -> discord.Message:
        extra: dict[str, Any] = {}
        if reference is not None:
            extra["reference"] = reference
        if isinstance(view, discord.ui.View):
            extra["view"] = view
        return await self.channel.send(content, allowed_mentions=self.mentions, **extra)

    async def remove(self, index: int) -> None:
        message = self.messages.pop(index) if index < len(self.messages) else None
        if message is not None:
            with contextlib.suppress(discord.NotFound):
                await message.delete()

    def message_ids(self) -> list[int]:
        return [m.id for m in self.messages if m is not None]

    async def close(self) -> None:
        await self._stop_typing()


class InteractionSurface(_Pages):
    """Pages as an interaction's (deferred) response and its follow-ups.

    Interaction tokens live 15 minutes. A write that would come later than `margin`
    before that first leaves a note on the response (while the token still works),
    then the reply moves to a channel surface; a token that stopped working early
    (Discord answers 401/404) moves it too. An ephemeral reply has no fallback: it must
    never be posted where others can read it.
    """

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        *,
        mentions: discord.AllowedMentions,
        ephemeral: bool = False,
        margin: float | None = None,
    ) -> None:
        self.interaction = interaction
        self.mentions = mentions
        self.ephemeral = ephemeral
        self.margin = TOKEN_MARGIN if margin is None else margin
        self.original_id: int | None = None
        self.followups: list[discord.WebhookMessage | None] = []
        if len(_INTERACTION_CHANNELS) > 10_000:
            _INTERACTION_CHANNELS.clear()
        _INTERACTION_CHANNELS[interaction.token] = self.channel_id
        self._shown: dict[int, str] = {}
        self._expired = False

    @property
    def channel_id(self) -> int:
        return self.interaction.channel_id or 0

    async def waiting(self, status: str) -> None:
        return None  # the deferred response already shows "thinking"

    def budget_of(self, index: int, creating: bool) -> str:
        """The deferred response is edited even to show its first text."""
        return f"{self.key}:{'new' if creating and index > 0 else 'edit'}"

    def _deadline(self) -> dt.datetime:
        return self.interaction.expires_at - dt.timedelta(seconds=self.margin)

    async def show(self, index: int, content: str, *, final: bool, last: bool) -> RateReport | None:
        if self._expired:
            raise SurfaceExpired(self.fallback())
        if discord.utils.utcnow() >= self._deadline():
            await self._hand_over()
            raise SurfaceExpired(self.fallback())
        view = self._view(index, final, last)
        try:
            if index == 0:
                message = await self.interaction.edit_original_response(
                    content=content, allowed_mentions=self.mentions, view=view
                )
                self.original_id = message.id
            else:
                await self._show_followup(index - 1, content, view)
        except discord.HTTPException as error:
            if (
                error.code in _TOKEN_GONE
                or error.status == 401
                or (index == 0 and error.code == _UNKNOWN_MESSAGE)
            ):
                log.warning(
                    "interaction %s can take no more writes: %s", self.interaction.id, error
                )
                self._expired = True
                raise SurfaceExpired(self.fallback()) from error
            raise
        self._shown[index] = content
        return None

    async def _show_followup(self, position: int, content: str, view: Any) -> None:
        current = self.followups[position] if position < len(self.followups) else None
        if current is not None:
            try:
                self.followups[position] = await current.edit(
                    content=content, allowed_mentions=self.mentions, view=view
                )
                return
            except discord.NotFound:
                log.info("follow-up %s was deleted while streaming; sending it again", current.id)
        message = await self.interaction.followup.send(
            content,
            wait=True,
            ephemeral=self.ephemeral,
            allowed_mentions=self.mentions,
            view=view if isinstance(view, discord.ui.View) else MISSING,
        )
        if position < len(self.followups):
            self.followups[position] = message
        else:
            self.followups.append(message)

    async def _hand_over(self) -> None:
        """Leave a note on the response before its token runs out."""
        self._expired = True
        if discord.utils.utcnow() >= self.interaction.expires_at - dt.timedelta(seconds=5):
            return
        then = "the answer continues below." if not self.ephemeral else "please ask again."
        note = status_line(f"This took longer than Discord lets me edit this message: {then}")
        shown = self._shown.get(0, "")
        room = 2000 - len(note) - 2
        content = (close_fence(shown[:room]) + "\n" + note) if shown else note
        try:
            await self.interaction.edit_original_response(
                content=content[:2000], allowed_mentions=self.mentions
            )
        except discord.HTTPException as error:
            log.info("could not leave the hand-over note: %s", error)

    async def remove(self, index: int) -> None:
        if index == 0:
            return  # the response itself stays; it is overwritten instead
        position = index - 1
        message = self.followups.pop(position) if position < len(self.followups) else None
        self._shown.pop(index, None)
        if message is not None:
            with contextlib.suppress(discord.HTTPException):
                await message.delete()

    def fallback(self) -> ChannelSurface | None:
        """Where the reply continues once the token can take no more writes (never for
        an ephemeral reply: it must not be posted where others can read it)."""
        if self.ephemeral:
            return None
        client = self.interaction.client
        channel_id = self.channel_id
        channel = self.interaction.channel
        target: discord.abc.Messageable
        if isinstance(channel, discord.abc.Messageable):
            target = channel
        else:
            target = client.get_partial_messageable(channel_id, guild_id=self.interaction.guild_id)
        reference = None
        if self.original_id is not None:
            reference = discord.MessageReference(
                message_id=self.original_id,
                channel_id=channel_id,
                guild_id=self.interaction.guild_id,
                fail_if_not_exists=False,
            )
        successor = ChannelSurface(
            target, channel_id, mentions=self.mentions, reply_to=reference, typing=False
        )
        successor.final_view = self.final_view
        successor.stop_key = self.stop_key
        return successor

    def message_ids(self) -> list[int]:
        ids = [] if self.original_id is None else [self.original_id]
        return ids + [m.id for m in self.followups if m is not None]

    async def close(self) -> None:
        _INTERACTION_CHANNELS.pop(self.interaction.token, None)
