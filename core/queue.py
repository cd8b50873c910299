"""Each conversation's line, in Redis: who is answered next, across every process.

Keys (all in the conversation's Redis Cluster slot, `{K}`):

    P:q:{K}        sorted set  the line: one member per admitted message, `POSITION:TOKEN`
                               (POSITION zero-padded, all scores 0, so Redis orders the
                               members by the platform position people wrote in)
    P:q:{K}:cur    string      the member whose turn it is
    P:q:{K}:a:M    string      lease of member M (renewed by its holder's heartbeat)
    P:q:{K}:p:M    string      M's turn is paused for a person's approval (outlives M's process)
    P:q:{K}:stop   string      the member whose answer someone asked to stop (Stop, `stop`)
    P:ev:{K}:E     string      claim of platform event E: a lease while answering, "done" after
    P:f:{K}        string      the conversation is followed (answered without a mention)

A message is *admitted* in one script: not a duplicate (claim), addressed or followed,
its place in line taken (and, if it opens a thread, the thread followed). Its turn comes
when no earlier message is waiting or being answered; a holder whose lease ran out (its
process died, or Redis was away longer than the lease) is skipped. A holder that cannot
renew its lease in time stops by itself (`Ticket.lost`) before the lease expires in
Redis, so two answers of one conversation never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from redis.exceptions import RedisError

from core import metrics
from core import queue_scripts as scripts
from core.settings import Settings
from core.store import RELEASE_IF_HELD, TRANSIENT, Store, channel_glob, honour_cancel
from core.types import ConversationKey

__all__ = ["Admission", "LeaseLost", "Line", "Ticket"]

log = logging.getLogger(__name__)

POSITION_DIGITS = 20


class Admission(StrEnum):
    """What `Line.admit` decided."""

    ADMITTED = "admitted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # neither addressed to the bot nor in a conversation it follows
    FAILED = "failed"  # the memory store did not answer (the asker is told)
    REFUSED = "refused"  # shutting down: not acknowledged work, a redelivery is answered
    LIMITED = "limited"  # the author is over USER_RATE_LIMIT (told once per window)


class LeaseLost(Exception):
    """The turn's lease ran out (Redis was away longer than LOCK_TTL): stop, write nothing."""


@dataclass(slots=True, eq=False)
class Ticket:
    """A message's place in its conversation's line, kept alive by a heartbeat."""

    key: ConversationKey
    member: str
    token: str
    event: str
    line: str
    lease: str
    claim: str
    valid_until: float  # monotonic time until which the lease is surely ours
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeat: asyncio.Task[None] | None = None
    released: bool = False
    finished: bool = False
    #: Waiting for a person's approval: if this process stops, the turn stays paused in
    #: line for another process to finish.
    paused: bool = False

    @property
    def is_lost(self) -> bool:
        return self.lost.is_set()


def member_for(position: int, token: str) -> str:
    return f"{max(0, position):0{POSITION_DIGITS}d}:{token}"


