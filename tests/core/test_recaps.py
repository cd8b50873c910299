"""Scheduled recaps on real Redis, with the summary route on the fake CometAPI: exactly one
recap per due time across replicas, only what is new, none when nothing is, a missed due
time run once after a restart, an old one skipped."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence

import pytest

from core.engine import Engine
from core.recaps import RecapPost, RecapRun, Recaps, RecapScheduler, RecapTarget
from core.settings import Settings
from core.store import connect_store
from core.types import Author, ChatMessage, ConversationKey
from tests.fakes.cometapi import FakeCometAPI
from tests.support import team_model

FLASH = "gemini-3.1-flash-lite"
GENERAL = ConversationKey("slack", "T1", "C-general", "1700000000.000100")
ADMIN = Author("U-admin", "Ada")
START = dt.datetime(2025, 6, 2, 8, 0, 10, tzinfo=dt.UTC).timestamp()  # a Monday


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Channel:
    """The platform, as the adapters will show it to the scheduler: a channel's messages
    (thread replies included) and the recaps posted into it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.messages: list[ChatMessage] = []
        self.posts: list[RecapPost] = []
        self.posted = asyncio.Event()
        self.reads = 0
        self.fail_posts = 0
        self.gate: asyncio.Event | None = None  # set: reads wait for it (a slow platform)
        self.reading = asyncio.Event()
        self._n = 0

    def say(self, name: str, text: str, at: float) -> None:
        self._n += 1
        self.messages.append(ChatMessage.user(text, name, id=f"m{self._n}", ts=at))

    async def read_since(
        self, channel: ConversationKey, since_ts: float, limit: int
    ) -> Sequence[ChatMessage]:
        assert channel == GENERAL.channel_key()
        self.reads += 1
        await asyncio.sleep(0)
        if self.gate is not None:
            self.reading.set()
            await self.gate.wait()
        return [m for m in self.messages if m.ts > since_ts][-limit:]

    async def post(self, channel: ConversationKey, recap: RecapPost) -> str | None:
        await asyncio.sleep(0)
        if self.fail_posts:
            self.fail_posts -= 1
            raise ConnectionError("platform down")
        self.posts.append(recap)
        self.posted.set()
        self._n += 1
        bot = ChatMessage.assistant(recap.markdown).model_copy(
            update={"id": f"m{self._n}", "ts": self.clock()}
        )
        self.messages.append(bot)
        return bot.id


@pytest.fixture
def replicas(
    settings: Settings, engine: Engine, cometapi: FakeCometAPI
) -> contextlib.AbstractAsyncContextManager[
    tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]
]:
    cometapi.set_responder(team_model)

    @contextlib.asynccontextmanager
    async def start(
        count: int = 2,
    ) -> AsyncIterator[tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]]:
        clock = Clock(START)
        channel = Channel(clock)
        made = []
        clients = []
        for _ in range(count):
            redis = (await connect_store(settings)).redis  # each replica has its own pool
            clients.append(redis)
            recaps = Recaps(
                redis, prefix=settings.redis_key_prefix, min_interval_minutes=1, clock=clock
            )
            made.append((recaps, RecapScheduler(recaps, {"slack": channel}, engine.summarizer)))
        try:
            yield clock, channel, made
        finally:
            for redis in clients:
                await redis.aclose()

    return start()


def flash_texts(cometapi: FakeCometAPI) -> list[str]:
    return [r.last_user_text for r in cometapi.requests_for(FLASH)]


async def tick_all(schedulers: Sequence[RecapScheduler], rounds: int = 2) -> list[RecapRun]:
    """Every replica ticks, several times over, all at once."""
    runs = await asyncio.gather(*(s.tick() for s in schedulers for _ in range(rounds)))
    return [run for batch in runs for run in batch]


