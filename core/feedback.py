"""👍/👎 on answers: one vote per person per answer (a changed vote counts once), kept with
what produced the answer (route, model, tools, latency), counted per week and model.

Keys (none in a conversation's slot: each is a single-key operation):

    P:fb:{T}:ANSWER  hash    what produced the answer, and `v:USER` = "up" / "down|reason"
    P:fbw:{T}:WEEK   hash    `route|model|up` and `route|model|down` counts of the ISO week
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Literal, cast

from core import metrics
from core.settings import Settings
from core.store import Store

__all__ = ["AnswerMeta", "Feedback", "Rating", "iso_week"]

log = logging.getLogger(__name__)

Rating = Literal["up", "down"]

# Record a vote; a person's earlier vote on the same answer is replaced, and the weekly
# counts move with it. KEYS: answer, week. ARGV: user field, rating, reason, ttl s,
# week ttl s. Returns the previous rating ("" if none), or "missing" for an unknown answer.
_VOTE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local previous = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local before = string.match(previous, '^[a-z]*') or ''
local value = ARGV[2]
if ARGV[3] ~= '' then value = value .. '|' .. ARGV[3] end
redis.call('HSET', KEYS[1], ARGV[1], value)
local route = redis.call('HGET', KEYS[1], 'route') or 'dialogue'
local model = redis.call('HGET', KEYS[1], 'model') or '?'
local prefix = route .. '|' .. model .. '|'
if before ~= ARGV[2] then
  if before ~= '' then redis.call('HINCRBY', KEYS[2], prefix .. before, -1) end
  redis.call('HINCRBY', KEYS[2], prefix .. ARGV[2], 1)
end
redis.call('EXPIRE', KEYS[2], ARGV[5])
return before
"""


def iso_week(now: dt.datetime | None = None) -> str:
    year, week, _ = (now or dt.datetime.now(dt.UTC)).isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True, slots=True)
class AnswerMeta:
    """What produced an answer, kept with its votes."""

    answer_id: str
    tenant: str
    conversation: str
    route: str
    model: str
    platform: str
    latency_ms: float = 0.0
    tools: tuple[str, ...] = field(default_factory=tuple)
    message_id: str = ""


class Feedback:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.keys = store.keys
        self.ttl = settings.feedback_retention_days * 86_400
        self._vote = store.redis.register_script(_VOTE)

    def _answer(self, tenant: str, answer_id: str) -> str:
        return self.keys.of("fb", tenant, answer_id)

    async def answered(self, meta: AnswerMeta) -> None:
        """Remember what produced an answer (its votes come later)."""
        key = self._answer(meta.tenant, meta.answer_id)
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "conversation": meta.conversation,
                "route": meta.route,
                "model": meta.model,
                "platform": meta.platform,
                "latency_ms": f"{meta.latency_ms:.0f}",
                "tools": json.dumps(list(meta.tools)),
                "message": meta.message_id,
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )
        pipe.expire(key, self.ttl)
        await pipe.execute()

    async def vote(
        self, tenant: str, answer_id: str, user: str, rating: Rating, reason: str = ""
    ) -> bool:
        """A person's 👍 or 👎 (a later vote replaces theirs). False for an unknown answer."""
        reason = " ".join(reason.split())[:300]
        previous = str(
            await self._vote(
                keys=[self._answer(tenant, answer_id), self.keys.of("fbw", tenant, iso_week())],
                args=[f"v:{user}", rating, reason, self.ttl, 15 * 86_400],
            )
        )
        if previous == "missing":
            return False
        if previous != rating:
            meta = cast(
                dict[str, str],
                await self.store.redis.hgetall(self._answer(tenant, answer_id)),
            )
            metrics.FEEDBACK.labels(
                meta.get("platform", "?"), meta.get("route", "?"), meta.get("model", "?"), rating
            ).inc()
        log.info(
            "feedback", extra={"answer": answer_id, "rating": rating, "changed": bool(previous)}
        )
        return True

    async def week(self, tenant: str, week: str | None = None) -> dict[tuple[str, str], list[int]]:
        """This week's (route, model) → [👍, 👎]."""
        raw = cast(
            dict[str, str],
            await self.store.redis.hgetall(self.keys.of("fbw", tenant, week or iso_week())),
        )
        out: dict[tuple[str, str], list[int]] = {}
        for name, count in raw.items():
            route, model, rating = name.rsplit("|", 2)
            counts = out.setdefault((route, model), [0, 0])
            counts[0 if rating == "up" else 1] += int(count)
        return out
