"""The per-channel write pacer, against a simulated bucket that behaves like Discord's
(N writes per window, rate-limit headers on every answer, 429 past the limit), on virtual
time so that timings are exact."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest

from core.outbound import Kind, Permit, Rate, RateReport, WritePacer
from tests.core.virtual_clock import run_virtual

LATENCY = 0.05  # one request's round trip to the fake platform
MARGIN = 0.05  # the pacer's safety margin (its default)


class Bucket:
    """A Discord-like per-channel bucket: a window of `per` seconds opens at the first
    write after the previous one ended and takes `limit` writes; one more is refused (429).
    Every answer carries X-RateLimit-* headers."""

    def __init__(self, limit: int = 5, per: float = 5.0, latency: float = LATENCY) -> None:
        self.limit, self.per, self.latency = limit, per, latency
        self.window_end: float | None = None
        self.remaining = limit
        self.accepted: list[float] = []
        self.refused = 0

    async def write(self) -> tuple[bool, RateReport]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.latency / 2)
        now = loop.time()
        if self.window_end is None or now >= self.window_end:
            self.window_end, self.remaining = now + self.per, self.limit
        ok = self.remaining > 0
        if ok:
            self.remaining -= 1
            self.accepted.append(now)
        else:
            self.refused += 1
        reset_after = math.ceil((self.window_end - now) * 1000) / 1000
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": "channel-bucket",
        }
        if not ok:
            headers["Retry-After"] = f"{reset_after:.3f}"
        await asyncio.sleep(self.latency / 2)
        return ok, RateReport.from_headers(headers, 200 if ok else 429)


@dataclass
class Answer:
    """One streamed answer written like a sink would: a single writer task, post then
    edit, the newest text in each write, final text promoted when the model is done."""

    name: str
    started: float = 0.0
    first_shown: float | None = None
    final_shown: float | None = None
    first_wait: float | None = None  # from asking for the first write to being let through
    writes: int = 0
    kinds: list[Kind] = field(default_factory=list)


async def stream_answer(
    pacer: WritePacer,
    bucket: Bucket,
    answer: Answer,
    *,
    key: str = "channel",
    duration: float = 1.0,
    tick: float = 0.05,
) -> None:
    loop = asyncio.get_running_loop()
    answer.started = loop.time()
    text = ["word"]
    done = False
    dirty = asyncio.Event()
    dirty.set()

    async def model() -> None:
        nonlocal done
        for _ in range(round(duration / tick)):
            await asyncio.sleep(tick)
            text.append("word")
            dirty.set()
        done = True
        pacer.promote(key, answer.name, "final")
        dirty.set()

    async def writer() -> None:
        shown: tuple[int, bool] | None = None
        while True:
            current = (len(text), done)
            if current == shown:
                if done:
                    return
                dirty.clear()
                await dirty.wait()
                continue
            kind: Kind = "final" if done else ("interim" if shown else "first")
            asked = loop.time()
            permit = await pacer.acquire(key, kind, stream=answer.name)
            if permit is None:
                continue
            if kind == "first" and answer.first_wait is None:
                answer.first_wait = loop.time() - asked
            current = (len(text), done)  # the newest state goes out
            ok, report = await bucket.write()
            permit.done(report)
            if not ok:
                continue
            answer.writes += 1
            answer.kinds.append("final" if current[1] else kind)
            shown = current
            if answer.first_shown is None:
                answer.first_shown = loop.time()
            if current[1]:
                answer.final_shown = loop.time()

    await asyncio.gather(model(), writer())


def least_time(streams: int, limit: int, per: float) -> float:
    """When the last final text can land at the earliest, on a bucket of `limit` writes per
    `per` seconds, for `streams` answers asked at once that finish within the first window:
    the first window goes to first writes (they go at once while there is room), and every
    answer then needs one more write with its final text (those whose first write had to
    wait post their final text as their only message). Windows needed: (streams + limit)
    / limit; the last one opens (windows - 1) windows after the first."""
    firsts = min(streams, limit)
    windows = math.ceil((streams + firsts) / limit)
    return (windows - 1) * per


def test_twenty_concurrent_answers_land_in_the_least_time_without_a_429() -> None:
    async def main() -> tuple[list[Answer], Bucket]:
        pacer = WritePacer(Rate(5, 5.0))
        bucket = Bucket()
        answers = [Answer(f"s{i}") for i in range(20)]
        await asyncio.gather(*(stream_answer(pacer, bucket, a) for a in answers))
        await pacer.close()
        return answers, bucket

    answers, bucket = run_virtual(main())
    assert bucket.refused == 0
    last = max(a.final_shown or math.inf for a in answers)
    bound = least_time(20, 5, 5.0)
    assert bound == 20.0
    # Each window after the first also waits for one round trip and the pacer's margin
    # (the platform's clock runs behind ours by half a round trip); the last write takes
    # one more round trip to be seen.
    slack = 4 * (LATENCY + MARGIN) + LATENCY + 1e-6
    assert bound <= last <= bound + slack
    # The first window went to first writes, at once; interim edits were all dropped.
    assert sorted(a.first_wait or 0.0 for a in answers)[:5] == [0.0] * 5
    assert all("interim" not in a.kinds for a in answers)
    assert sum(a.writes for a in answers) == 25


def test_first_writes_are_not_delayed_while_the_budget_has_room() -> None:
    async def main() -> tuple[list[Answer], Bucket]:
        pacer = WritePacer(Rate(5, 5.0))
        bucket = Bucket()
        answers = []
        for i in range(4):  # one after another, each streaming with interim edits
            answer = Answer(f"a{i}")
            answers.append(answer)
            await stream_answer(pacer, bucket, answer, duration=1.5)
            await asyncio.sleep(4.0)
        # A long answer streams; a new one starts while its edits are going out: the
        # edits left the reserve, so the new answer's first write goes at once.
        long, late = Answer("long"), Answer("late")
        answers += [long, late]

        async def later() -> None:
            await asyncio.sleep(2.5)
            await stream_answer(pacer, bucket, late, duration=0.5)

        await asyncio.gather(stream_answer(pacer, bucket, long, duration=4.0), later())
        await pacer.close()
        return answers, bucket

    answers, bucket = run_virtual(main())
    assert bucket.refused == 0
    assert [a.first_wait for a in answers] == [0.0] * 6
    assert all("interim" in a.kinds for a in answers[:5])
    assert all(a.final_shown is not None for a in answers)


def test_a_slack_like_budget_with_no_headers_paces_edits_at_its_default() -> None:
    async def main() -> list[float]:
        pacer = WritePacer(Rate(1, 1.0), margin=0.0)
        loop = asyncio.get_running_loop()
        granted: list[float] = []

        async def edit(stream: str) -> None:
            permit = await pacer.acquire("C1", "final", stream=stream)
            assert permit is not None
            granted.append(loop.time())
            permit.done()

        await asyncio.gather(*(edit(f"s{i}") for i in range(4)))
        await pacer.close()
        return granted

    assert run_virtual(main()) == [0.0, 1.0, 2.0, 3.0]


async def _acquire(pacer: WritePacer, kind: Kind, stream: Hashable, key: str = "k") -> Permit:
    permit = await pacer.acquire(key, kind, stream=stream)
    assert permit is not None
    return permit


def test_finals_go_before_interims_and_a_new_request_replaces_the_pending_one() -> None:
    async def main() -> None:
        pacer = WritePacer(Rate(1, 1.0), margin=0.0)
        (await _acquire(pacer, "first", "a")).done()
        order: list[str] = []

        async def ask(kind: Kind, stream: str) -> Permit | None:
            permit = await pacer.acquire("k", kind, stream=stream)
            if permit is not None:
                order.append(f"{stream}:{kind}")
                permit.done()
            return permit

        stale = asyncio.create_task(ask("interim", "a"))
        other = asyncio.create_task(ask("interim", "b"))
        await asyncio.sleep(0)
        newer = asyncio.create_task(ask("interim", "a"))  # replaces a's first request
        final = asyncio.create_task(ask("final", "c"))
        assert await stale is None
        await asyncio.gather(other, newer, final)
        # c's final first; then the interims in the order first asked (a kept its place).
        assert order == ["c:final", "a:interim", "b:interim"]
        await pacer.close()

    run_virtual(main())


def test_promote_keeps_the_place_in_line_and_jumps_the_interims() -> None:
    async def main() -> None:
        pacer = WritePacer(Rate(1, 1.0), margin=0.0)
        (await _acquire(pacer, "first", "x")).done()
        loop = asyncio.get_running_loop()
        b = asyncio.create_task(_acquire(pacer, "interim", "b"))
        a = asyncio.create_task(_acquire(pacer, "interim", "a"))
        await asyncio.sleep(0)
        assert pacer.promote("k", "a", "final")
        assert not pacer.promote("k", "nobody", "final")
        (await a).done()
        assert loop.time() == 1.0
        assert not b.done()
        (await b).done()
        assert loop.time() == 2.0
        await pacer.close()

    run_virtual(main())


def test_the_budget_is_learned_from_reports() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pacer = WritePacer(Rate(10, 1.0), margin=0.0)
        # The platform says: 2 per window, none left, the window ends in 3 s.
        (await _acquire(pacer, "first", "a")).done(
            RateReport(limit=2, remaining=0, reset_after=3.0, bucket="b1")
        )
        (await _acquire(pacer, "first", "b")).done()
        assert loop.time() == 3.0
        (await _acquire(pacer, "first", "c")).done()
        assert loop.time() == 3.0  # the second write of the new window of 2
        # A refusal blocks the key for its Retry-After.
        permit = await _acquire(pacer, "final", "d")
        assert loop.time() == 4.0  # the window of 2 is spent; the default window is 1 s
        permit.done(RateReport(retry_after=7.5))
        (await _acquire(pacer, "final", "e")).done()
        assert loop.time() == 11.5
        await pacer.close()

    run_virtual(main())


def test_a_report_never_raises_the_count_and_counts_writes_in_flight() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pacer = WritePacer(Rate(3, 1.0), margin=0.0)
        first = await _acquire(pacer, "first", "a")
        second = await _acquire(pacer, "first", "b")
        # The answer to the first write says 2 left, but the second one is in flight.
        first.done(RateReport(limit=3, remaining=2, reset_after=1.0))
        second.done(RateReport(limit=3, remaining=9, reset_after=1.0))  # stale or wrong
        (await _acquire(pacer, "first", "c")).done()
        assert loop.time() == 0.0
        (await _acquire(pacer, "first", "d")).done()
        assert loop.time() == 1.0
        await pacer.close()

    run_virtual(main())


def test_a_cancelled_waiter_neither_holds_nor_loses_a_slot() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pacer = WritePacer(Rate(1, 1.0), margin=0.0)
        held = await _acquire(pacer, "first", "a")
        # Cancelled while queued: the next one is served when the window opens.
        queued = asyncio.create_task(_acquire(pacer, "final", "b"))
        await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert pacer.pending("k") == 0
        held.done()
        (await _acquire(pacer, "final", "c")).done()
        assert loop.time() == 1.0
        # Granted just as it is cancelled: the slot goes back.
        await asyncio.sleep(1.0)
        blocker = await _acquire(pacer, "first", "d")
        racing = asyncio.create_task(_acquire(pacer, "final", "e"))
        await asyncio.sleep(0)
        blocker.refund()  # frees the slot: `racing` is granted, but has not run yet
        racing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await racing
        started = loop.time()
        (await _acquire(pacer, "final", "f")).done()
        assert loop.time() == started  # e's slot was handed back
        await pacer.close()

    run_virtual(main())


def test_interim_edits_are_spread_over_the_window() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        pacer = WritePacer(Rate(5, 5.0), margin=0.0, reserve=0.0)
        times = []
        for _ in range(7):
            (await _acquire(pacer, "interim", "a")).done()
            times.append(loop.time())
        await pacer.close()
        return times

    assert run_virtual(main()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_streams_waiting_on_one_channel_take_turns() -> None:
    async def main() -> list[str]:
        pacer = WritePacer(Rate(1, 1.0), margin=0.0)
        (await _acquire(pacer, "final", "x")).done()  # the window is spent: both queue
        log: list[str] = []

        async def edits(stream: str) -> None:
            for _ in range(3):
                (await _acquire(pacer, "interim", stream)).done()
                log.append(stream)

        await asyncio.gather(edits("a"), edits("b"))
        await pacer.close()
        return log

    assert run_virtual(main()) == ["a", "b", "a", "b", "a", "b"]


def test_close_releases_every_waiter_and_leaves_no_timer() -> None:
    async def main() -> None:
        pacer = WritePacer(Rate(1, 60.0))
        (await _acquire(pacer, "first", "a")).done()
        waiters = [
            asyncio.create_task(pacer.acquire("k", "final", stream=f"s{i}")) for i in range(3)
        ]
        await asyncio.sleep(0)
        await pacer.close()
        assert await asyncio.gather(*waiters) == [None, None, None]
        assert await pacer.acquire("k", "first", stream="late") is None
        loop = asyncio.get_running_loop()
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert [h.when() for h in timers] == [3600.0]  # only run_virtual's own time limit

    run_virtual(main())


def test_rates_and_headers() -> None:
    with pytest.raises(ValueError, match="at least one write"):
        Rate(0, 1.0)
    report = RateReport.from_headers(
        {
            "x-ratelimit-limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": "1.25",
            "X-RateLimit-Bucket": "abc",
            "Retry-After": "2",
        },
        status=429,
    )
    assert report == RateReport(5, 0, 1.25, 2.0, "abc")
    assert RateReport.from_headers({}, 200) == RateReport()
    assert RateReport.from_headers({"X-RateLimit-Reset-After": "3"}, 429).retry_after == 3.0
    assert RateReport.from_headers({"Retry-After": "soon"}, 429).retry_after == 1.0
