"""The daily budget as a hard cap: every model call reserves its worst case first.

Before a call, `Budget.reserve` holds the call's worst case (estimated input plus the
most output it may write, at the target's prices) against the workspace's UTC day, in one
Lua script: the hold is taken only while what is spent plus what is held stays under the
budget. When the call ends, `settle` replaces the hold with the real cost (zero when the
call failed before the model produced anything). So under any concurrency the day's spend
passes the budget by at most one call's reservation.

Keys, all with the tag `{TENANT:DAY}` so each script runs in one Redis Cluster slot:

    P:bgt:{T:DAY}:spent   string  micro-USD settled today
    P:bgt:{T:DAY}:held    hash    reservation id → micro-USD held
    P:bgt:{T:DAY}:until   zset    reservation id → when it lapses (ms; a crashed process
                                  cannot hold budget forever)
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from core.failures import BudgetExceeded
from core.ledger import utc_day
from core.providers.base import ModelRequest, Target
from core.settings import Settings
from core.store import Store

__all__ = ["Budget", "Hold", "worst_case"]

_KEEP_MS = 2 * 24 * 3600 * 1000

# KEYS: spent, held, until. ARGV: now ms, budget micro-USD, amount micro-USD, id, hold ms.
# Returns {taken (1/0), spent, held before this one}.
_RESERVE = """
local now = tonumber(ARGV[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(lapsed) do redis.call('HDEL', KEYS[2], id) end
if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
local held = 0
for _, value in ipairs(redis.call('HVALS', KEYS[2])) do held = held + tonumber(value) end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + held >= tonumber(ARGV[2]) then return {0, spent, held} end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[4])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[6])) end
return {1, spent, held}
"""

# KEYS: spent, held, until. ARGV: id, real cost micro-USD, keep ms.
_SETTLE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('INCRBY', KEYS[1], cost)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
"""


def worst_case(target: Target, request: ModelRequest, input_tokens: int) -> float:
    """USD the call could cost at most: all of its input uncached, all of its output."""
    return target.cost(input_tokens, min(request.max_output_tokens, target.max_output))


@dataclass(frozen=True, slots=True)
class Hold:
    """One call's reservation (`ident` is empty when no budget is set)."""

    tenant: str
    day: str
    ident: str
    amount_usd: float


class Budget:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.limit = settings.daily_budget_usd
        # One attempt never outlives TOTAL_TIMEOUT; a hold left by a crashed process lapses.
        self.hold_ms = int((settings.total_timeout + 60) * 1000)
        redis: Any = store.redis
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)

    def _keys(self, tenant: str, day: str) -> list[str]:
        tag = f"{tenant}:{day}"
        return [self.store.keys.of("bgt", tag, part) for part in ("spent", "held", "until")]

    async def reserve(self, tenant: str, amount_usd: float) -> Hold:
        """Hold `amount_usd` of `tenant`'s day, or raise BudgetExceeded when what is spent
        and held already reaches the budget."""
        day = utc_day()
        if self.limit is None:
            return Hold(tenant, day, "", amount_usd)
        ident = secrets.token_hex(8)
        taken, spent, _held = await self._reserve(
            keys=self._keys(tenant, day),
            args=[
                int(time.time() * 1000),
                _micro(self.limit),
                _micro(amount_usd),
                ident,
                self.hold_ms,
                _KEEP_MS,
            ],
        )
        if not int(taken):
            raise BudgetExceeded(int(spent) / 1_000_000, self.limit)
        return Hold(tenant, day, ident, amount_usd)

    async def settle(self, hold: Hold, cost_usd: float) -> None:
        """Replace the hold with what the call really cost (0.0 releases it)."""
        if not hold.ident:
            return
        await self._settle(
            keys=self._keys(hold.tenant, hold.day), args=[hold.ident, _micro(cost_usd), _KEEP_MS]
        )

    async def spent(self, tenant: str) -> float:
        """USD settled today (holds not included)."""
        raw = await self.store.redis.get(self._keys(tenant, utc_day())[0])
        return int(raw or 0) / 1_000_000


def _micro(usd: float) -> int:
    return math.ceil(usd * 1_000_000)