class Line:
    """Admission, turns, leases and event claims of every conversation."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.keys = store.keys
        self.lease_ms = int(settings.lock_ttl_seconds * 1000)
        # A line's keys matter only while messages are in it; an hour of quiet lets them go.
        self.line_ttl_ms = max(3_600_000, int(settings.total_timeout * 4000))
        self.follow_ttl_ms = settings.memory_ttl_seconds * 1000
        self.dedupe_ttl = settings.dedupe_ttl_seconds
        redis = store.redis
        self._admit = redis.register_script(scripts.ADMIT)
        self._turn = redis.register_script(scripts.TURN)
        self._leave = redis.register_script(scripts.LEAVE)
        self._renew = redis.register_script(scripts.RENEW)
        self._rejoin = redis.register_script(scripts.REJOIN)
        self._take_over = redis.register_script(scripts.TAKE_OVER)
        self._finish = redis.register_script(scripts.FINISH)
        self._release = redis.register_script(RELEASE_IF_HELD)
        self._stop = redis.register_script(scripts.STOP)
        self._wakeups: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    # --- names ---------------------------------------------------------------------------

    def _line(self, key: ConversationKey) -> str:
        return self.keys.of("q", key)

    def claim_key(self, key: ConversationKey, event_id: str) -> str:
        return self.keys.of("ev", key, event_id)

    def follow_key(self, key: ConversationKey) -> str:
        return self.keys.of("f", key)

    def _wake_channel(self, line: str) -> str:
        return f"{line}:wake"

    # --- admission ---------------------------------------------------------------------

    async def admit(
        self,
        key: ConversationKey,
        event_id: str,
        position: int,
        *,
        addressed: bool,
        follow: bool,
    ) -> Ticket | Admission:
        """Claim the event and take its place in line, in one step. Returns the ticket,
        or why not (`DUPLICATE`, `IGNORED`). The ticket's heartbeat starts at once."""
        token = secrets.token_hex(8)
        line = self._line(key)
        member = member_for(position, token)
        lease = f"{line}:a:{member}"
        claim = self.claim_key(key, event_id)
        started = time.monotonic()
        result = int(
            await self._admit(
                keys=[claim, self.follow_key(key), line, lease],
                args=[
                    self.lease_ms,
                    token,
                    member,
                    int(addressed),
                    int(follow),
                    self.follow_ttl_ms,
                    self.line_ttl_ms,
                ],
            )
        )
        if result == 0:
            return Admission.DUPLICATE
        if result < 0:
            return Admission.IGNORED
        ticket = Ticket(
            key,
            member,
            token,
            event_id,
            line,
            lease,
            claim,
            valid_until=started + self.lease_ms / 1000 * 0.8,
        )
        ticket.heartbeat = asyncio.create_task(self._heartbeat(ticket), name="teambot-lease")
        return ticket

    async def wait(
        self, ticket: Ticket, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Until it is this ticket's turn. A waiting message whose lease ran out (Redis
        was away) takes its place again, at its position; LeaseLost only if another
        process has taken the event over meanwhile."""
        metrics.QUEUE_DEPTH.inc()
        try:
            for _attempt in range(5):
                try:
                    await self._wait(ticket, on_wait)
                    return
                except LeaseLost:
                    if not await self._take_back(ticket):
                        raise
                    on_wait = None  # told once is enough
            raise LeaseLost(ticket.key)
        finally:
            metrics.QUEUE_DEPTH.dec()

    async def _take_back(self, ticket: Ticket) -> bool:
        if ticket.heartbeat is not None and not ticket.heartbeat.done():
            ticket.stop.set()
            await asyncio.wait({ticket.heartbeat}, timeout=5)
        again: int | None = None
        delay = 0.1
        deadline = time.monotonic() + max(5.0, self.lease_ms / 1000 * 3)
        while again is None:
            try:
                again = int(
                    await self._rejoin(
                        keys=[ticket.claim, ticket.line, ticket.lease],
                        args=[ticket.token, ticket.member, self.lease_ms, self.line_ttl_ms],
                    )
                )
            except (*TRANSIENT, RedisError) as error:
                if time.monotonic() > deadline:
                    log.warning("could not take the place of %s back: %s", ticket.key, error)
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if not again:
            log.info("event %s of %s was taken over by another process", ticket.event, ticket.key)
            return False
        log.info("the place in line of %s was taken back after a Redis outage", ticket.key)
        ticket.lost = asyncio.Event()
        ticket.stop = asyncio.Event()
        ticket.valid_until = time.monotonic() + self.lease_ms / 1000 * 0.8
        ticket.heartbeat = asyncio.create_task(self._heartbeat(ticket), name="teambot-lease")
        return True

    async def _wait(self, ticket: Ticket, on_wait: Callable[[], Awaitable[None]] | None) -> None:
        delay = 0.01
        told = False
        cur = f"{ticket.line}:cur"
        while True:
            honour_cancel()
            if ticket.is_lost:
                raise LeaseLost(ticket.key)
            try:
                state = int(await self._turn(keys=[ticket.line, cur], args=[ticket.member]))
            except TRANSIENT as error:
                log.warning("could not check the turn of %s: %s", ticket.key, error)
                state = 0
            if state == 1:
                if ticket.is_lost:  # our turn, but too late to be sure the lease is ours
                    raise LeaseLost(ticket.key)
                return
            if state == -1:
                ticket.lost.set()
                raise LeaseLost(ticket.key)
            if not told and on_wait is not None:
                told = True
                await on_wait()
            self._listen()
            event = self._wakeups.setdefault(ticket.line, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await event.wait()
            # Releases wake waiters at once (a Redis message reaches every process); the
            # poll is the safety net that notices a holder whose lease ran out.
            delay = min(delay * 2, 1.0)

    async def leave(self, ticket: Ticket) -> None:
        """Give the turn up (idempotent): the next message may go."""
        if ticket.released:
            return
        ticket.released = True
        # The heartbeat is stopped by a flag, not cancelled: a cancellation can be lost
        # inside a Redis call under load (asyncio.wait_for on Python 3.11).
        ticket.stop.set()
        if ticket.heartbeat is not None:
            _done, late = await asyncio.wait({ticket.heartbeat}, timeout=5)
            for task in late:
                task.cancel()
        if ticket.paused:
            # The turn waits for a person: it keeps its place (the pause holds the line);
            # only this process lets go, so whoever gets the decision can take over.
            with contextlib.suppress(RedisError):
                await self.store.redis.delete(ticket.lease)
            log.info("left the paused turn of %s for another process to finish", ticket.key)
            return
        try:
            await self._leave(
                keys=[ticket.line, f"{ticket.line}:cur", ticket.lease],
                args=[ticket.member, self.line_ttl_ms, self._wake_channel(ticket.line)],
            )
        except TRANSIENT:
            log.warning("could not leave the line of %s; its lease will expire", ticket.key)
        self._wake(ticket.line)

    async def done(self, ticket: Ticket, *, handled: bool) -> None:
        """End the event's claim: `handled` (answered, or the user was told why not) makes
        a redelivery a duplicate; otherwise a redelivery is answered."""
        if ticket.finished:
            return
        ticket.finished = True
        with contextlib.suppress(RedisError):
            if handled:
                await self._finish(keys=[ticket.claim], args=[ticket.token, self.dedupe_ttl])
            else:
                await self._release(keys=[ticket.claim], args=[ticket.token])

    # --- paused turns (waiting for a person's approval) -----------------------------------

    async def pause(self, ticket: Ticket, seconds: float) -> None:
        """Hold the turn for `seconds` even if this process goes away (a person is asked
        to approve a tool call; another process may resume the turn when they answer)."""
        pause = f"{ticket.line}:p:{ticket.member}"
        await self.store.redis.set(pause, "1", px=int(seconds * 1000))

    async def unpause(self, ticket: Ticket) -> None:
        await self.store.redis.delete(f"{ticket.line}:p:{ticket.member}")

    async def holder_alive(self, key: ConversationKey, member: str) -> bool:
        """Is the process that holds this place in line still renewing its lease?"""
        return bool(await self.store.redis.exists(f"{self._line(key)}:a:{member}"))

    async def take_over(self, key: ConversationKey, member: str, event_id: str) -> Ticket | None:
        """Take over a paused turn whose process is gone: its lease becomes ours. None if
        the turn is not paused any more, or its holder is alive after all."""
        token = secrets.token_hex(8)
        line = self._line(key)
        lease = f"{line}:a:{member}"
        claim = self.claim_key(key, event_id)
        taken = int(
            await self._take_over(
                keys=[lease, f"{line}:p:{member}", claim], args=[token, self.lease_ms]
            )
        )
        if not taken:
            return None
        ticket = Ticket(
            key,
            member,
            token,
            event_id,
            line,
            lease,
            claim,
            valid_until=time.monotonic() + self.lease_ms / 1000 * 0.8,
        )
        ticket.heartbeat = asyncio.create_task(self._heartbeat(ticket), name="teambot-lease")
        return ticket

    def wake_event(self, key: ConversationKey) -> asyncio.Event:
        """An event set when anything in `key`'s line is released or decided (any process)."""
        self._listen()
        return self._wakeups.setdefault(self._line(key), asyncio.Event())

    async def announce(self, key: ConversationKey) -> None:
        """Wake every process waiting on `key`'s line (a decision was made)."""
        line = self._line(key)
        await self.store.redis.publish(self._wake_channel(line), "decided")
        self._wake(line)

    # --- stopping an answer ------------------------------------------------------------

    async def request_stop(self, key: ConversationKey) -> bool:
        """Ask whichever process is answering in `key`'s conversation to stop (within a
        second). False when nothing is being answered there."""
        line = self._line(key)
        member = await self._stop(
            keys=[line, f"{line}:cur"], args=[60_000, self._wake_channel(line)]
        )
        self._wake(line)
        return bool(member)

    async def stop_requested(self, ticket: Ticket, until: asyncio.Event) -> bool:
        """True once someone asked this ticket's answer to stop (any process): woken by
        the line's wake-ups, checked at least twice a second. False once `until` is set
        (the answer ended): the loop ends by itself, so a cancellation that the Redis
        client turned into a timeout of its own cannot keep it alive."""
        stop = f"{ticket.line}:stop"
        while not until.is_set():
            honour_cancel()
            event = self.wake_event(ticket.key)
            try:
                if await self.store.redis.get(stop) == ticket.member:
                    return True
            except (*TRANSIENT, RedisError) as error:
                log.debug("could not check for a stop of %s: %s", ticket.key, error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await event.wait()
        return False

    # --- following ---------------------------------------------------------------------

    async def follow(self, key: ConversationKey) -> None:
        await self.store.redis.set(self.follow_key(key), "1", px=self.follow_ttl_ms)

    async def unfollow(self, key: ConversationKey) -> None:
        await self.store.redis.delete(self.follow_key(key))

    async def is_followed(self, key: ConversationKey) -> bool:
        return bool(await self.store.redis.exists(self.follow_key(key)))

    async def unfollow_channel(self, channel: ConversationKey) -> int:
        """Stop following every conversation of a channel; returns how many."""
        pattern = self.keys.match("f", channel_glob(channel))
        count = 0
        async for name in self.store.scan(pattern):
            count += int(await self.store.redis.delete(name))
        return count

    # --- leases ---------------------------------------------------------------------------

    async def _heartbeat(self, ticket: Ticket) -> None:
        """Renew the lease and the claim every third of the lease. If renewing fails
        until the lease may have run out, the ticket is lost: its holder must stop."""
        lease_s = self.lease_ms / 1000
        interval = lease_s / 3
        leases = [ticket.lease, ticket.claim]
        while not ticket.stop.is_set():
            left = ticket.valid_until - time.monotonic()
            if left <= 0:
                self._lose(ticket, "it could not be renewed in time")
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(interval, left)):
                    await ticket.stop.wait()
                    return
            left = ticket.valid_until - time.monotonic()
            if left <= 0:
                self._lose(ticket, "it could not be renewed in time")
                return
            sent = time.monotonic()
            try:
                async with asyncio.timeout(left):
                    renewed = int(
                        await self._renew(keys=leases, args=[ticket.token, self.lease_ms])
                    )
            except TimeoutError:
                self._lose(ticket, "Redis did not answer in time")
                return
            except (*TRANSIENT, RedisError) as error:
                log.warning("heartbeat for %s failed: %s", ticket.key, error)
                await asyncio.sleep(min(0.2, max(0.0, ticket.valid_until - time.monotonic())))
                continue
            if renewed < 1:  # the lease is gone: its time ran out and another took over
                self._lose(ticket, "another process took over")
                return
            # Renewed when the request was sent at the latest; keep a margin for clock drift.
            ticket.valid_until = sent + lease_s * 0.8

    def _lose(self, ticket: Ticket, why: str) -> None:
        if not ticket.is_lost:
            log.warning("the turn of %s was lost: %s", ticket.key, why)
            metrics.ERRORS.labels("lease_lost").inc()
            ticket.lost.set()

    # --- wake-ups -----------------------------------------------------------------------

    def _wake(self, line: str) -> None:
        event = self._wakeups.pop(line, None)
        if event is not None:
            event.set()

    def _listen(self) -> None:
        if self._listener is None or self._listener.done():
            self._closing = False
            self._listener = asyncio.create_task(self._wake_listener(), name="teambot-wakeups")

    async def _wake_listener(self) -> None:
        """Turns "turn released" messages from any process into local wake-ups. Reads with
        a timeout and checks `_closing` between reads, so it ends on close even where a
        client library swallows the cancellation."""
        pattern = self.keys.match("q", "*") + ":wake"
        backoff = 0.1
        while not self._closing:
            pubsub = self.store.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                backoff = 0.1
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    channel = str((message or {}).get("channel", ""))
                    if channel.endswith(":wake"):
                        self._wake(channel[: -len(":wake")])
            except (*TRANSIENT, RedisError) as error:
                log.warning("wake-up channel lost (%s); polling until it is back", error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            # Bounded: the in-process store's pub/sub does not always end on cancel.
            await asyncio.wait({self._listener}, timeout=1.0)
            self._listener = None
