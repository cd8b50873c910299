"""Each conversation's line on real Redis (a single server and a local Redis Cluster):
admission in one step, turns in platform order whatever the arrival order and however
many processes, leases that keep long answers and skip dead holders, and fencing when
Redis stalls longer than a lease."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.memory import History
from core.queue import Admission, LeaseLost, Line, Ticket
from core.store import Store, connect_store
from core.types import ChatMessage, ConversationKey
from tests.faults.procs import RedisServer
from tests.support import make_settings

KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")


async def open_line(url: str, prefix: str, lease: float = 1.0) -> tuple[Store, Line]:
    config = make_settings(redis_url=url, redis_key_prefix=prefix, lock_ttl_seconds=lease)
    store = await connect_store(config)
    return store, Line(store, config)


@pytest.fixture
async def lines(store_url: str, key_prefix: str) -> AsyncIterator[tuple[Line, Line]]:
    """Two lines on two connection pools: two processes sharing one Redis."""
    first_store, first = await open_line(store_url, key_prefix)
    second_store, second = await open_line(store_url, key_prefix)
    yield first, second
    for line, store in ((first, first_store), (second, second_store)):
        await line.close()
        await store.close()


async def admit(line: Line, position: int, *, key: ConversationKey = KEY) -> Ticket:
    ticket = await line.admit(key, f"ev{position}", position, addressed=True, follow=False)
    assert isinstance(ticket, Ticket)
    return ticket


async def test_admission_dedupes_decides_and_follows(lines: tuple[Line, Line]) -> None:
    line, other = lines
    # Not addressed and not followed: left alone, and nothing is claimed.
    assert await line.admit(KEY, "e1", 1, addressed=False, follow=False) is Admission.IGNORED
    # A mention that opens the thread follows it in the same step...
    opening = await line.admit(KEY, "e2", 2, addressed=True, follow=True)
    assert isinstance(opening, Ticket)
    assert await other.is_followed(KEY)
    # ...so a follow-up typed at once, on the other process, is admitted behind it.
    follow_up = await other.admit(KEY, "e1", 3, addressed=False, follow=False)
    assert isinstance(follow_up, Ticket)
    # Slack's retry of either, on either process: a duplicate.
    assert await other.admit(KEY, "e2", 2, addressed=True, follow=True) is Admission.DUPLICATE
    assert await line.admit(KEY, "e1", 3, addressed=False, follow=False) is Admission.DUPLICATE
    for ticket, owner in ((opening, line), (follow_up, other)):
        await owner.wait(ticket)
        await owner.done(ticket, handled=True)
        await owner.leave(ticket)
    assert await line.admit(KEY, "e2", 2, addressed=True, follow=True) is Admission.DUPLICATE
    await line.unfollow(KEY)
    assert await line.admit(KEY, "e9", 9, addressed=False, follow=False) is Admission.IGNORED


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    positions=st.lists(st.integers(1, 10**18), min_size=2, max_size=8, unique=True),
    data=st.data(),
)
async def test_waiting_messages_are_served_in_platform_order_across_processes(
    lines: tuple[Line, Line], positions: list[int], data: st.DataObject
) -> None:
    """Messages admitted in any arrival order, on either process, are answered in the
    order of their platform positions (Discord snowflakes are too big for a float)."""
    key = ConversationKey("discord", "G", "C", uuid.uuid4().hex)
    gate = await admit(lines[0], 0, key=key)  # the thread is busy while the rest arrive
    arrival = data.draw(st.permutations(positions))
    owners = [lines[data.draw(st.integers(0, 1))] for _ in arrival]
    tickets = [await admit(o, p, key=key) for o, p in zip(owners, arrival, strict=True)]
    served: list[int] = []
    active = 0

    async def take_turn(owner: Line, ticket: Ticket, position: int) -> None:
        nonlocal active
        await owner.wait(ticket)
        active += 1
        assert active == 1, "two answers of one conversation overlapped"
        served.append(position)
        await asyncio.sleep(0.001)
        active -= 1
        await owner.leave(ticket)

    waiters = [
        asyncio.create_task(take_turn(o, t, p))
        for o, t, p in zip(owners, tickets, arrival, strict=True)
    ]
    await lines[0].wait(gate)
    await lines[0].leave(gate)
    await asyncio.gather(*waiters)
    assert served == sorted(positions)


async def test_an_earlier_message_is_never_overtaken_once_waiting(lines: tuple[Line, Line]) -> None:
    line, other = lines
    busy = await admit(line, 50)  # a later message is being answered already
    await line.wait(busy)
    late = await admit(other, 70)
    early = await admit(line, 40)  # delivered late, but written before the others
    order: list[int] = []

    async def go(owner: Line, ticket: Ticket, position: int) -> None:
        await owner.wait(ticket)
        order.append(position)
        await owner.leave(ticket)

    tasks = [asyncio.create_task(go(other, late, 70)), asyncio.create_task(go(line, early, 40))]
    await asyncio.sleep(0.1)
    assert order == []  # nobody overtakes the answer in progress
    await line.leave(busy)
    await asyncio.gather(*tasks)
    assert order == [40, 70]


async def test_a_long_turn_keeps_its_place_and_a_dead_holder_is_skipped(
    lines: tuple[Line, Line],
) -> None:
    line, other = lines
    long = await admit(line, 1)
    await line.wait(long)
    short = await admit(other, 2)
    waiting = asyncio.create_task(other.wait(short))
    await asyncio.sleep(2.5)  # 2.5 lease periods: the heartbeat keeps the turn
    assert not waiting.done() and not long.is_lost
    await line.leave(long)
    await asyncio.wait_for(waiting, 2)
    await other.leave(short)

    # A holder whose process died: its lease is not renewed, and it is skipped.
    dead = await admit(line, 3)
    await line.wait(dead)
    dead.stop.set()  # the heartbeat stops, as if the process had died
    after = await admit(other, 4)
    started = time.monotonic()
    await asyncio.wait_for(other.wait(after), 5)
    assert 0.5 < time.monotonic() - started < 3
    await other.leave(after)


async def test_claims_are_done_or_released_for_a_redelivery(lines: tuple[Line, Line]) -> None:
    line, other = lines
    answered = await admit(line, 1)
    await line.wait(answered)
    await line.done(answered, handled=True)
    await line.leave(answered)
    assert await other.admit(KEY, "ev1", 1, addressed=True, follow=False) is Admission.DUPLICATE
    # Nothing reached the user: the claim is released and a redelivery is answered.
    untold = await admit(line, 2)
    await line.wait(untold)
    await line.done(untold, handled=False)
    await line.leave(untold)
    again = await admit(other, 2)
    await other.wait(again)
    await other.leave(again)


async def test_a_stall_longer_than_the_lease_stops_the_holder_before_anyone_else_starts(
    key_prefix: str,
) -> None:
    """Redis frozen (SIGSTOP) for longer than LOCK_TTL: the answering process notices it
    cannot be sure of its lease and stops; writes fenced by the lost turn are refused; the
    next message starts only after the old lease is gone, so nothing overlaps."""
    server = RedisServer()
    await server.start()
    try:
        config = make_settings(
            redis_url=server.url, redis_key_prefix=key_prefix, lock_ttl_seconds=1.0
        )
        store_a, store_b = await connect_store(config), await connect_store(config)
        line_a, line_b = Line(store_a, config), Line(store_b, config)
        memory = History(store_a, config)
        first = await admit(line_a, 1)
        await line_a.wait(first)
        second = await admit(line_b, 2)
        second_turn = asyncio.create_task(line_b.wait(second))
        server.pause()
        await asyncio.wait_for(first.lost.wait(), 2.0)
        lost_at = time.monotonic()
        await asyncio.sleep(1.5)
        server.resume()
        with pytest.raises(LeaseLost):
            await memory.append(KEY, [ChatMessage.user("late answer", "bot")], fence=first)
        await asyncio.wait_for(second_turn, 10)
        started_at = time.monotonic()
        assert started_at > lost_at
        assert await memory.history(KEY) == []
        await line_b.leave(second)
        await line_a.leave(first)
        for line, store in ((line_a, store_a), (line_b, store_b)):
            await line.close()
            await store.close()
    finally:
        server.resume() if server.process and server.process.returncode is None else None
        await server.close()


async def _lose_a_cancellation() -> None:
    """What Python 3.11's `wait_for` inside the Redis client does when a cancellation
    arrives as a command is written: the CancelledError is swallowed while the request
    stays counted on the task."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(30)


async def test_a_message_waiting_its_turn_ends_even_if_its_cancellation_was_lost(
    lines: tuple[Line, Line],
) -> None:
    line, _other = lines
    first = await admit(line, 1)
    second = await admit(line, 2)

    async def waiting() -> None:
        await _lose_a_cancellation()
        await line.wait(second)  # behind `first`, which holds the turn

    task = asyncio.create_task(waiting())
    await asyncio.sleep(0.05)
    task.cancel()  # a shutdown
    done, _ = await asyncio.wait({task}, timeout=5)
    try:
        assert done, "the waiting message kept waiting after a lost cancellation"
        assert task.cancelled()
    finally:
        task.cancel()
        for ticket in (second, first):
            await line.leave(ticket)
            await line.done(ticket, handled=False)
