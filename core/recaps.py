"""Scheduled recaps: one per channel, stored in Redis, posted exactly once per due time
however many replicas run the scheduler.

Key layout (prefix `P`; `C` is the channel's ConversationKey, thread `*`; the `{C}` hash
tag keeps a channel's keys in one Redis Cluster slot, so the claim script may touch them):

    P:recap:{C}              hash  schedule, id, next_due, coverage (since, since_id),
                                   the previous recap (JSON), setter, last post id
    P:recap:{C}:due:ID:T     str   claim of due time T of schedule ID (SET NX in the script)
    P:recap-due:PLATFORM     zset  channel → next due time: the index schedulers scan

The channel hash is the truth; the index only finds due channels, and a scheduler repairs
an index entry that disagrees with its hash.

At a due time, every scheduler that sees it runs one script: it takes the due slot only
if the hash still has that `next_due`, and moves `next_due` to the first due time after
now in the same step. One scheduler wins; the others see it taken. A due time missed while
every process was down is run once (if within `catch_up`, 6 hours) and the ones before it
are skipped, never repeated. The winner reads the channel since the previous recap's
coverage, summarizes on the summary route and posts; only then is the coverage moved. A
recap that fails (model down, platform down, the process dies) leaves the coverage where
it was, so the next recap includes those messages: nothing is posted twice, nothing is
lost from the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.recap_schedule import USAGE, RecapSchedule, RecapSyntaxError, parse_recap
from core.settings import Settings
from core.store import RELEASE_IF_HELD, honour_cancel
from core.summaries import StructuredSummary, Summarizer, render_markdown
from core.types import Author, ChatMessage, ConversationKey

__all__ = [
    "RecapPost",
    "RecapRun",
    "RecapScheduler",
    "RecapState",
    "RecapTarget",
    "Recaps",
    "SummarizerFor",
]

log = logging.getLogger(__name__)

# A recap longer than this (a huge map-reduce) may overlap the next one.
RUN_LEASE_MS = 15 * 60 * 1000

SummarizerFor = Callable[[str], Summarizer]
"""tenant → a Summarizer whose calls are budgeted and billed to it (`Engine.summarizer`)."""

# Take due slot KEYS[2] of schedule ARGV[3] if the hash KEYS[1] still says it is due at
# ARGV[1]; move next_due to ARGV[2]; take the channel's run lease KEYS[3] (token ARGV[5]).
# 1 taken, 2 taken but the previous recap is still running, 0 someone else took it,
# -1 schedule gone or replaced.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[3] then return -1 end
if redis.call('HGET', KEYS[1], 'next_due') ~= ARGV[1] then return 0 end
if not redis.call('SET', KEYS[2], ARGV[5], 'NX', 'PX', ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'next_due', ARGV[2])
if not redis.call('SET', KEYS[3], ARGV[5], 'NX', 'PX', ARGV[6]) then return 2 end
return 1
"""


