"""Pacing: one write budget per channel, spent as the platform allows.

Every reply streaming into a channel asks the channel's `WritePacer` before each write,
saying what the write is:

* `first`: a new answer's first message; `final`: the answer's final text. These go at
  once when the budget has room, and before any interim edit when it has not (first come,
  first served between them).
* `interim`: a streaming edit. These yield: they wait while a first or final write is
  queued, leave a reserve of each window (a fifth of it) for new answers, and are spread
  evenly over the window instead of spent in a burst. A stream that asks again replaces its
  pending request (keeping its place in line), so interim edits coalesce under contention
  and every answer's final text lands as early as the budget allows.

The budget is learned from what the adapter reports after each write (`RateReport`):
rate-limit headers (bucket, limit, remaining, reset-after, as Discord sends them) and a
429's `Retry-After` (as Slack sends it, per method and tier). With nothing reported it is
the configured default (for example 5 writes per 5 s per channel for Discord messages, one
a second for Slack's `chat.update`). A write is never started that the known budget cannot
take: the estimate only errs on the safe side (writes in flight are counted, a report never
raises the count within a window, a window is taken to end a little after the platform said).

Pure asyncio: no background tasks (timers on the loop), `close()` releases every waiter,
and a cancelled waiter never holds or loses a slot.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

__all__ = ["Kind", "Permit", "Rate", "RateReport", "WritePacer"]

Kind = Literal["first", "interim", "final"]


@dataclass(frozen=True, slots=True)
class Rate:
    """A write budget: `writes` per window of `per` seconds."""

    writes: int
    per: float

    def __post_init__(self) -> None:
        if self.writes < 1 or self.per <= 0:
            raise ValueError("a rate needs at least one write per positive window")


@dataclass(frozen=True, slots=True)
class RateReport:
    """What the platform said about the budget after a write (all optional)."""

    limit: int | None = None  # writes per window
    remaining: int | None = None  # writes left in the current window
    reset_after: float | None = None  # seconds until the window resets
    retry_after: float | None = None  # a refusal (429): nothing may be written until then
    bucket: str | None = None  # the platform's name for the budget

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], status: int = 200) -> RateReport:
        """Read `X-RateLimit-Limit`, `-Remaining`, `-Reset-After`, `-Bucket` and, on a 429,
        `Retry-After` (or `-Reset-After` when that is missing)."""
        lower = {name.lower(): value for name, value in headers.items()}

        def number(name: str) -> float | None:
            try:
                return float(lower[name])
            except (KeyError, ValueError):
                return None

        limit, remaining = number("x-ratelimit-limit"), number("x-ratelimit-remaining")
        reset_after = number("x-ratelimit-reset-after")
        retry_after = None
        if status == 429:
            retry_after = number("retry-after")
            if retry_after is None:
                retry_after = reset_after if reset_after is not None else 1.0
        return cls(
            limit=int(limit) if limit is not None else None,
            remaining=int(remaining) if remaining is not None else None,
            reset_after=reset_after,
            retry_after=retry_after,
            bucket=lower.get("x-ratelimit-bucket"),
        )


@dataclass(eq=False, slots=True)
class _Request:
    stream: Hashable
    kind: Kind
    order: int
    future: asyncio.Future[Permit | None]

    @property
    def rank(self) -> tuple[int, int]:
        return (1 if self.kind == "interim" else 0, self.order)


@dataclass(eq=False, slots=True)
class _Budget:
    key: str
    limit: int
    per: float
    remaining: int
    reset_at: float | None = None  # end of the current window; None: no window open
    blocked_until: float = 0.0  # after a refusal
    next_interim: float = 0.0  # interim edits are spread over the window
    in_flight: int = 0  # granted, not yet reported
    window: int = 0
    bucket: str | None = None
    learned: bool = False  # the platform reported this budget at least once
    queue: dict[Hashable, _Request] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class Permit:
    """Leave to make one write. Call `done()` once it is made, with what the platform said
    (or use it as a context manager, which calls `done()` on exit if it was not)."""

    __slots__ = ("_budget", "_pacer", "_settled", "_window")

    def __init__(self, pacer: WritePacer, budget: _Budget) -> None:
        self._pacer = pacer
        self._budget = budget
        self._window = budget.window
        self._settled = False

    def done(self, report: RateReport | None = None) -> None:
        """The write was made (or failed); `report` is what the platform said."""
        if self._settled:
            return
        self._settled = True
        self._budget.in_flight = max(0, self._budget.in_flight - 1)
        self._pacer._learn(self._budget, report)

    def refund(self) -> None:
        """The write was not made after all: give its slot back."""
        if self._settled:
            return
        self._settled = True
        budget = self._budget
        budget.in_flight = max(0, budget.in_flight - 1)
        if budget.window == self._window:
            budget.remaining = min(budget.limit, budget.remaining + 1)
        self._pacer._pump(budget)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.done()


class WritePacer:
    """One write budget per key (a channel), shared fairly by the streams writing there.

    `default`: the budget until the platform reports one. `margin`: seconds added to every
    window end and refusal, for the time a request travels. `reserve`: the share of each
    window interim edits leave to first and final writes. `probe`: until the platform has
    reported a key's budget once, only one write at a time goes (no burst before the real
    budget is known)."""

    def __init__(
        self,
        default: Rate,
        *,
        margin: float = 0.05,
        reserve: float = 0.2,
        max_idle_keys: int = 1024,
        probe: bool = False,
    ) -> None:
        self.default = default
        self.probe = probe
        self.margin = margin
        self.reserve = reserve
        self.max_idle_keys = max_idle_keys
        self._budgets: dict[str, _Budget] = {}
        self._order = itertools.count()
        self._closed = False

    async def acquire(self, key: str, kind: Kind, *, stream: Hashable) -> Permit | None:
        """Wait until a write of `kind` by `stream` may start in `key`'s budget. Returns
        None if the request was replaced by a newer one of the same stream, or the pacer
        was closed: then do not write."""
        if self._closed:
            return None
        budget = self._budget(key)
        old = budget.queue.get(stream)
        order = old.order if old is not None else next(self._order)
        if old is not None and not old.future.done():
            old.future.set_result(None)
        future: asyncio.Future[Permit | None] = asyncio.get_running_loop().create_future()
        request = _Request(stream, kind, order, future)
        budget.queue[stream] = request
        self._pump(budget)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                permit = future.result()
                if permit is not None:
                    permit.refund()  # granted as we were cancelled: hand it on
            elif budget.queue.get(stream) is request:
                del budget.queue[stream]
                self._pump(budget)
            raise

    def promote(self, key: str, stream: Hashable, kind: Kind) -> bool:
        """Change the kind of `stream`'s pending request (an interim edit that should now
        carry the final text), keeping its place in line. False if none is pending."""
        budget = self._budgets.get(key)
        request = budget.queue.get(stream) if budget is not None else None
        if budget is None or request is None or request.future.done():
            return False
        request.kind = kind
        self._pump(budget)
        return True

    def pending(self, key: str) -> int:
        """How many requests wait in `key`'s budget."""
        budget = self._budgets.get(key)
        return len(budget.queue) if budget is not None else 0

    async def close(self) -> None:
        """Release every waiter (they get None) and forget every budget."""
        self._closed = True
        for budget in self._budgets.values():
            if budget.timer is not None:
                budget.timer.cancel()
                budget.timer = None
            for request in budget.queue.values():
                if not request.future.done():
                    request.future.set_result(None)
            budget.queue.clear()
        self._budgets.clear()

    # --- the budget -----------------------------------------------------------------------

    def _budget(self, key: str) -> _Budget:
        budget = self._budgets.get(key)
        if budget is None:
            if len(self._budgets) >= self.max_idle_keys:
                self._prune()
            rate = self.default
            budget = self._budgets[key] = _Budget(key, rate.writes, rate.per, rate.writes)
        return budget

    def _prune(self) -> None:
        now = asyncio.get_running_loop().time()
        for key, budget in list(self._budgets.items()):
            idle = not budget.queue and not budget.in_flight and budget.blocked_until <= now
            if idle and (budget.reset_at is None or budget.reset_at <= now):
                del self._budgets[key]

    def observe(self, key: str, report: RateReport) -> None:
        """What the platform said about `key`'s budget, seen outside a permit (a client
        library's own request hook, as the response of one write still in flight arrives:
        that write is counted in the report already)."""
        self._learn(self._budget(key), report, counted=1)

    def _learn(self, budget: _Budget, report: RateReport | None, counted: int = 0) -> None:
        now = asyncio.get_running_loop().time()
        self._roll(budget, now)
        if report is not None:
            first = not budget.learned  # the first word on this budget replaces the default
            budget.learned = True
            if report.bucket is not None:
                budget.bucket = report.bucket
            if report.limit is not None and report.limit >= 1:
                budget.limit = report.limit
                budget.remaining = min(budget.remaining, budget.limit)
            if report.reset_after is not None:
                reset = now + max(0.0, report.reset_after) + self.margin
                budget.reset_at = max(budget.reset_at or reset, reset)
            if report.remaining is not None:
                # Writes still in flight may not be counted in the report yet.
                estimate = max(0, report.remaining - max(0, budget.in_flight - counted))
                budget.remaining = estimate if first else min(budget.remaining, estimate)
                if budget.reset_at is None and budget.remaining < budget.limit:
                    budget.reset_at = now + budget.per + self.margin
            if report.retry_after is not None:
                until = now + max(0.0, report.retry_after) + self.margin
                budget.blocked_until = max(budget.blocked_until, until)
                budget.remaining = 0
                budget.reset_at = max(budget.reset_at or until, until)
        self._pump(budget)

    def _roll(self, budget: _Budget, now: float) -> None:
        if budget.reset_at is not None and now >= budget.reset_at:
            budget.remaining = budget.limit
            budget.reset_at = None
            budget.window += 1

    def _pump(self, budget: _Budget) -> None:
        """Grant what the budget can take now; set a timer for when it can take more."""
        if budget.timer is not None:
            budget.timer.cancel()
            budget.timer = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._roll(budget, now)
        wake: float | None = None
        while budget.queue:
            request = min(budget.queue.values(), key=lambda r: r.rank)
            if request.future.done():
                del budget.queue[request.stream]
                continue
            if now < budget.blocked_until:
                wake = budget.blocked_until
                break
            if self.probe and not budget.learned and budget.in_flight >= 1:
                wake = now + budget.per  # a report (or this) wakes it
                break
            if budget.remaining <= 0:
                wake = budget.reset_at
                break
            if request.kind == "interim":
                reserve = min(int(budget.limit * self.reserve), budget.limit - 1)
                if budget.remaining <= reserve:
                    wake = budget.reset_at
                    break
                if now < budget.next_interim:
                    wake = budget.next_interim
                    break
                budget.next_interim = now + budget.per / budget.limit
            budget.remaining -= 1
            budget.in_flight += 1
            if budget.reset_at is None:
                budget.reset_at = now + budget.per + self.margin
            del budget.queue[request.stream]
            request.future.set_result(Permit(self, budget))
        if budget.queue:
            if wake is None or wake <= now:
                wake = now + budget.per
            budget.timer = loop.call_at(wake, self._pump, budget)
