"""People's display names by user id, looked up once and then remembered."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["NameDirectory"]

CacheGet = Callable[[str, str], Awaitable[str | None]]
CacheSet = Callable[[str, str, str, int], Awaitable[None]]


class NameDirectory:
    """Display names by user id: kept in this process for `LOCAL_TTL` seconds, then in the
    shared cache (the engine's `cache_get` / `cache_set`, under `namespace` and the key
    `tenant:user_id`) for `TTL` seconds, and asked of the platform (`lookup`) only when
    neither has it."""

    TTL = 24 * 3600
    LOCAL_TTL = 600.0
    #: The process-local map is emptied when it grows past this many people.
    LOCAL_MAX = 10_000

    def __init__(
        self,
        cache_get: CacheGet,
        cache_set: CacheSet,
        *,
        namespace: str,
        tenant: str,
        lookup: Callable[[str], Awaitable[str]],
    ) -> None:
        self._cache_get = cache_get
        self._cache_set = cache_set
        self.namespace = namespace
        self.tenant = tenant
        self._lookup = lookup
        self._local: dict[str, tuple[str, float]] = {}

    async def remembered(self, namespace: str, ident: str) -> bool:
        """Is `ident` in the shared cache under `namespace`?"""
        return await self._cache_get(namespace, ident) is not None

    async def name(self, user_id: str) -> str:
        now = time.monotonic()
        hit = self._local.get(user_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        ident = f"{self.tenant}:{user_id}"
        name = await self._cache_get(self.namespace, ident)
        if name is None:
            name = await self._lookup(user_id)
            await self._cache_set(self.namespace, ident, name, self.TTL)
        if len(self._local) > self.LOCAL_MAX:
            self._local.clear()
        self._local[user_id] = (name, now + self.LOCAL_TTL)
        return name

    def known(self, user_id: str) -> str | None:
        """The display name if this process knows it already (no lookup): for naming
        people the bot must not ping."""
        hit = self._local.get(user_id)
        return hit[0] if hit is not None else None

    async def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        return {uid: await self.name(uid) for uid in dict.fromkeys(user_ids)}