async def test_every_minute_with_two_replicas_posts_once_per_due_time(
    replicas: contextlib.AbstractAsyncContextManager[
        tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]
    ],
    cometapi: FakeCometAPI,
    engine: Engine,
) -> None:
    async with replicas as (clock, channel, made):
        (recaps, _), _ = made
        schedulers = [scheduler for _, scheduler in made]
        reply = await recaps.command(GENERAL, "/recap every 1m", setter=ADMIN, may_manage=True)
        state = await recaps.get(GENERAL)
        assert state is not None
        first = state.next_due
        assert reply == (
            f"This channel will get a recap every minute; the first one is due "
            f"{state.schedule.local(first)}."
        )
        channel.say("Bob", "old news from before the recap window", first - 300)
        channel.say("Bob", "We decided the venue is the Old Mill", first - 40)
        channel.say("Carol", "I will book the bus", first - 20)

        assert await tick_all(schedulers) == []  # not due yet
        clock.now = first + 1
        runs = await tick_all(schedulers)
        assert [(r.due, r.outcome, r.messages) for r in runs] == [(first, "posted", 2)]
        assert len(channel.posts) == 1
        [request] = flash_texts(cometapi)
        assert "Old Mill" in request and "book the bus" in request and "old news" not in request
        assert channel.posts[0].markdown.startswith("**Recap: 2 messages since ")

        # minute 2: only the new message goes to Flash-Lite; our own recap post does not
        channel.say("Dan", "Decision: the budget is 4,000 EUR", first + 30)
        clock.now = first + 61
        runs = await tick_all(schedulers)
        assert [(r.due, r.outcome, r.messages) for r in runs] == [(first + 60, "posted", 1)]
        request = flash_texts(cometapi)[-1]
        assert "4,000 EUR" in request
        assert "Old Mill" not in request.split("Conversation:")[1]
        assert "Recap:" not in request

        # minute 3: nothing new, no post and no model call
        clock.now = first + 121
        runs = await tick_all(schedulers)
        assert [(r.due, r.outcome) for r in runs] == [(first + 120, "nothing-new")]
        assert len(channel.posts) == 2 and len(flash_texts(cometapi)) == 2
        state = await recaps.get(GENERAL)
        assert state is not None and state.next_due == first + 180

    report = await engine.usage(GENERAL.tenant)
    tokens_in, _out, cost = report.by_route("summary")
    assert tokens_in > 0 and cost > 0  # billed through the engine's summary route
    assert cometapi.rejected == []


async def test_a_missed_due_time_runs_once_after_restart_and_an_old_one_is_skipped(
    replicas: contextlib.AbstractAsyncContextManager[
        tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]
    ],
    cometapi: FakeCometAPI,
) -> None:
    async with replicas as (clock, channel, made):
        (recaps, _), _ = made
        await recaps.command(GENERAL, "every 1m", setter=ADMIN, may_manage=True)
        state = await recaps.get(GENERAL)
        assert state is not None
        first = state.next_due
        # every process was down for three due times; two fresh replicas start together
        channel.say("Bob", "Decision: ship on Friday", first + 70)
        channel.say("Carol", "I will write the release notes", first + 100)
        clock.now = first + 200
        runs = await tick_all([scheduler for _, scheduler in made], rounds=3)
        assert [(r.due, r.outcome, r.messages) for r in runs] == [(first + 180, "posted", 2)]
        assert await tick_all([scheduler for _, scheduler in made]) == []  # never repeated
        assert len(channel.posts) == 1

        # an 8-hourly recap missed by seven hours is skipped; its messages wait for the next
        await recaps.command(GENERAL, "every 8h", setter=ADMIN, may_manage=True)
        state = await recaps.get(GENERAL)
        assert state is not None
        due = state.next_due
        channel.say("Bob", "Decision: freeze on Thursday", due - 600)
        clock.now = due + 7 * 3600
        runs = await tick_all([scheduler for _, scheduler in made])
        assert [(r.due, r.outcome) for r in runs] == [(due, "skipped")]
        assert await tick_all([scheduler for _, scheduler in made]) == []
        assert len(channel.posts) == 1 and len(flash_texts(cometapi)) == 1
        state = await recaps.get(GENERAL)
        assert state is not None and state.next_due == due + 8 * 3600
        clock.now = state.next_due
        runs = await tick_all([scheduler for _, scheduler in made])
        assert [(r.outcome, r.messages) for r in runs] == [("posted", 1)]
        assert "freeze on Thursday" in flash_texts(cometapi)[-1]


async def test_a_daily_recap_missed_within_six_hours_runs_once(
    replicas: contextlib.AbstractAsyncContextManager[
        tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]
    ],
) -> None:
    async with replicas as (clock, channel, made):
        (recaps, _), (_, other) = made
        await recaps.command(
            GENERAL, "daily 09:00", setter=ADMIN, may_manage=True, timezone="Europe/Paris"
        )
        state = await recaps.get(GENERAL)
        assert state is not None
        due = state.next_due
        assert dt.datetime.fromtimestamp(due, state.schedule.zone).strftime("%H:%M") == "09:00"
        # the first recap covers the day before its due time
        assert due - state.since == 24 * 3600
        channel.say("Bob", "Decision: standups move to 10:00", due - 3600)
        clock.now = due + 5 * 3600  # the only process came back five hours late
        runs = await other.tick()
        assert [(r.due, r.outcome) for r in runs] == [(due, "posted")]
        assert await other.tick() == []


