"""The one way in: every message that may be answered, from every adapter.

An adapter turns a platform event into an `Incoming` and calls `Intake.submit` once,
*before* it acknowledges the event. In one Redis step, core decides: a duplicate delivery
(Slack's retries, the other replica) is dropped; a message neither addressed to the bot
nor in a conversation it follows is left alone; any other takes its place in its
conversation's line, ordered by where the platform put it, across every process. A
mention that opens a thread makes the bot follow it in that same step, so a follow-up
typed a moment later, while the first answer still waits for a slot, is answered after
it, with its memory.

Then, in the background: wait for the turn → take one of the process's slots → open the
adapter's sink → let the adapter complete the message (names, files) → read an existing
thread once (backfill) → run a command or answer. The turn is held by a lease in Redis
until the answer is stored; a turn whose lease is lost stops (see `core.queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from redis.exceptions import RedisError

from core import metrics
from core.commands import Command, is_stop, parse_command, raw_command
from core.engine import Engine, Outcome
from core.failures import MEMORY_DOWN, oops
from core.logs import bind
from core.memory import MessageRef
from core.queue import Admission, LeaseLost, Ticket
from core.ratelimit import limited_note
from core.sink import ReplySink, show_summary
from core.tools.approval import (
    APPROVED,
    DENIED,
    EXPIRED,
    ApprovalUI,
    Decision,
    PausedTurn,
)
from core.tools.approval import Outcome as Decided
from core.types import Author, ConversationKey, Incoming

__all__ = ["DEFAULT_HELP", "Intake", "OpenSink"]

log = logging.getLogger(__name__)

#: Where the answer to a message goes, opened when it is the message's turn (so answers
#: are created in the order the questions were asked).
OpenSink = Callable[[Incoming], Awaitable[ReplySink]]

DEFAULT_HELP = (
    "Ask me anything here and I answer, with the memory of this conversation. "
    "`summarize` gives a summary of it, `forget` makes me erase my memory of it."
)

FORGOTTEN = (
    "Done: I erased my memory of this conversation and stopped following it. "
    "Mention me if you want me back."
)

RESTARTING_SOON = "I'm restarting. Please try again in a minute."

ELSEWHERE = "That Stop button belongs somewhere else."

NOTHING_TO_STOP = "There is nothing to stop: I'm not writing an answer here right now."


#: Opens a reply from the address an adapter gave (`Incoming.reply_to`).
Reopen = Callable[[Mapping[str, str]], Awaitable[ReplySink]]


class Intake:
    """Admission and turns for one process. `help_text` answers the `help` command;
    `reopen` lets this process finish a turn another one paused for approval."""

    def __init__(
        self, engine: Engine, *, help_text: str = DEFAULT_HELP, reopen: Reopen | None = None
    ) -> None:
        self.engine = engine
        self.reopen = reopen
        self.line = engine.line
        self.memory = engine.memory
        self.help_text = help_text
        # Backpressure: a burst is admitted at once but worked on a bounded number at a
        # time (Redis pool, platform rate limits); a slot is taken only at a message's
        # turn, so it is never held by a message waiting behind another.
        self._slots = asyncio.Semaphore(engine.settings.reply_concurrency)
        # channel → (until, answer mode): a follow-up is admitted without a Redis read
        # of its channel's settings more than every few seconds
        self._modes: dict[str, tuple[float, str]] = {}

    # --- admission ---------------------------------------------------------------------

    async def submit(self, incoming: Incoming, open_sink: OpenSink) -> Admission:
        """Admit `incoming` (one Redis round trip: call it before acknowledging the
        event) and answer it in the background when its turn comes. A `stop` does not
        wait in line: it stops the answer being written now."""
        if is_stop(incoming.text) and (
            incoming.addressed or await self._safely(self.line.is_followed(incoming.key))
        ):
            self.engine.spawn(self._stop(incoming, open_sink), name="stop")
            return Admission.ADMITTED
        admitted = await self._admit(incoming, open_sink)
        if isinstance(admitted, Admission):
            return admitted
        if await self._limited(incoming, open_sink):
            await self.line.leave(admitted)
            await self.line.done(admitted, handled=True)  # a redelivery stays unanswered
            return Admission.LIMITED
        task = self.engine.spawn(
            self._process(incoming, admitted, open_sink),
            name=f"{incoming.key.platform}:{incoming.event_id}",
        )
        if task is None:  # shutting down: give it back so a redelivery is answered
            await self.line.leave(admitted)
            await self.line.done(admitted, handled=False)
            return Admission.REFUSED
        return Admission.ADMITTED

    async def run(self, incoming: Incoming, sink: ReplySink) -> Outcome:
        """Admit `incoming` and answer it into `sink` before returning (the console)."""

        async def opened(_incoming: Incoming) -> ReplySink:
            return sink

        admitted = await self._admit(incoming, opened)
        if isinstance(admitted, Admission):
            return Outcome.DUPLICATE if admitted is Admission.DUPLICATE else Outcome.FAILED
        return await self._process(incoming, admitted, opened)

    async def stop(self, key: ConversationKey) -> bool:
        """Stop the answer being written in `key`'s conversation (any process), within a
        second. False if none is."""
        return await self.line.request_stop(key)

    async def stop_pressed(
        self, raw_key: str, platform: str, workspace: str, here: Iterable[str]
    ) -> str | None:
        """A Stop button on an answer was pressed in the channel or thread `here`: it stops
        that answer only if the button belongs to this workspace and place (a forged or
        copied button cannot stop someone else's answer). None: stopped; otherwise the
        note for the person who pressed it."""
        try:
            key = ConversationKey.parse(raw_key)
        except ValueError:
            return ELSEWHERE
        if (key.platform, key.workspace) != (platform, workspace) or not set(here) & {
            key.channel,
            key.thread,
        }:
            return ELSEWHERE
        try:
            stopped = await self.stop(key)
        except Exception as error:
            log.warning("could not stop %s: %s", key, error)
            stopped = False
        return None if stopped else "There is nothing to stop: that answer has ended."

    async def _stop(self, incoming: Incoming, open_sink: OpenSink) -> None:
        if not await self.engine.once("stop", f"{incoming.key}:{incoming.event_id}"):
            return  # a redelivery
        if await self.stop(incoming.key) or not incoming.addressed:
            return
        sink = await open_sink(incoming)
        await sink.finish(NOTHING_TO_STOP)

    async def admit_command(
        self,
        platform: str,
        workspace: str,
        user: str,
        *,
        command: str,
        cooldown: float = 0.0,
        counted: bool = True,
    ) -> str | None:
        """May `user` run a model-calling command (`/summarize`, `/recap`, Discord's
        `/ask`) now? None: go ahead; otherwise the note to show them privately (a command
        is always answered, so it is shown each time). Refused while this process shuts
        down, within `cooldown` seconds of the user's last such command (per platform,
        across processes), and over USER_RATE_LIMIT, which messages share; `counted=False`
        for a command whose question goes through `submit`, which counts it. The store
        being slow or down never holds the command: the cooldown is then skipped."""
        if not self.engine.accepting:
            return RESTARTING_SOON
        if cooldown > 0:
            try:
                wait = await asyncio.wait_for(
                    self.engine.cooldown(f"{platform}-model", user, cooldown), 1.0
                )
            except Exception as error:
                log.warning("cooldown check failed: %s", error)
                wait = 0.0
            if wait > 0:
                left = max(1, math.ceil(wait))
                return (
                    f"You're going a little fast. Please wait {left} "
                    f"second{'s' if left != 1 else ''} before using /{command} again."
                )
        if not counted:
            return None
        verdict = await self.engine.rate_limit.check(platform, workspace, user)
        return None if verdict.allowed else limited_note(verdict)

    async def _limited(self, incoming: Incoming, open_sink: OpenSink) -> bool:
        """Over USER_RATE_LIMIT: not answered; the author is told once per window, in
        private where the platform can, and nobody else is affected."""
        key = incoming.key
        verdict = await self.engine.rate_limit.check(
            key.platform, key.workspace, incoming.author.id
        )
        if verdict.allowed:
            return False
        log.info(
            "%s is over the rate limit; %s not answered", incoming.author.id, incoming.event_id
        )
        if verdict.tell:
            note = limited_note(verdict)
            self.engine.spawn(_notify(incoming, note, open_sink), name="rate-limited")
        return True

    @staticmethod
    async def _safely(check: Awaitable[bool]) -> bool:
        try:
            return await check
        except RedisError:
            return False

    async def _answer_mode(self, key: ConversationKey) -> str:
        channel = str(key.channel_key())
        now = time.monotonic()
        cached = self._modes.get(channel)
        if cached is not None and cached[0] > now:
            return cached[1]
        mode = (await self.engine.channels.effective(key)).answer_mode
        if len(self._modes) > 10_000:
            self._modes.clear()
        self._modes[channel] = (now + 5.0, mode)
        return mode

    async def _admit(self, incoming: Incoming, open_sink: OpenSink) -> Ticket | Admission:
        try:
            follow = incoming.follow
            # "mentions only" in this channel: no follow-ups, no threads followed
            if (not incoming.addressed or follow) and await self._answer_mode(
                incoming.key
            ) == "mentions":
                if not incoming.addressed:
                    return Admission.IGNORED
                follow = False
            admitted = await self.line.admit(
                incoming.key,
                incoming.event_id,
                incoming.place,
                addressed=incoming.addressed,
                follow=follow,
            )
        except RedisError as error:
            log.error("memory store failed while admitting %s: %s", incoming.event_id, error)
            metrics.ERRORS.labels("memory").inc()
            if incoming.addressed:  # tell the person who asked, never silence
                self.engine.spawn(_tell(open_sink, incoming, MEMORY_DOWN), name="memory-down")
            return Admission.FAILED
        if admitted is Admission.DUPLICATE:
            log.info("duplicate event %s ignored", incoming.event_id)
            metrics.REPLIES.labels(incoming.key.platform, Outcome.DUPLICATE).inc()
        return admitted

    # --- the turn ------------------------------------------------------------------------

    async def _process(self, incoming: Incoming, ticket: Ticket, open_sink: OpenSink) -> Outcome:
        bind(conversation=str(incoming.key), event_id=incoming.event_id)
        try:
            try:
                await self.line.wait(ticket)
            except LeaseLost:
                return Outcome.DUPLICATE  # another process has taken the event over
            async with self._pool(incoming):
                # The sink opens only now: a platform that shows anything at once (a
                # message) shows answers in the order the questions were asked.
                try:
                    sink = await open_sink(incoming)
                except Exception:
                    log.exception("could not open a reply for %s", incoming.event_id)
                    return Outcome.FAILED
                return await self._turn(incoming, ticket, sink)
        finally:
            await self.line.leave(ticket)
            await self.line.done(ticket, handled=False)  # no-op once handled

    def _pool(self, incoming: Incoming) -> asyncio.Semaphore:
        """A summary asked in a message runs in core's slow pool, so it never holds a
        slot an answer is waiting for."""
        if incoming.addressed and raw_command(incoming.text) is Command.SUMMARIZE:
            return self.engine.slow_slots
        return self._slots

    async def _turn(self, incoming: Incoming, ticket: Ticket, sink: ReplySink) -> Outcome:
        try:
            if incoming.prepare is not None:
                incoming = await incoming.prepare(incoming)
            command = parse_command(incoming.text) if incoming.addressed else None
            if command is None:  # a command reads what it needs itself
                await self._backfill(incoming)
        except Exception:
            error_id = secrets.token_hex(3)
            log.exception("could not read %s (error %s)", incoming.event_id, error_id)
            await _fail(sink, f"I couldn't read this message. {oops(error_id)}")
            await self.line.done(ticket, handled=True)
            return Outcome.FAILED
        if command is None:
            return await self.engine.answer(incoming, sink, ticket)
        try:
            await self._command(command, incoming, sink)
            return Outcome.ANSWERED
        except Exception:
            error_id = secrets.token_hex(3)
            log.exception("command %s failed (error %s)", command, error_id)
            await _fail(sink, oops(error_id))
            return Outcome.FAILED
        finally:
            await self.line.done(ticket, handled=True)

    async def _backfill(self, incoming: Incoming) -> None:
        """First contact with an existing thread: its earlier messages become memory, once.
        It runs inside the turn, so no other message of the thread can slip in between."""
        if incoming.backfill is None or not await self.memory.needs_import(incoming.key):
            return
        try:
            earlier = await incoming.backfill()
        except Exception as error:
            log.warning("could not read the earlier messages of %s: %s", incoming.key, error)
            return
        if await self.memory.import_history(incoming.key, earlier):
            log.info("imported %d earlier messages of %s", len(earlier), incoming.key)

    async def _command(self, command: Command, incoming: Incoming, sink: ReplySink) -> None:
        key = incoming.key
        if command is Command.HELP:
            await sink.finish(self.help_text)
        elif command is Command.FORGET:
            await self.engine.forget(key)
            await sink.finish(FORGOTTEN)
        elif command is Command.STOP:  # it reached its turn: what it meant has ended
            await sink.finish(NOTHING_TO_STOP)
        else:
            if incoming.transcript is not None:
                messages = list(await incoming.transcript())
            else:
                messages = [m for m in await self.memory.everything(key) if m.role != "tool"]
            scope = ConversationKey(
                key.platform, key.workspace, key.channel, f"{key.thread}#summary"
            )
            result = await self.engine.summarize(
                scope, messages, sink, heading="Thread summary", show=False
            )
            if result is not None:
                await show_summary(sink, result)

    # --- approvals ------------------------------------------------------------------------

    async def decide(
        self, approval_id: str, user_id: str, user_name: str, *, approve: bool, admin: bool = False
    ) -> Decision:
        """A click on Approve or Deny. Only the asker (or an admin) decides; the first
        click wins. The process waiting for it goes on; if that process is gone, this one
        finishes the turn."""
        approvals = self.engine.approvals
        paused = await approvals.find(approval_id)
        if paused is None:
            return Decision(None, "This request is no longer open (decided or expired).")
        if user_id != paused.author_id and not admin:
            return Decision(
                None,
                f"Only {paused.author_name} (or an admin) can decide this.",
                not_the_asker=True,
            )
        if time.time() > paused.card.expires_at:
            return Decision(EXPIRED, "This request has expired; it was not run.")
        outcome: Decided = APPROVED if approve else DENIED
        if not await approvals.decide(paused, outcome, user_name):
            earlier = await approvals.decided(paused)
            return Decision(
                None, f"This request was {earlier[0] if earlier else 'decided'} already."
            )
        said = "Approved: running it now." if approve else "Denied: it will not run."
        if await self.line.holder_alive(paused.key, paused.member):
            return Decision(outcome, said)
        # The process that asked is gone: this one finishes the turn.
        self.engine.spawn(
            self._resume(paused, outcome, user_name), name=f"resume:{paused.key.platform}"
        )
        return Decision(outcome, said, resumed_here=True)

    async def _resume(self, paused: PausedTurn, outcome: Decided, by: str) -> None:
        ticket = await self.line.take_over(paused.key, paused.member, paused.event_id)
        if ticket is None:
            return  # resumed elsewhere, or its holder came back
        try:
            if self.reopen is None:
                log.warning("cannot finish paused turn %s here: no reply surface", paused.id)
                return
            sink = await self.reopen(paused.reply)
            ui = getattr(sink, "approval_ui", None)
            if isinstance(ui, ApprovalUI):
                where = {k[5:]: v for k, v in paused.reply.items() if k.startswith("card.")}
                with contextlib.suppress(Exception):
                    await ui.settle(paused.card, outcome, by, where)
            await self.engine.approvals.close(paused)
            await self.line.unpause(ticket)
            incoming = Incoming(
                key=paused.key,
                event_id=paused.event_id,
                author=Author(paused.author_id, paused.author_name),
                text=paused.user_message.content,
                reply_to=paused.reply,
            )
            async with self._slots:
                await self.engine.answer(incoming, sink, ticket, resume=(paused, outcome, by))
        finally:
            await self.line.leave(ticket)
            await self.line.done(ticket, handled=True)

    # --- answers in channels ----------------------------------------------------------------

    async def remember_answer(self, key: ConversationKey, message_ids: Iterable[str]) -> None:
        """The messages that show an answer posted in a channel (not in a thread): a reply
        to one of them continues `key`'s conversation (`replied_to`), while memory lasts."""
        ttl = self.engine.settings.memory_ttl_seconds
        for message_id in message_ids:
            try:
                await self.engine.cache_set(_answers(key.platform), message_id, str(key), ttl=ttl)
            except Exception as error:  # a later reply then starts afresh
                log.warning("could not remember answer %s: %s", message_id, error)

    async def replied_to(
        self, platform: str, workspace: str, channel: str, message_id: str
    ) -> ConversationKey | None:
        """The conversation a reply to `message_id` continues: the one whose answer that
        message shows, and only in this very workspace and channel (a reply never reaches
        another channel's memory). None: the reply starts a conversation of its own."""
        try:
            stored = await self.engine.cache_get(_answers(platform), message_id)
            key = ConversationKey.parse(stored) if stored is not None else None
        except Exception as error:
            log.warning("could not look up answer %s: %s", message_id, error)
            return None
        if key is None or (key.platform, key.workspace, key.channel) != (
            platform,
            workspace,
            channel,
        ):
            return None
        return key

    # --- following, deletions and edits ------------------------------------------------------

    async def follow(self, key: ConversationKey) -> None:
        await self.line.follow(key)

    async def unfollow(self, key: ConversationKey) -> None:
        await self.line.unfollow(key)

    async def is_followed(self, key: ConversationKey) -> bool:
        return await self.line.is_followed(key)

    async def deleted(self, ref: MessageRef) -> bool:
        """A message was deleted on the platform: it leaves memory (and any rolling or
        cached summary that covered it). True if it was remembered."""
        removed = await self.memory.remove_message(ref)
        await self.memory.invalidate_summaries(ref.channel_key)
        return removed

    async def edited(self, ref: MessageRef, text: str) -> bool:
        """A message was edited on the platform: memory keeps the new text."""
        replaced = await self.memory.replace_message(ref, text)
        await self.memory.invalidate_summaries(ref.channel_key)
        return replaced


def _answers(platform: str) -> str:
    return f"{platform}-answer"


async def _fail(sink: ReplySink, message: str) -> None:
    try:
        await sink.fail(message)
    except Exception:
        log.exception("could not deliver a failure message")


async def _tell(open_sink: OpenSink, incoming: Incoming, message: str) -> None:
    try:
        sink = await open_sink(incoming)
    except Exception:
        log.exception("could not open a reply to say: %s", message)
        return
    await _fail(sink, message)


async def _notify(incoming: Incoming, message: str, open_sink: OpenSink) -> None:
    """Tell the author in private where the platform can; otherwise, or when that
    fails, in a reply."""
    if incoming.notify is None:
        await _tell(open_sink, incoming, message)
        return
    try:
        await incoming.notify(message)
    except Exception as error:
        log.warning("could not tell %s in private: %s", incoming.author.id, error)
        await _tell(open_sink, incoming, message)
