"""Display names: asked of the platform once, then kept in the engine's shared cache (Redis)
and in the process."""

from __future__ import annotations

import asyncio

from core.engine import Engine
from core.names import NameDirectory


class Lookups:
    """The platform's user lookup: counts who was asked for."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def __call__(self, user_id: str) -> str:
        self.asked.append(user_id)
        return self.names.get(user_id, user_id)


def directory(engine: Engine, lookup: Lookups, tenant: str = "T1") -> NameDirectory:
    return NameDirectory(
        engine.cache_get, engine.cache_set, namespace="test-user", tenant=tenant, lookup=lookup
    )


async def test_a_name_is_looked_up_once_then_shared_between_processes(engine: Engine) -> None:
    lookup = Lookups({"U1": "Alice", "U2": "Bob"})
    first = directory(engine, lookup)
    assert first.known("U1") is None  # nothing looked up for known()
    assert lookup.asked == []
    assert await first.name("U1") == "Alice"
    assert await first.name("U1") == "Alice"
    assert first.known("U1") == "Alice"
    assert lookup.asked == ["U1"]
    assert await engine.cache_get("test-user", "T1:U1") == "Alice"
    # another process finds it in the shared cache
    second = directory(engine, lookup)
    assert second.known("U1") is None
    assert await second.name("U1") == "Alice"
    assert lookup.asked == ["U1"]
    # names(): each id once, in order; an unknown id is its own name
    assert await second.names(["U2", "U1", "U2", "U9"]) == {"U2": "Bob", "U1": "Alice", "U9": "U9"}
    assert lookup.asked == ["U1", "U2", "U9"]


async def test_tenants_do_not_share_names(engine: Engine) -> None:
    lookup = Lookups({"U1": "Alice"})
    assert await directory(engine, lookup, "T1").name("U1") == "Alice"
    assert await directory(engine, lookup, "T2").name("U1") == "Alice"
    assert lookup.asked == ["U1", "U1"]


async def test_the_process_copy_expires_to_the_shared_cache(engine: Engine) -> None:
    lookup = Lookups({"U1": "Alice"})
    names = directory(engine, lookup)
    names.LOCAL_TTL = 0.05
    assert await names.name("U1") == "Alice"
    await engine.cache_set("test-user", "T1:U1", "Alice B.", 60)  # renamed elsewhere
    assert await names.name("U1") == "Alice"  # still this process's copy
    await asyncio.sleep(0.1)
    assert await names.name("U1") == "Alice B."
    assert lookup.asked == ["U1"]


async def test_the_process_copy_is_emptied_when_it_grows_too_big(engine: Engine) -> None:
    lookup = Lookups({})
    names = directory(engine, lookup)
    names.LOCAL_MAX = 2
    await names.names(["U1", "U2", "U3"])
    assert [names.known(u) for u in ("U1", "U2", "U3")] == ["U1", "U2", "U3"]
    await names.name("U4")  # over the limit: emptied, then U4 kept
    assert [names.known(u) for u in ("U1", "U4")] == [None, "U4"]


async def test_remembered_asks_the_shared_cache(engine: Engine) -> None:
    names = directory(engine, Lookups({}))
    assert not await names.remembered("test-post", "C1:1.0")
    await engine.cache_set("test-post", "C1:1.0", "1", 60)
    assert await names.remembered("test-post", "C1:1.0")
