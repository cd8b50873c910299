"""Private results people may post for everyone: a `/summarize` summary is shown only to
the one who asked, with a Share button; pressing it posts the summary in the channel.

Core keeps the result for a day and decides who may share it and that it is shared once,
on any process; the adapter renders and posts it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.engine import Engine

__all__ = ["SHARE_TTL", "Shareable", "SummaryShares"]

#: How long a private result can still be shared.
SHARE_TTL = 86_400

NOT_YOURS = "Only the person who asked for this summary can share it."
ALREADY = "This summary is already shared in the channel."


@dataclass(frozen=True, slots=True)
class Shareable:
    """A kept result its owner is sharing now (`failed` if posting it fails)."""

    token: str
    record: dict[str, Any]


class SummaryShares:
    """One platform's shareable results, kept in the engine's shared cache."""

    def __init__(self, engine: Engine, platform: str, *, command: str = "/summarize") -> None:
        self.engine = engine
        self.namespace = f"{platform}-shared-summary"
        self.command = command

    async def keep(self, owner: str, record: Mapping[str, Any]) -> str:
        """Keep `record` (JSON data) for `owner`; returns the token for the Share button."""
        token = secrets.token_hex(16)
        payload = json.dumps({"owner": owner, "record": dict(record)})
        await self.engine.cache_set(self.namespace, token, payload, ttl=SHARE_TTL)
        return token

    async def take(self, token: str, user: str) -> Shareable | str:
        """The record `user` may share now, or the sentence telling them why not (it
        expired, it is someone else's, it is already shared). Two presses, on any
        process, share it once."""
        raw = await self.engine.cache_get(self.namespace, token) if token else None
        if raw is None:
            return f"This summary has expired. Run {self.command} again."
        kept = json.loads(raw)
        if str(kept.get("owner")) != user:
            # Only its owner saw it (it was private); nobody else may publish it.
            return NOT_YOURS
        if not await self.engine.ledger.once(self.namespace, token):
            return ALREADY
        return Shareable(token, dict(kept.get("record") or {}))

    async def failed(self, shareable: Shareable) -> None:
        """Posting it failed: it may be shared again."""
        await self.engine.ledger.unmark(self.namespace, shareable.token)
