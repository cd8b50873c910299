"""Per-user rate limits, shared by every process through Redis.

`USER_RATE_LIMIT` ("20/minute") caps how many messages and model-calling commands one
person gets answered per window, per workspace, on every platform and path; the console
is exempt. The window slides (a log of accepted times in a sorted set, trimmed on each
check), so a burst straddling a minute boundary is not let through twice. A person over
the limit is told once per window, in private where the platform can; everyone else is
unaffected.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from redis.exceptions import RedisError

from core import metrics
from core.store import Store

log = logging.getLogger(__name__)

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86_400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)

#: KEYS: the log of accepted times, the "already told" marker. ARGV: limit, window in
#: ms, a unique member. Returns {accepted, told now, ms until one more is accepted}.
_CHECK = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = window
if oldest[2] then wait = tonumber(oldest[2]) + window - ms end
local told = redis.call('SET', KEYS[2], '1', 'NX', 'PX', math.max(1, wait))
if told then return {0, 1, wait} end
return {0, 0, wait}
"""


def parse_rate(text: str) -> tuple[int, float]:
    """`"20/minute"` → (20, 60.0); also `"5/10 seconds"`, `"100/hour"`. `"0"` or `"off"`:
    no limit, (0, 0.0)."""
    if text.strip().lower() in {"", "0", "off", "none"}:
        return 0, 0.0
    match = _RATE.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a rate: write it like 20/minute, 5/10 seconds or 100/hour"
        )
    count, every, unit = match.groups()
    window = (int(every) if every else 1) * _UNITS[unit.lower()]
    if int(count) < 1 or window <= 0:
        raise ValueError(f"{text!r}: the count and the window must be positive")
    return int(count), window


@dataclass(frozen=True)
class Verdict:
    """`allowed`: answer it. Otherwise `tell` is true once per window (say why, in
    private), and `retry_after` is the seconds until one more is accepted."""

    allowed: bool
    tell: bool = False
    retry_after: float = 0.0


ALLOWED = Verdict(True)


class UserRateLimit:
    def __init__(self, store: Store, rate: str) -> None:
        self.store = store
        self.limit, self.window = parse_rate(rate)
        self._check = store.redis.register_script(_CHECK)

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    async def check(self, platform: str, tenant: str, user: str) -> Verdict:
        """Count one message or command of `user` (in `tenant` on `platform`) and say
        whether it is answered. Fails open: when Redis cannot answer, nobody is limited
        (the answer path reports Redis trouble itself)."""
        if not self.enabled or platform == "console" or not user:
            return ALLOWED
        who = f"{platform}:{tenant}:{user}"
        keys = [self.store.keys.of("rl", who), self.store.keys.of("rl", who, "told")]
        member = secrets.token_hex(8)
        try:
            accepted, told, wait_ms = await self._check(
                keys=keys, args=[self.limit, int(self.window * 1000), member]
            )
        except RedisError as error:
            log.warning("rate limit check failed, letting %s through: %s", who, error)
            return ALLOWED
        if int(accepted):
            return ALLOWED
        metrics.ERRORS.labels("rate_limited").inc()
        return Verdict(False, tell=bool(int(told)), retry_after=max(1.0, int(wait_ms) / 1000))


def limited_note(verdict: Verdict) -> str:
    """What a person over the limit is told (once per window)."""
    seconds = round(verdict.retry_after)
    when = f"{seconds} seconds" if seconds < 120 else f"{round(seconds / 60)} minutes"
    return (
        "You're sending me messages faster than this workspace allows, so I'm skipping "
        f"some. I'll answer you again in about {when}."
    )
