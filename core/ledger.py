"""Counters and small state shared by every process: the usage ledger, cooldowns, one-time
actions and a small cache.

Keys (none belongs to a conversation, so each is a single-key operation on a cluster):

    P:u:T:DAY      hash    usage of tenant T on a UTC day (calls of every attempt, failed
                           ones included; cached input tokens apart)
    P:cd:NS:ID     string  cooldown of ID in namespace NS
    P:once:NS:ID   string  an action done once (e.g. sharing a summary)
    P:c:NS:ID      string  small caches (display names, ...)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import cast

from core.settings import Settings
from core.store import Store

__all__ = ["Ledger", "UsageRecord", "UsageReport", "utc_day"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    route: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached_input_tokens: int = 0  # of input_tokens, billed at the cached price


@dataclass(frozen=True, slots=True)
class UsageReport:
    tenant: str
    day: str
    rows: list[UsageRecord]
    budget: float | None
    #: This week's 👍/👎 per (route, model), when known.
    feedback: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: This week's (UTC, from Monday) tokens in, tokens out and cost per (route, model).
    week: dict[tuple[str, str], tuple[int, int, float]] = field(default_factory=dict)

    @property
    def total_cost(self) -> float:
        return sum(r.cost_usd for r in self.rows)

    def by_route(self, route: str) -> tuple[int, int, float]:
        rows = [r for r in self.rows if r.route == route]
        return (
            sum(r.input_tokens for r in rows),
            sum(r.output_tokens for r in rows),
            sum(r.cost_usd for r in rows),
        )

    def cached_by_route(self, route: str) -> int:
        """Input tokens of `route` served from the provider's prompt cache."""
        return sum(r.cached_input_tokens for r in self.rows if r.route == route)

    def render(self) -> str:
        lines = [f"**Usage today ({self.day}, UTC)**"]
        for route in ("dialogue", "summary"):
            tokens_in, tokens_out, cost = self.by_route(route)
            cached = self.cached_by_route(route)
            lines.append(
                f"- {route.capitalize()}: {tokens_in:,} in / {tokens_out:,} out tokens "
                f"({cached:,} in cached), ${cost:.4f}"
            )
        total = f"- Total: ${self.total_cost:.4f}"
        if self.budget is not None:
            total += f" of a ${self.budget:.2f} daily budget"
        lines.append(total)
        if self.week:
            lines.append("**This week**")
            for (route, model), (tokens_in, tokens_out, cost) in sorted(self.week.items()):
                lines.append(
                    f"- {route} · `{model}`: {tokens_in:,} in / {tokens_out:,} out tokens, "
                    f"${cost:.4f}"
                )
        if self.feedback:
            lines.append("**Feedback this week**")
            for (route, model), (up, down) in sorted(self.feedback.items()):
                where = model if route == "dialogue" else f"{model} ({route})"
                lines.append(f"- {where}: 👍 {up} · 👎 {down}")
        return "\n".join(lines)


def utc_day(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")


class Ledger:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.keys = store.keys
        self.dedupe_ttl = settings.dedupe_ttl_seconds

    # --- usage -----------------------------------------------------------------------

    def _usage_key(self, tenant: str, day: str | None = None) -> str:
        return self.keys.plain("u", tenant, day or utc_day())

    async def record_usage(self, tenant: str, record: UsageRecord) -> None:
        key = self._usage_key(tenant)
        field = f"{record.route}|{record.model}"
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.hincrby(key, f"{field}|in", record.input_tokens)
        pipe.hincrby(key, f"{field}|out", record.output_tokens)
        pipe.hincrby(key, f"{field}|cached", record.cached_input_tokens)
        pipe.hincrby(key, f"{field}|calls", 1)
        pipe.hincrby(key, f"{field}|micro_usd", round(record.cost_usd * 1_000_000))
        pipe.expire(key, 40 * 24 * 3600)
        await pipe.execute()

    async def week(
        self, tenant: str, now: dt.datetime | None = None
    ) -> dict[tuple[str, str], tuple[int, int, float]]:
        """Tokens in, tokens out and cost per (route, model) since Monday, UTC."""
        today = now or dt.datetime.now(dt.UTC)
        totals: dict[tuple[str, str], tuple[int, int, float]] = {}
        for back in range(today.weekday() + 1):
            for row in await self.usage(tenant, utc_day(today - dt.timedelta(days=back))):
                tokens_in, tokens_out, cost = totals.get((row.route, row.model), (0, 0, 0.0))
                totals[(row.route, row.model)] = (
                    tokens_in + row.input_tokens,
                    tokens_out + row.output_tokens,
                    cost + row.cost_usd,
                )
        return totals

    async def usage(self, tenant: str, day: str | None = None) -> list[UsageRecord]:
        raw = cast(dict[str, str], await self.store.redis.hgetall(self._usage_key(tenant, day)))
        rows: dict[tuple[str, str], dict[str, int]] = {}
        for name, value in raw.items():
            route, model, what = name.split("|")
            rows.setdefault((route, model), {})[what] = int(value)
        return [
            UsageRecord(
                route,
                model,
                values.get("in", 0),
                values.get("out", 0),
                values.get("micro_usd", 0) / 1_000_000,
                values.get("cached", 0),
            )
            for (route, model), values in sorted(rows.items())
        ]

    async def spent_today(self, tenant: str) -> float:
        return sum(record.cost_usd for record in await self.usage(tenant))

    # --- cooldowns and one-time actions ---------------------------------------------------

    async def cooldown(self, namespace: str, ident: str, seconds: float) -> float:
        """0.0 if `ident` may act now (and starts its cooldown), else the seconds left."""
        key = self.keys.plain("cd", namespace, ident)
        if await self.store.redis.set(key, "1", nx=True, px=max(1, int(seconds * 1000))):
            return 0.0
        left = await self.store.redis.pttl(key)
        return max(0.001, left / 1000) if left and left > 0 else 0.001

    async def once(self, namespace: str, ident: str) -> bool:
        """True the first time `ident` is seen in `namespace` (within the dedupe window)."""
        key = self.keys.plain("once", namespace, ident)
        return bool(await self.store.redis.set(key, "1", nx=True, ex=self.dedupe_ttl))

    async def unmark(self, namespace: str, ident: str) -> None:
        """Undo `once`: the action failed and may be tried again."""
        await self.store.redis.delete(self.keys.plain("once", namespace, ident))

    # --- small caches --------------------------------------------------------------------

    async def cache_get(self, namespace: str, ident: str) -> str | None:
        value = await self.store.redis.get(self.keys.plain("c", namespace, ident))
        return None if value is None else str(value)

    async def cache_set(self, namespace: str, ident: str, value: str, ttl: int) -> None:
        await self.store.redis.set(self.keys.plain("c", namespace, ident), value, ex=ttl)