# Move the coverage forward (never back) while a schedule exists: ARGV[1] since ts,
# then field/value pairs to set with it.
_COVER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0')
if tonumber(ARGV[1]) < since then return 0 end
redis.call('HSET', KEYS[1], 'since', ARGV[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Drop an index entry still at the stale score ARGV[2] (a concurrent /recap moved it).
_UNINDEX = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class RecapPost:
    """A recap to post; the adapter renders `summary` (or posts `markdown`)."""

    channel: ConversationKey
    summary: StructuredSummary
    markdown: str
    messages: int
    since: float
    until: float
    due: float


@runtime_checkable
class RecapTarget(Protocol):
    """What an adapter gives the scheduler for its platform."""

    async def read_since(
        self, channel: ConversationKey, since_ts: float, limit: int
    ) -> Sequence[ChatMessage]:
        """Messages of the channel posted after `since_ts`, thread replies included, oldest
        first; at most `limit` (the newest). Each with `id`, `ts`, `name`; the bot's own
        messages with role `assistant`."""
        ...

    async def post(self, channel: ConversationKey, recap: RecapPost) -> str | None:
        """Post the recap in the channel; returns the posted message's id if known."""
        ...


@dataclass(frozen=True, slots=True)
class RecapState:
    channel: ConversationKey
    schedule: RecapSchedule
    id: str
    next_due: int
    since: float
    since_id: str
    set_by: str
    previous: StructuredSummary | None
    last_post: str

    @classmethod
    def load(cls, channel: ConversationKey, raw: Mapping[str, str]) -> RecapState | None:
        if not raw.get("schedule"):
            return None
        previous = raw.get("previous")
        return cls(
            channel=channel,
            schedule=RecapSchedule.from_json(raw["schedule"]),
            id=raw.get("id", ""),
            next_due=int(raw.get("next_due") or 0),
            since=float(raw.get("since") or 0),
            since_id=raw.get("since_id", ""),
            set_by=raw.get("set_by", ""),
            previous=StructuredSummary.model_validate_json(previous) if previous else None,
            last_post=raw.get("last_post", ""),
        )


@dataclass(frozen=True, slots=True)
class RecapRun:
    """What one scheduler did with one due time (tests, logs)."""

    channel: ConversationKey
    due: int
    outcome: str  # posted | nothing-new | skipped | busy | failed
    messages: int = 0


class Recaps:
    """Schedules in Redis, and the `/recap` command. `clock` gives epoch seconds."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        min_interval_minutes: int = 60,
        default_timezone: str = "UTC",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.min_interval_minutes = min_interval_minutes
        self.default_timezone = default_timezone
        self.clock = clock
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(RELEASE_IF_HELD)  # the run lease
        self._cover = redis.register_script(_COVER)
        self._unindex = redis.register_script(_UNINDEX)
        self.changed = asyncio.Event()  # a schedule was set here: schedulers look again

    @classmethod
    def from_settings(
        cls, redis: Redis, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> Recaps:
        return cls(
            redis,
            prefix=settings.redis_key_prefix,
            min_interval_minutes=settings.recap_min_interval_minutes,
            default_timezone=settings.recap_timezone,
            clock=clock,
        )

    # --- keys ------------------------------------------------------------------------

    def _hash(self, channel: ConversationKey) -> str:
        return f"{self.prefix}:recap:{{{channel.channel_key()}}}"

    def _slot(self, channel: ConversationKey, schedule_id: str, due: int) -> str:
        return f"{self._hash(channel)}:due:{schedule_id}:{due}"

    def _index(self, platform: str) -> str:
        return f"{self.prefix}:recap-due:{platform}"

    # --- schedules -------------------------------------------------------------------

    async def get(self, channel: ConversationKey) -> RecapState | None:
        channel = channel.channel_key()
        raw = cast(dict[str, str], await self.redis.hgetall(self._hash(channel)))
        return RecapState.load(channel, raw)

    async def set(
        self, channel: ConversationKey, schedule: RecapSchedule, setter: Author
    ) -> RecapState:
        """Set (or replace) the channel's schedule. The first recap covers the period
        before its due time (a daily recap: the last day); a replaced schedule keeps the
        coverage of the recaps already posted."""
        channel = channel.channel_key()
        now = self.clock()
        first = schedule.next_due(now)
        existing = await self.get(channel)
        fields: dict[Any, str] = {
            "schedule": schedule.to_json(),
            "id": secrets.token_hex(6),
            "next_due": str(first),
            "set_by": setter.id,
            "set_at": repr(now),
        }
        if existing is None or existing.since <= 0:
            fields["since"] = repr(float(schedule.last_due(first - 1)))
        await self.redis.hset(self._hash(channel), mapping=fields)
        await self.redis.zadd(self._index(channel.platform), {str(channel): first})
        self.changed.set()
        state = await self.get(channel)
        assert state is not None
        return state

    async def remove(self, channel: ConversationKey) -> bool:
        channel = channel.channel_key()
        removed = bool(await self.redis.delete(self._hash(channel)))
        await self.redis.zrem(self._index(channel.platform), str(channel))
        return removed

    async def command(
        self,
        channel: ConversationKey,
        text: str,
        *,
        setter: Author,
        may_manage: bool,
        timezone: str | None = None,
    ) -> str:
        """Run `/recap …` for `channel`; returns the reply (one or two sentences).
        `may_manage`: the setter may manage the channel (the adapter decides: Slack admins,
        owners, the channel's creator; Discord Manage Channels); only they set or remove.
        `timezone`: the setter's IANA zone if the platform knows it."""
        zone = timezone or self.default_timezone
        try:
            parsed = parse_recap(
                text,
                timezone=zone,
                min_interval_minutes=self.min_interval_minutes,
                now=self.clock(),
            )
        except RecapSyntaxError as error:
            return str(error)
        if parsed.action == "list":
            state = await self.get(channel)
            if state is None:
                return f"This channel has no scheduled recap. Set one with {USAGE}."
            schedule = state.schedule
            return (
                f"This channel gets a recap {schedule.describe()}; the next one is due "
                f"{schedule.local(state.next_due)}."
            )
        if not may_manage:
            return "Only people who can manage this channel can set or remove its recap."
        if parsed.action == "off":
            if await self.remove(channel):
                return "Recaps in this channel are off."
            return "This channel had no scheduled recap."
        assert parsed.schedule is not None
        state = await self.set(channel, parsed.schedule, setter)
        return (
            f"This channel will get a recap {state.schedule.describe()}; the first one is due "
            f"{state.schedule.local(state.next_due)}."
        )

    # --- what the scheduler uses ------------------------------------------------------

    async def due_channels(self, platform: str, now: float) -> list[tuple[str, float]]:
        raw = cast(
            list[tuple[str, float]],
            await self.redis.zrangebyscore(self._index(platform), "-inf", now, withscores=True),
        )
        return [(str(member), float(score)) for member, score in raw]

    async def next_wakeup(self, platforms: Sequence[str]) -> float | None:
        earliest: float | None = None
        for platform in platforms:
            first = await self.redis.zrange(self._index(platform), 0, 0, withscores=True)
            if first:
                score = float(first[0][1])
                earliest = score if earliest is None else min(earliest, score)
        return earliest

    def _running(self, channel: ConversationKey) -> str:
        return f"{self._hash(channel)}:running"

    async def claim(self, state: RecapState, slot: int, next_due: int, token: str) -> int:
        """Take due time `slot` and move the schedule on to `next_due`: 1 taken (with the
        channel's run lease, for `RUN_LEASE_MS`), 2 taken while the previous recap still
        runs, 0 taken by another process, -1 schedule replaced or gone."""
        result = await self._claim(
            keys=[
                self._hash(state.channel),
                self._slot(state.channel, state.id, slot),
                self._running(state.channel),
            ],
            args=[
                str(state.next_due),
                str(next_due),
                state.id,
                2 * 86_400_000,
                token,
                RUN_LEASE_MS,
            ],
        )
        return int(result)

    async def release(self, channel: ConversationKey, token: str) -> None:
        await self._release(keys=[self._running(channel)], args=[token])

    async def reindex(self, channel: ConversationKey, stale_score: float) -> None:
        """Make the index agree with the channel's hash after a lost or skipped claim."""
        state = await self.get(channel)
        index = self._index(channel.platform)
        if state is None:
            await self._unindex(keys=[index], args=[str(channel.channel_key()), repr(stale_score)])
        else:
            await self.redis.zadd(index, {str(state.channel): state.next_due})

    async def cover(
        self, state: RecapState, until: ChatMessage, summary: StructuredSummary | None, post: str
    ) -> None:
        """The next recap starts after `until`."""
        args: list[Any] = [repr(until.ts), "since_id", until.id or ""]
        if summary is not None:
            args += ["previous", summary.model_dump_json(), "last_post", post]
        await self._cover(keys=[self._hash(state.channel)], args=args)


class RecapScheduler:
    """Runs due recaps. Any number of processes may run one against the same Redis."""

    def __init__(
        self,
        recaps: Recaps,
        targets: Mapping[str, RecapTarget],
        summarizer_for: SummarizerFor,
        *,
        catch_up_seconds: float = 6 * 3600,
        max_messages: int = 5000,
        poll_seconds: float = 30.0,
        concurrency: int = 4,
    ) -> None:
        self.recaps = recaps
        self.targets = dict(targets)
        self.summarizer_for = summarizer_for
        self.catch_up = catch_up_seconds
        self.max_messages = max_messages
        self.poll = poll_seconds
        self._limit = asyncio.Semaphore(concurrency)

    @property
    def clock(self) -> Callable[[], float]:
        return self.recaps.clock

    async def tick(self) -> list[RecapRun]:
        """Run every recap due now (on this process's platforms); returns what was done."""
        now = self.clock()
        work = []
        for platform in self.targets:
            for member, score in await self.recaps.due_channels(platform, now):
                try:
                    channel = ConversationKey.parse(member)
                except ValueError:
                    log.warning("ignoring a malformed recap index entry %r", member)
                    continue
                work.append(self._due(channel, score, now))
        runs = await asyncio.gather(*work)
        return [run for run in runs if run is not None]

    async def _due(self, channel: ConversationKey, score: float, now: float) -> RecapRun | None:
        async with self._limit:
            try:
                state = await self.recaps.get(channel)
                if state is None or state.next_due != score or state.next_due > now:
                    await self.recaps.reindex(channel, score)
                    return None
                slot = state.schedule.last_due(now)
                following = state.schedule.next_due(now)
                token = secrets.token_hex(8)
                taken = await self.recaps.claim(state, slot, following, token)
                await self.recaps.reindex(channel, score)
            except RedisError as error:
                log.warning("recap scheduling for %s failed: %s", channel, error)
                return None
            if taken == 2:
                log.warning(
                    "recap of %s due %s skipped: the previous one is still running",
                    channel,
                    state.schedule.local(slot),
                )
                return RecapRun(channel, slot, "busy")
            if taken != 1:
                return None
            try:
                if now - slot > self.catch_up:
                    log.warning(
                        "recap of %s due %s was missed by more than %.0f h; skipped",
                        channel,
                        state.schedule.local(slot),
                        self.catch_up / 3600,
                    )
                    return RecapRun(channel, slot, "skipped")
                return await self._run(state, slot)
            finally:
                with contextlib.suppress(RedisError):
                    await self.recaps.release(state.channel, token)

    async def _run(self, state: RecapState, slot: int) -> RecapRun:
        channel = state.channel
        target = self.targets[channel.platform]
        try:
            read = await target.read_since(channel, state.since, self.max_messages)
            skip = {state.since_id, state.last_post} - {""}
            new = sorted(
                (m for m in read if m.ts > state.since and m.id not in skip), key=lambda m: m.ts
            )
            people = [m for m in new if m.role == "user" and m.content.strip()]
            if not people:
                if new:
                    await self.recaps.cover(state, new[-1], None, "")
                log.info("recap of %s: nothing new since the last one", channel)
                return RecapRun(channel, slot, "nothing-new")
            background = state.previous.tldr if state.previous else None
            summarizer = self.summarizer_for(channel.tenant)
            summary = await summarizer.summarize(new, None, background)
            count = len(new)
            limited = " (the newest)" if len(read) >= self.max_messages else ""
            heading = (
                f"Recap: {count:,} message{'s' if count != 1 else ''}{limited} since "
                f"{state.schedule.local(state.since)}"
            )
            recap = RecapPost(
                channel,
                summary,
                render_markdown(summary, heading),
                count,
                state.since,
                new[-1].ts,
                slot,
            )
            posted = await target.post(channel, recap)
            with contextlib.suppress(RedisError):
                await self.recaps.cover(state, new[-1], summary, posted or "")
        except Exception:
            log.exception("recap of %s due %s failed", channel, state.schedule.local(slot))
            return RecapRun(channel, slot, "failed")
        log.info("recap of %s posted (%d messages)", channel, count)
        return RecapRun(channel, slot, "posted", count)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set: at each due time, and every `poll_seconds` to see
        schedules set by other processes."""
        while not stop.is_set():
            honour_cancel()
            self.recaps.changed.clear()
            try:
                await self.tick()
                earliest = await self.recaps.next_wakeup(list(self.targets))
            except RedisError as error:
                log.warning("recap scheduler: %s", error)
                earliest = None
            wait = self.poll
            if earliest is not None:
                wait = min(wait, max(0.5, earliest - self.clock()))
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.recaps.changed.wait()),
            ]
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
