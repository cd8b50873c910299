"""Memory on real Redis — a single server and a local Redis Cluster — plus the in-process
fallback: history bounds and TTL, folding behind an offset, deletions and edits, imports,
forgetting, tenant separation, the ledger."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from core.ledger import Ledger, UsageRecord
from core.memory import History, MessageRef, RollingSummary
from core.queue import Line
from core.store import Store, connect_store
from core.types import ChatMessage, ConversationKey
from tests.support import make_settings

KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")


@dataclass
class Parts:
    store: Store
    memory: History
    line: Line
    ledger: Ledger


@pytest.fixture
async def parts(store_url: str, key_prefix: str) -> AsyncIterator[Parts]:
    settings = make_settings(
        redis_url=store_url,
        redis_key_prefix=key_prefix,
        history_max_messages=20,
        memory_ttl_seconds=3600,
        lock_ttl_seconds=1.0,
    )
    store = await connect_store(settings)
    line = Line(store, settings)
    yield Parts(store, History(store, settings), line, Ledger(store, settings))
    await line.close()
    await store.close()


def say(text: str, ident: str | None = None, name: str = "Ana") -> ChatMessage:
    return ChatMessage.user(text, name, id=ident)


async def test_cluster_is_detected_and_keys_share_a_slot(parts: Parts, store_url: str) -> None:
    keys = parts.store.keys
    names = [keys.of(kind, KEY) for kind in ("h", "ho", "rs", "imp", "q", "f")]
    names.append(keys.of("ev", KEY, "C1:1700000000.000100"))
    if parts.store.cluster:
        slots = {parts.store.redis.keyslot(name) for name in names}  # type: ignore[attr-defined]
        assert len(slots) == 1
    else:
        assert "cluster" not in store_url or not parts.store.cluster


async def test_history_is_bounded_ordered_and_expires(parts: Parts) -> None:
    memory = parts.memory
    for i in range(25):
        await memory.append(KEY, [say(f"message {i}")])
    history = await memory.history(KEY)
    assert [m.content for m in history] == [f"message {i}" for i in range(5, 25)]
    ttl = await parts.store.redis.pttl(parts.store.keys.of("h", KEY))
    assert 3_500_000 < ttl <= 3_600_000


async def test_keys_of_other_tenants_and_channels_are_separate(parts: Parts) -> None:
    other_workspace = ConversationKey("slack", "T2", "C1", KEY.thread)
    other_channel = ConversationKey("slack", "T1", "C2", KEY.thread)
    sneaky = ConversationKey("slack", "T1:C2", "x", "y")
    braces = ConversationKey("slack", "T1", "C1}", "{x")
    await parts.memory.append(KEY, [say("secret plan")])
    for key in (other_workspace, other_channel, sneaky, braces):
        assert await parts.memory.history(key) == []
    assert ":" not in str(sneaky).split(":")[1]
    assert "{" not in str(braces) and "}" not in str(braces)


async def test_media_is_not_stored_but_noted(parts: Parts) -> None:
    from core.types import MediaPart

    message = ChatMessage.user(
        "look",
        "Ana",
        parts=[MediaPart(kind="image", mime="image/png", data=b"\x89PNG", name="a.png")],
    )
    await parts.memory.append(KEY, [message])
    (stored,) = await parts.memory.history(KEY)
    assert stored.parts == []
    assert "[attached image: a.png]" in stored.content


async def test_fold_moves_the_offset_and_keeps_folded_entries(parts: Parts) -> None:
    memory = parts.memory
    messages = [say(f"m{i}", f"{i}") for i in range(6)]
    await memory.append(KEY, messages)
    summary = RollingSummary(text="m0..m2 happened", folded=3)
    assert await memory.fold(KEY, messages[0], 3, summary)
    assert [m.content for m in await memory.history(KEY)] == ["m3", "m4", "m5"]
    assert [m.content for m in await memory.everything(KEY)] == [f"m{i}" for i in range(6)]
    assert (await memory.rolling_summary(KEY)) == summary
    # A stale fold (the entry at the offset is not the one folded from) changes nothing.
    assert not await memory.fold(KEY, messages[0], 2, RollingSummary(text="stale"))
    assert len(await memory.history(KEY)) == 3
    # Trimming the oldest entries (history_max_messages=20) moves the offset with them.
    await memory.append(KEY, [say(f"n{i}") for i in range(16)])
    history, rolling = await memory.history_and_summary(KEY)
    assert rolling == summary
    assert history[0].content == "m3"
    assert len(await memory.everything(KEY)) == 20


async def test_a_deleted_message_leaves_history_and_rolling_summary(parts: Parts) -> None:
    memory = parts.memory
    messages = [say("the password is hunter2", "p1"), *(say(f"m{i}", f"x{i}") for i in range(5))]
    await memory.append(KEY, messages)
    ref = MessageRef("slack", "T1", "C1", "p1")
    assert await memory.conversation_of(ref) == KEY
    # Not folded yet: the message simply goes.
    assert await memory.remove_message(ref)
    assert all("hunter2" not in m.content for m in await memory.everything(KEY))
    assert not await memory.remove_message(ref)  # gone already

    # Folded into the rolling summary: the summary is dropped, what remains is whole.
    secret = say("the vault code is 4242", "p2")
    await memory.append(KEY, [secret, say("after", "x9")])
    everything = await memory.everything(KEY)
    first = everything[0]
    assert await memory.fold(KEY, first, 6, RollingSummary(text="vault code 4242", folded=6))
    assert await memory.remove_message(MessageRef("slack", "T1", "C1", "p2"))
    history, rolling = await memory.history_and_summary(KEY)
    assert rolling is None
    assert [m.content for m in history] == ["m0", "m1", "m2", "m3", "m4", "after"]


async def test_an_edited_message_is_replaced_and_keeps_its_file_notes(parts: Parts) -> None:
    memory = parts.memory
    original = say("meet at 10\n[attached image: plan.png]", "e1")
    await memory.append(KEY, [original, say("ok", "e2", "Bo")])
    assert await memory.replace_message(MessageRef("slack", "T1", "C1", "e1"), "meet at 11")
    history = await memory.history(KEY)
    assert history[0].content == "meet at 11\n[attached image: plan.png]"
    assert history[0].name == "Ana" and history[1].content == "ok"
    unknown = MessageRef("slack", "T1", "C1", "nope")
    assert not await memory.replace_message(unknown, "x")


async def test_forget_erases_and_prevents_reimport(parts: Parts) -> None:
    memory = parts.memory
    assert await memory.needs_import(KEY)
    assert await memory.import_history(KEY, [say("old", "o1", "Bo")])
    assert not await memory.import_history(KEY, [say("again", "o2", "Bo")])
    # Imported messages are known for deletions too.
    assert await memory.conversation_of(MessageRef("slack", "T1", "C1", "o1")) == KEY
    await memory.forget(KEY)
    assert await memory.history(KEY) == []
    assert await memory.rolling_summary(KEY) is None
    assert not await memory.needs_import(KEY)


async def test_forget_channel_erases_and_unfollows_only_that_channel(parts: Parts) -> None:
    a = ConversationKey("slack", "T1", "C1", "1.1")
    b = ConversationKey("slack", "T1", "C1", "2.2")
    c = ConversationKey("slack", "T1", "C10", "1.1")
    d = ConversationKey("slack", "T2", "C1", "1.1")
    for key in (a, b, c, d):
        await parts.memory.append(key, [say("hi")])
        await parts.line.follow(key)
    assert await parts.memory.forget_channel(a) == 2
    assert await parts.line.unfollow_channel(a) == 2
    assert await parts.memory.history(a) == [] and await parts.memory.history(b) == []
    assert not await parts.line.is_followed(a) and not await parts.line.is_followed(b)
    assert len(await parts.memory.history(c)) == 1 and len(await parts.memory.history(d)) == 1
    assert await parts.line.is_followed(c) and await parts.line.is_followed(d)


async def test_summary_cache_is_dropped_for_the_whole_channel(parts: Parts) -> None:
    scope = ConversationKey("slack", "T1", "C1", "1.1#summary")
    other = ConversationKey("slack", "T1", "C2", "1.1#summary")
    await parts.memory.store_summary(scope, {"summary": {"tldr": "x"}})
    await parts.memory.store_summary(other, {"summary": {"tldr": "y"}})
    assert await parts.memory.invalidate_summaries(KEY) == 1
    assert await parts.memory.cached_summary(scope) is None
    assert await parts.memory.cached_summary(other) is not None


async def test_usage_ledger_cooldowns_and_once(parts: Parts) -> None:
    ledger = parts.ledger
    await ledger.record_usage("slack:T1", UsageRecord("dialogue", "gpt", 1000, 200, 0.0045))
    await ledger.record_usage("slack:T1", UsageRecord("dialogue", "gpt", 500, 100, 0.0020))
    await ledger.record_usage("slack:T1", UsageRecord("summary", "flash", 4000, 300, 0.00145))
    rows = {(r.route, r.model): r for r in await ledger.usage("slack:T1")}
    assert rows[("dialogue", "gpt")].input_tokens == 1500
    assert rows[("dialogue", "gpt")].cost_usd == pytest.approx(0.0065)
    assert await ledger.spent_today("slack:T1") == pytest.approx(0.00795)
    assert await ledger.usage("slack:T2") == []
    assert await ledger.cooldown("ask", "U1", 0.3) == 0.0
    assert 0 < await ledger.cooldown("ask", "U1", 0.3) <= 0.3
    assert await ledger.cooldown("ask", "U2", 0.3) == 0.0
    await asyncio.sleep(0.35)
    assert await ledger.cooldown("ask", "U1", 0.3) == 0.0
    assert await ledger.once("share", "s1")
    assert not await ledger.once("share", "s1")


async def test_in_process_store_runs_the_same_code(
    key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(redis_url=None, redis_key_prefix=key_prefix, lock_ttl_seconds=1.0)
    with caplog.at_level(logging.WARNING):
        store = await connect_store(settings)
    assert "not persistent" in caplog.text
    assert type(store.redis).__module__.startswith("fakeredis")
    memory, line = History(store, settings), Line(store, settings)
    await memory.append(KEY, [say("hello", "h1")])
    assert [m.content for m in await memory.history(KEY)] == ["hello"]
    assert await memory.remove_message(MessageRef("slack", "T1", "C1", "h1"))
    order: list[int] = []

    async def worker(position: int) -> None:
        ticket = await line.admit(KEY, f"e{position}", position, addressed=True, follow=False)
        assert not isinstance(ticket, str)
        await line.wait(ticket)
        order.append(position)
        await asyncio.sleep(0.005)
        await line.leave(ticket)

    await asyncio.gather(*(worker(p) for p in (5, 3, 4, 1, 2)))
    assert sorted(order[1:]) == order[1:]  # after whoever came first, by position
    assert len(order) == 5
    await line.close()
    await store.close()