async def test_a_failed_recap_leaves_its_messages_for_the_next_one(
    replicas: contextlib.AbstractAsyncContextManager[
        tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]
    ],
    cometapi: FakeCometAPI,
) -> None:
    async with replicas as (clock, channel, made):
        (recaps, scheduler), _ = made
        await recaps.command(GENERAL, "every 1m", setter=ADMIN, may_manage=True)
        state = await recaps.get(GENERAL)
        assert state is not None
        channel.say("Bob", "Decision: new logo", state.next_due - 10)
        channel.fail_posts = 1
        clock.now = state.next_due
        assert [r.outcome for r in await scheduler.tick()] == ["failed"]
        channel.say("Carol", "Decision: blue", state.next_due + 10)
        clock.now = state.next_due + 60
        runs = await scheduler.tick()
        assert [(r.outcome, r.messages) for r in runs] == [("posted", 2)]
        assert "new logo" in flash_texts(cometapi)[-1]


async def test_a_recap_still_running_at_the_next_due_time_is_not_overlapped(
    replicas: contextlib.AbstractAsyncContextManager[
        tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]
    ],
) -> None:
    async with replicas as (clock, channel, made):
        (recaps, slow), (_, other) = made
        await recaps.command(GENERAL, "every 1m", setter=ADMIN, may_manage=True)
        state = await recaps.get(GENERAL)
        assert state is not None
        channel.say("Bob", "Decision: one", state.next_due - 5)
        channel.gate = asyncio.Event()
        clock.now = state.next_due
        running = asyncio.create_task(slow.tick())
        await asyncio.wait_for(channel.reading.wait(), 5)
        clock.now = state.next_due + 60
        assert [r.outcome for r in await other.tick()] == ["busy"]
        channel.gate.set()
        assert [(r.outcome, r.messages) for r in await running] == [("posted", 1)]
        channel.say("Carol", "Decision: two", state.next_due + 90)
        clock.now = state.next_due + 120
        assert [(r.outcome, r.messages) for r in await other.tick()] == [("posted", 1)]
        assert len(channel.posts) == 2


async def test_command_permissions_listing_and_off(
    replicas: contextlib.AbstractAsyncContextManager[
        tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]
    ],
) -> None:
    async with replicas as (_clock, _channel, made):
        (recaps, _), (other, _) = made
        member = Author("U-member", "Max")
        assert await recaps.command(GENERAL, "/recap", setter=member, may_manage=False) == (
            "This channel has no scheduled recap. Set one with `/recap daily 09:00`, "
            "`/recap weekdays 17:30`, `/recap weekly mon 09:00`, `/recap every 4h`, "
            "`/recap off`, or `/recap` to see this channel's schedule."
        )
        refused = await recaps.command(GENERAL, "weekly mon 09:00", setter=member, may_manage=False)
        assert refused == "Only people who can manage this channel can set or remove its recap."
        assert await recaps.get(GENERAL) is None
        assert await recaps.command(GENERAL, "daily 25:00", setter=ADMIN, may_manage=True) == (
            "'25:00' is not a time of day; use 24-hour HH:MM, for example 09:00 or 17:30."
        )
        await recaps.command(
            GENERAL, "weekdays 17:30", setter=ADMIN, may_manage=True, timezone="America/Chicago"
        )
        # any replica, any thread of the channel, sees the same schedule
        thread = ConversationKey("slack", "T1", "C-general", "other-thread")
        listing = await other.command(thread, "", setter=member, may_manage=False)
        assert listing == (
            "This channel gets a recap on weekdays at 17:30 (America/Chicago); the next one "
            "is due Mon 2 Jun 17:30 CDT."
        )
        assert await other.command(thread, "off", setter=member, may_manage=False) == (
            "Only people who can manage this channel can set or remove its recap."
        )
        assert await other.command(thread, "off", setter=ADMIN, may_manage=True) == (
            "Recaps in this channel are off."
        )
        assert await recaps.get(GENERAL) is None
        assert await recaps.due_channels("slack", START + 10 * 86400) == []


async def test_the_run_loop_posts_a_due_recap_and_stops(
    replicas: contextlib.AbstractAsyncContextManager[
        tuple[Clock, Channel, list[tuple[Recaps, RecapScheduler]]]
    ],
) -> None:
    async with replicas as (clock, channel, made):
        (recaps, scheduler), _ = made
        await recaps.command(GENERAL, "every 1m", setter=ADMIN, may_manage=True)
        state = await recaps.get(GENERAL)
        assert state is not None
        channel.say("Bob", "Decision: go", state.next_due - 5)
        clock.now = state.next_due + 1
        stop = asyncio.Event()
        loop = asyncio.create_task(scheduler.run(stop))
        await asyncio.wait_for(channel.posted.wait(), 10)
        stop.set()
        await asyncio.wait_for(loop, 5)
        assert len(channel.posts) == 1


def test_the_fake_channel_is_a_recap_target(settings: Settings) -> None:
    assert isinstance(Channel(Clock(0)), RecapTarget)
