"""What the Slack bot does with each event, command and shortcut.

`SlackBot` handles conversations, feedback, approvals, Stop and `/forget` itself, and
holds the parts that have a module of their own: `summaries` (`/summarize`, the
*Summarize thread* shortcut, Share), `agent` (Slack's agent threads), `admin` (the
settings modal, the Home tab) and `knowledge` (`/recap`, history search).

Every entry point (`on_*`) returns at once: it only decides whether there is work and
starts it as a tracked background task, so Bolt acknowledges Slack's request within
milliseconds and shutdown can wait for the work in flight.

Conversations (one `ConversationKey` per Slack thread):

* a mention in a channel is answered in the thread (a top-level mention starts a thread
  under it); the bot then follows that thread and answers later messages there without a
  mention;
* a direct message is answered in a thread under it, and that thread is the conversation
  (the same rule as in channels: Slack's stream API replies in threads, and it is how
  Slack presents AI apps' DMs: one thread per chat);
* the bot's own messages are never answered, other bots' only with `SLACK_ANSWER_BOTS`,
  and then only when they mention or DM the bot (two bots that follow each other's
  threads would talk forever).

The message identity `channel:ts` is the engine's event id, so the `app_mention` and
`message` deliveries of one mention, and Slack's retries, give one reply.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, Literal

from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.admin import SlackAdmin
from bots.slack.agent import SlackAgentThreads
from bots.slack.format import (
    REASON_BLOCK,
    REASON_INPUT,
    SHARE_ACTION,
    feedback_reason_view,
    safe_mrkdwn,
)
from bots.slack.history import (
    Identity,
    SlackReader,
    display_name,
    file_attachments,
    is_conversation_message,
    is_own,
)
from bots.slack.knowledge import SlackKnowledge
from bots.slack.sink import STREAM_INTERVAL, UPDATE_INTERVAL, slack_pacers, slack_reply
from bots.slack.summaries import SUMMARIZE_SHORTCUT, SlackSummaries, Window, parse_window
from core import (
    Author,
    ChatMessage,
    ConversationKey,
    Engine,
    Incoming,
    Intake,
    MessageRef,
    NameDirectory,
    PagedReply,
    ReplySink,
    Settings,
    bind,
    log_context,
    reported,
)

# SHARE_ACTION, SUMMARIZE_SHORTCUT, Window and parse_window live in `format` and
# `summaries`; they stay importable from here.
__all__ = [
    "SHARE_ACTION",
    "SUMMARIZE_SHORTCUT",
    "SlackBot",
    "Window",
    "parse_window",
    "slack_position",
]

log = logging.getLogger(__name__)


Respond = Callable[..., Awaitable[Any]]

HELP = (
    "*What I can do*\n"
    "• Mention me in a channel and I answer in a thread; after that I follow the thread, "
    "no mention needed.\n"
    "• Send me a direct message: each message starts a conversation in its own thread.\n"
    "• `@{name} summarize` in a thread, or the *Summarize thread* message shortcut: "
    "a summary of the whole thread.\n"
    "• `/summarize [#channel] [hours]`: a summary of a channel's recent messages "
    "(24 h by default), shown only to you until you share it.\n"
    "• `@{name} forget` in a thread, or `/forget` in a channel or DM: I erase what I "
    "remember of it (`/forget` of a whole channel: workspace admins and owners, and the "
    "channel's creator)."
)

FORGET_REFUSED = (
    "Only workspace admins and owners, and the channel's creator, can make me forget a "
    "whole channel. To erase one conversation, say `@{name} forget` in its thread."
)


def slack_position(ts: str) -> int:
    """A Slack timestamp ("1712345678.000123") as an exact integer: the platform's order."""
    seconds, _, micros = ts.partition(".")
    return int(seconds) * 1_000_000 + int(micros.ljust(6, "0")[:6] or 0)


_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{2,}$")
_TS = re.compile(r"^\d{1,12}\.\d{1,9}$")


def well_formed(event: object) -> bool:
    """The fields a message event must have, of the types Slack sends. Anything else (a
    signed but malformed or fuzzed payload) is ignored instead of failing later."""
    if not isinstance(event, Mapping):
        return False
    channel, ts, thread_ts = event.get("channel"), event.get("ts"), event.get("thread_ts")
    if not (isinstance(channel, str) and _CHANNEL_ID.match(channel)):
        return False
    if not (isinstance(ts, str) and _TS.match(ts)):
        return False
    if thread_ts is not None and not (isinstance(thread_ts, str) and _TS.match(thread_ts)):
        return False
    for name in ("user", "text", "bot_id", "subtype", "channel_type", "team", "user_team"):
        if event.get(name) is not None and not isinstance(event.get(name), str):
            return False
    files = event.get("files")
    if files is not None and not (
        isinstance(files, list) and all(isinstance(f, Mapping) for f in files)
    ):
        return False
    blocks = event.get("blocks")
    return blocks is None or isinstance(blocks, list)


