"""Memory on the real Redis: history bounds and TTL, the ordered lock, dedupe leases,
tenant separation, and the in-process fallback running the same code."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.memory import Memory, RollingSummary, UsageRecord, connect_redis
from core.types import ChatMessage, ConversationKey
from tests.support import make_settings

KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")


@pytest.fixture
async def memory(redis_url: str, key_prefix: str) -> AsyncIterator[Memory]:
    settings = make_settings(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        history_max_messages=20,
        memory_ttl_seconds=3600,
        lock_ttl_seconds=1.0,
    )
    memory = Memory(connect_redis(settings), settings)
    yield memory
    await memory.close()


async def test_history_is_bounded_ordered_and_expires(memory: Memory) -> None:
    for i in range(25):
        await memory.append(KEY, [ChatMessage.user(f"message {i}", "Ana")])
    history = await memory.history(KEY)
    assert [m.content for m in history] == [f"message {i}" for i in range(5, 25)]
    ttl = await memory.redis.pttl(f"{memory.prefix}:h:{KEY}")
    assert 3_500_000 < ttl <= 3_600_000


async def test_keys_of_other_tenants_and_channels_are_separate(memory: Memory) -> None:
    other_workspace = ConversationKey("slack", "T2", "C1", KEY.thread)
    other_channel = ConversationKey("slack", "T1", "C2", KEY.thread)
    sneaky = ConversationKey("slack", "T1:C2", "x", "y")
    await memory.append(KEY, [ChatMessage.user("secret plan", "Ana")])
    for key in (other_workspace, other_channel, sneaky):
        assert await memory.history(key) == []
    assert ":" not in str(sneaky).split(":")[1]


async def test_media_is_not_stored_but_noted(memory: Memory) -> None:
    from core.types import MediaPart

    message = ChatMessage.user(
        "look",
        "Ana",
        parts=[MediaPart(kind="image", mime="image/png", data=b"\x89PNG", name="a.png")],
    )
    await memory.append(KEY, [message])
    (stored,) = await memory.history(KEY)
    assert stored.parts == []
    assert "[attached image: a.png]" in stored.content


async def test_fold_replaces_prefix_atomically(memory: Memory) -> None:
    messages = [ChatMessage.user(f"m{i}", "Ana") for i in range(6)]
    await memory.append(KEY, messages)
    summary = RollingSummary(text="m0..m2 happened", folded=3)
    assert await memory.fold(KEY, messages[0], 3, summary)
    assert [m.content for m in await memory.history(KEY)] == ["m3", "m4", "m5"]
    assert (await memory.rolling_summary(KEY)) == summary
    # A stale fold (history no longer starts where it did) changes nothing.
    assert not await memory.fold(KEY, messages[0], 2, RollingSummary(text="stale"))
    assert len(await memory.history(KEY)) == 3


async def test_forget_erases_and_prevents_reimport(memory: Memory) -> None:
    assert await memory.needs_import(KEY)
    assert await memory.import_history(KEY, [ChatMessage.user("old", "Bo")])
    assert not await memory.import_history(KEY, [ChatMessage.user("again", "Bo")])
    await memory.forget(KEY)
    assert await memory.history(KEY) == []
    assert await memory.rolling_summary(KEY) is None
    assert not await memory.needs_import(KEY)


async def test_turns_are_served_in_arrival_order_without_overlap(memory: Memory) -> None:
    order: list[int] = []
    active = 0
    peak = 0

    async def worker(n: int) -> None:
        nonlocal active, peak
        async with memory.turn(KEY):
            active += 1
            peak = max(peak, active)
            order.append(n)
            await asyncio.sleep(0.01)
            active -= 1

    tasks = []
    for n in range(12):
        tasks.append(asyncio.create_task(worker(n)))
        await asyncio.sleep(0.002)  # arrival order 0, 1, 2, ...
    await asyncio.gather(*tasks)
    assert order == list(range(12))
    assert peak == 1


async def test_two_memories_on_one_redis_share_the_order(memory: Memory, redis_url: str) -> None:
    """Two processes (two pools) behave as one queue."""
    settings = make_settings(
        redis_url=redis_url, redis_key_prefix=memory.prefix, lock_ttl_seconds=1.0
    )
    other = Memory(connect_redis(settings), settings)
    order: list[str] = []

    async def worker(m: Memory, name: str) -> None:
        async with m.turn(KEY):
            order.append(f"{name}-start")
            await asyncio.sleep(0.05)
            order.append(f"{name}-end")

    first = asyncio.create_task(worker(memory, "a"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(worker(other, "b"))
    await asyncio.gather(first, second)
    await other.close()
    assert order == ["a-start", "a-end", "b-start", "b-end"]


async def test_heartbeat_keeps_a_long_turn_and_a_dead_holder_is_skipped(memory: Memory) -> None:
    # A turn that lasts 3 lease periods keeps its place: the next one waits.
    order: list[str] = []

    async def long() -> None:
        async with memory.turn(KEY):
            order.append("long-start")
            await asyncio.sleep(2.5)
            order.append("long-end")

    async def short() -> None:
        async with memory.turn(KEY):
            order.append("short")

    task = asyncio.create_task(long())
    await asyncio.sleep(0.05)
    await short()
    await task
    assert order == ["long-start", "long-end", "short"]

    # A holder that died (lease not renewed) is skipped once its lease runs out.
    await memory._enter(keys=[f"{memory.prefix}:q:{KEY}"], args=[300, "dead", 60_000])
    started = asyncio.get_running_loop().time()
    async with memory.turn(KEY):
        waited = asyncio.get_running_loop().time() - started
    assert 0.2 < waited < 2.0


async def test_event_claims_are_leases_then_done(memory: Memory) -> None:
    assert await memory.claim_event("slack", "Ev1", "tok-a")
    assert not await memory.claim_event("slack", "Ev1", "tok-b")
    await memory.finish_event("slack", "Ev1", "tok-a")
    assert not await memory.claim_event("slack", "Ev1", "tok-c")
    assert await memory.redis.get(memory.event_key("slack", "Ev1")) == "done"
    # A claimer that dies without finishing: the lease expires and a redelivery may claim.
    assert await memory.claim_event("slack", "Ev2", "tok-a")
    await asyncio.sleep(1.1)
    assert await memory.claim_event("slack", "Ev2", "tok-b")


async def test_usage_ledger_sums_per_route(memory: Memory) -> None:
    await memory.record_usage("slack:T1", UsageRecord("dialogue", "gpt", 1000, 200, 0.0045))
    await memory.record_usage("slack:T1", UsageRecord("dialogue", "gpt", 500, 100, 0.0020))
    await memory.record_usage("slack:T1", UsageRecord("summary", "flash", 4000, 300, 0.00145))
    rows = {(r.route, r.model): r for r in await memory.usage("slack:T1")}
    assert rows[("dialogue", "gpt")].input_tokens == 1500
    assert rows[("dialogue", "gpt")].cost_usd == pytest.approx(0.0065)
    assert await memory.spent_today("slack:T1") == pytest.approx(0.00795)
    assert await memory.usage("slack:T2") == []


async def test_in_process_store_runs_the_same_code(
    key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(redis_url=None, redis_key_prefix=key_prefix, lock_ttl_seconds=1.0)
    with caplog.at_level(logging.WARNING):
        redis = connect_redis(settings)
    assert "not persistent" in caplog.text
    assert not isinstance(redis, Redis) or type(redis).__module__.startswith("fakeredis")
    memory = Memory(redis, settings)
    await memory.append(KEY, [ChatMessage.user("hello", "Ana")])
    assert [m.content for m in await memory.history(KEY)] == ["hello"]
    order: list[int] = []

    async def worker(n: int) -> None:
        async with memory.turn(KEY):
            order.append(n)
            await asyncio.sleep(0.005)

    tasks = []
    for n in range(5):
        tasks.append(asyncio.create_task(worker(n)))
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    assert order == list(range(5))
    assert await memory.claim_event("console", "e1", "t")
    assert not await memory.claim_event("console", "e1", "u")
    await memory.close()


async def test_forget_channel_erases_only_that_channel(memory: Memory) -> None:
    a = ConversationKey("slack", "T1", "C1", "1.1")
    b = ConversationKey("slack", "T1", "C1", "2.2")
    c = ConversationKey("slack", "T1", "C10", "1.1")
    d = ConversationKey("slack", "T2", "C1", "1.1")
    for key in (a, b, c, d):
        await memory.append(key, [ChatMessage.user("hi", "Ana")])
    assert await memory.forget_channel(a) == 2
    assert await memory.history(a) == [] and await memory.history(b) == []
    assert len(await memory.history(c)) == 1 and len(await memory.history(d)) == 1


async def test_cooldown_is_shared_and_expires(memory: Memory) -> None:
    assert await memory.cooldown("ask", "U1", 0.3) == 0.0
    left = await memory.cooldown("ask", "U1", 0.3)
    assert 0 < left <= 0.3
    assert await memory.cooldown("ask", "U2", 0.3) == 0.0
    await asyncio.sleep(0.35)
    assert await memory.cooldown("ask", "U1", 0.3) == 0.0