# --- the bot --------------------------------------------------------------------------------


class SlackBot:
    """The Slack side of teambot for one workspace (one bot token)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        client: AsyncWebClient,
        identity: Identity,
        *,
        stream_interval: float = STREAM_INTERVAL,
        update_interval: float = UPDATE_INTERVAL,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        self.identity = identity
        self._intervals = (update_interval, stream_interval)
        self.pacers = slack_pacers(update_interval, stream_interval)
        self.directory = NameDirectory(
            engine.cache_get,
            engine.cache_set,
            namespace="slack-user",
            tenant=identity.team_id,
            lookup=partial(display_name, client),
        )
        self.reader = SlackReader(client, self.directory, identity)
        help_text = HELP.format(name=identity.name)
        self.knowledge = SlackKnowledge(self)
        self.summaries = SlackSummaries(self)
        self.admin = SlackAdmin(self, help_text)
        self.agent = SlackAgentThreads(self)
        engine.knowledge.attach("slack", history=self.knowledge, recaps=self.knowledge)
        self.intake = Intake(engine, help_text=help_text, reopen=self._reopen)
        # Summaries and commands other than answers run a bounded number at a time.
        self._slots = engine.slow_slots  # core's pool, apart from replies
        self._token = settings.slack_bot_token or SecretStr("")

    @property
    def update_interval(self) -> float:
        """Seconds between two message edits in a channel (tests shorten it)."""
        return self._intervals[0]

    @update_interval.setter
    def update_interval(self, seconds: float) -> None:
        self._intervals = (seconds, self._intervals[1])
        self.pacers = slack_pacers(*self._intervals)

    @property
    def stream_interval(self) -> float:
        """Seconds between two appends to one native stream."""
        return self._intervals[1]

    @stream_interval.setter
    def stream_interval(self, seconds: float) -> None:
        self._intervals = (self._intervals[0], seconds)
        self.pacers = slack_pacers(*self._intervals)

    # --- events (each returns once the message has its place in line) ----------------------

    async def on_app_mention(self, event: Mapping[str, Any], team_id: str) -> None:
        if not well_formed(event):
            log.info("ignored a malformed app_mention event")
            return
        if self._wanted(event, addressed=True):
            await self._submit(event, team_id, addressed=True)

    async def on_message(self, event: Mapping[str, Any], team_id: str) -> None:
        if not isinstance(event, Mapping):
            return
        subtype = event.get("subtype")
        if subtype in ("message_changed", "message_deleted"):
            self._changed(event, team_id)
            return
        if not is_conversation_message(event) or not well_formed(event):
            return
        if event.get("channel_type") == "im":
            if self._wanted(event, addressed=True):
                if await self.agent.thread_turn(event, team_id):
                    return
                await self._submit(event, team_id, addressed=True)
            return
        if f"<@{self.identity.bot_user_id}" in str(event.get("text") or ""):
            return  # a mention: its app_mention delivery answers it
        thread_ts = event.get("thread_ts")
        if not thread_ts or thread_ts == event.get("ts"):
            return  # a top-level channel message not addressed to the bot
        if self._wanted(event, addressed=False):
            await self._submit(event, team_id, addressed=False)

    def _wanted(self, event: Mapping[str, Any], *, addressed: bool) -> bool:
        if is_own(event, self.identity):
            return False
        is_bot = bool(event.get("bot_id")) or event.get("subtype") == "bot_message"
        if is_bot:
            return addressed and self.settings.slack_answer_bots
        return bool(event.get("user"))

    async def _submit(self, event: Mapping[str, Any], team_id: str, *, addressed: bool) -> None:
        """Hand the message to core's intake: its place in line is taken before Slack's
        request is acknowledged; the slow work (names, files, the thread) runs at its turn."""
        event = dict(event)
        channel, ts = str(event["channel"]), str(event["ts"])
        root = str(event.get("thread_ts") or ts)
        key = ConversationKey("slack", team_id, channel, root)
        user = str(event.get("user") or "")
        team = str(event.get("user_team") or event.get("team") or team_id)

        async def prepare(incoming: Incoming) -> Incoming:
            text = await self.reader.plain_text(event, addressed=addressed)
            author_id, name, is_bot = await self.reader.speaker(event)
            files = [f for f in event.get("files") or [] if isinstance(f, dict)]
            attachments = file_attachments(
                files,
                self.engine.http,
                self._token.get_secret_value(),
                api_url=self.settings.slack_api_url,
                max_bytes=self.settings.max_attachment_bytes,
            )
            return replace(
                incoming, text=text, author=Author(author_id, name, is_bot), attachments=attachments
            )

        async def earlier() -> list[ChatMessage]:
            return await self.reader.chat_messages(
                await self.reader.thread(channel, root, before=ts)
            )

        async def transcript() -> list[ChatMessage]:
            raw = await self.reader.thread(channel, root, before=ts)
            return await self.reader.chat_messages(raw, transcript=True, channel=channel)

        async def open_sink(_incoming: Incoming) -> ReplySink:
            reply = self.reply_in(channel, root, user=user or None, team=team)
            await reply.status("")  # "is thinking…" at once
            return reply

        async def notify(text: str) -> None:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=safe_mrkdwn(text), thread_ts=root
            )

        incoming = Incoming(
            key=key,
            event_id=f"{channel}:{ts}",
            author=Author(user or "unknown", user or "someone"),
            text=str(event.get("text") or ""),
            message_id=ts,
            ts=float(ts),
            position=slack_position(ts),
            addressed=addressed,
            follow=addressed,
            prepare=prepare,
            backfill=earlier if root != ts else None,
            transcript=transcript,
            reply_to={"channel": channel, "thread_ts": root, "user": user, "team": team},
            notify=notify if user else None,
        )
        token = bind(conversation=str(key), message=f"{channel}:{ts}")
        try:
            await self.intake.submit(incoming, open_sink)
        finally:
            log_context.reset(token)

    def _changed(self, event: Mapping[str, Any], team_id: str) -> None:
        """An edit or a deletion: memory follows it (and cached summaries are dropped)."""
        channel = str(event.get("channel") or "")
        if not channel:
            return
        if event.get("subtype") == "message_deleted":
            ts = str(event.get("deleted_ts") or "")
            if ts:
                ref = MessageRef("slack", team_id, channel, ts)
                self.engine.spawn(self.intake.deleted(ref), name=f"deleted:{channel}:{ts}")
            return
        message = event.get("message")
        if not isinstance(message, Mapping) or not message.get("ts"):
            return
        ref = MessageRef("slack", team_id, channel, str(message["ts"]))
        addressed = f"<@{self.identity.bot_user_id}" in str(message.get("text") or "")

        async def edited() -> None:
            await self.intake.edited(
                ref, await self.reader.plain_text(message, addressed=addressed)
            )

        self.engine.spawn(edited(), name=f"edited:{channel}:{message['ts']}")

    # --- who may manage a channel (settings, /forget, recaps) ----------------------------

    async def may_change(self, user_id: str, channel: str, *, workspace: bool) -> bool:
        """Workspace admins and owners; for a channel's settings also its creator."""
        if await self.reader.is_admin(user_id):
            return True
        if workspace or not channel:
            return False
        try:
            info = await self.client.conversations_info(channel=channel)
        except SlackApiError:
            return False
        return bool((info.get("channel") or {}).get("creator") == user_id)

    # --- feedback and Stop --------------------------------------------------------------

    async def on_feedback(
        self, team_id: str, user_id: str, value: str, trigger_id: str | None
    ) -> None:
        """👍/👎 under an answer: the vote counts at once; 👎 then asks for an optional
        reason in a modal (which replaces the vote with the same rating and the reason)."""
        rating, _, answer_id = value.partition(":")
        if rating not in ("up", "down") or not answer_id or not user_id:
            return
        tenant = ConversationKey("slack", team_id, "-", "-").tenant
        if rating == "down" and trigger_id:
            # A trigger is good for 3 s: the modal first, the vote right after.
            try:
                await self.client.views_open(
                    trigger_id=trigger_id, view=feedback_reason_view(answer_id, tenant)
                )
            except SlackApiError as error:
                log.info("could not ask for a reason: %s", error.response.get("error"))
        vote: Literal["up", "down"] = "up" if rating == "up" else "down"
        known = await self.engine.feedback.vote(tenant, answer_id, user_id, vote)
        if not known:
            log.info("a vote on an answer no longer kept (%s)", answer_id)

    async def on_feedback_reason(self, user_id: str, view: Mapping[str, Any]) -> None:
        """The 👎 modal was sent: keep the reason with the vote."""
        try:
            meta = json.loads(str(view.get("private_metadata") or "{}"))
            answer_id, tenant = str(meta["answer"]), str(meta["tenant"])
        except (ValueError, KeyError, TypeError):
            return
        values = (view.get("state") or {}).get("values") or {}
        reason = str(((values.get(REASON_BLOCK) or {}).get(REASON_INPUT) or {}).get("value") or "")
        await self.engine.feedback.vote(tenant, answer_id, user_id, "down", reason)

    async def on_session_stopped(self, event: Mapping[str, Any], team_id: str) -> None:
        """Slack's Stop button on an agent session (`agent_session_stopped`): the answer
        being written in that thread stops, on whichever replica writes it."""
        channel = str(event.get("channel") or "")
        thread_ts = str(event.get("thread_ts") or "")
        if not channel or not thread_ts:
            return
        key = ConversationKey("slack", team_id, channel, thread_ts)
        if not await self.intake.stop(key):
            log.info("stop pressed in %s: nothing was being written", key)

    # --- forgetting -------------------------------------------------------------------------

    async def forget_channel(
        self, team_id: str, user_id: str, channel: str, respond: Respond
    ) -> None:
        """`/forget`: every conversation the bot had in this channel (all its threads).
        Only those who may manage the channel (`may_change`); in a DM, its person. Anyone
        in a thread may still erase that thread (`@teambot forget` there)."""
        if not channel.startswith("D") and not await self.may_change(
            user_id, channel, workspace=False
        ):
            await respond(
                text=FORGET_REFUSED.format(name=self.identity.name), response_type="ephemeral"
            )
            return
        key = ConversationKey("slack", team_id, channel, "-")
        erased = await self.engine.forget_channel(key)
        where = "this conversation" if channel.startswith("D") else "this channel"
        count = f"{erased} conversation{'s' if erased != 1 else ''}"
        await respond(
            text=(
                f"Done: I erased my memory of all my conversations in {where} ({count}: every "
                "thread I took part in), with their cached summaries, and stopped following "
                "its threads. Mention me to start fresh."
            ),
            response_type="ephemeral",
        )

    # --- plumbing -----------------------------------------------------------------------

    def reply_in(
        self,
        channel: str,
        thread_ts: str,
        *,
        user: str | None = None,
        team: str | None = None,
        stream: bool = True,
    ) -> PagedReply:
        """A reply in a thread (paced edits, or Slack's native stream); a summary it shows
        is remembered, so it stays out of later summaries' transcripts."""
        reply = slack_reply(
            self.client,
            self.pacers,
            channel=channel,
            thread_ts=thread_ts,
            user=user,
            team=team or self.identity.team_id,
            stream=stream,
            resolve=self.directory.known,
        )
        reply.after_finish.append(self.summaries.remember)
        return reply

    async def _reopen(self, address: Mapping[str, str]) -> ReplySink:
        """A reply in a thread another process was answering (a turn paused for approval)."""
        reply = self.reply_in(
            address["channel"],
            address["thread_ts"],
            user=address.get("user") or None,
            team=address.get("team") or None,
        )
        await reply.status("")
        return reply

    async def on_approval(
        self, card_id: str, user_id: str, respond: Respond, *, approve: bool
    ) -> None:
        """Approve / Deny on an approval card: only the asker or a workspace admin."""
        name = await self.directory.name(user_id)
        decision = await self.intake.decide(card_id, user_id, name, approve=approve)
        if decision.not_the_asker and await self.reader.is_admin(user_id):
            decision = await self.intake.decide(card_id, user_id, name, approve=approve, admin=True)
        if decision.outcome is None or decision.outcome == "expired":
            await respond(
                text=safe_mrkdwn(decision.message),
                response_type="ephemeral",
                replace_original=False,
            )

    def spawn(
        self, work: Coroutine[Any, Any, None], *, name: str, respond: Respond | None = None
    ) -> None:
        """Run a command's or shortcut's work in the background, within the concurrency
        limit; a failure is told to the user through `respond`."""

        async def slotted() -> None:
            try:
                async with self._slots:
                    await work
            finally:
                work.close()  # cancelled before its slot: it never ran

        async def tell(text: str) -> None:
            if respond is not None:
                await respond(text=f":warning: {safe_mrkdwn(text)}", replace_original=False)

        self.engine.spawn(reported(slotted(), tell, name), name=name)

    async def shutdown(self, grace: float) -> None:
        """Stop taking work; answers in flight get `grace` seconds, then a restart note."""
        await self.engine.drain(grace)
