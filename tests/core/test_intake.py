"""Core's intake end to end on real Redis (a single server and a local Redis Cluster) and
the fake CometAPI: what a team sees when people keep typing while the bot is busy,
several processes share the work, messages are deleted or edited, and Redis stalls."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import pytest

from core import Admission, Author, ChatMessage, ConversationKey, Engine, Incoming, Intake
from core.failures import LOST_TURN
from core.memory import MessageRef
from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.faults.procs import RedisServer
from tests.support import RecordingSink, make_settings

GPT = "gpt-5.3-chat-latest"
ANA = Author("U1", "Ana")
BO = Author("U2", "Bo")


def thread() -> ConversationKey:
    return ConversationKey("slack", "T1", "C1", f"{time.time():.6f}-{uuid.uuid4().hex[:6]}")


def said(key: ConversationKey, text: str, position: int, **extra: Any) -> Incoming:
    values: dict[str, Any] = {
        "key": key,
        "event_id": f"{key.thread}:{position}",
        "author": ANA,
        "text": text,
        "message_id": f"m{position}",
        "position": position,
    }
    values.update(extra)
    return Incoming(**values)


class Screen:
    """The sinks of one process's answers, by question text."""

    def __init__(self) -> None:
        self.sinks: dict[str, RecordingSink] = {}
        self.opened: list[str] = []

    def opener(self) -> Callable[[Incoming], Any]:
        async def open_sink(incoming: Incoming) -> RecordingSink:
            sink = RecordingSink()
            self.sinks[incoming.text] = sink
            self.opened.append(incoming.text)
            return sink

        return open_sink

    async def all_done(self, count: int, within: float = 20) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if len(self.sinks) >= count and all(s.done.is_set() for s in self.sinks.values()):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.sinks)} of {count} answers ended")


@pytest.fixture
def engines(
    store_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> Callable[..., AbstractAsyncContextManager[list[Engine]]]:
    """`async with engines(2, reply_concurrency=1) as [a, b]`: processes sharing Redis."""

    class _Engines:
        def __init__(self, count: int, overrides: dict[str, Any]) -> None:
            self.count = count
            self.overrides = overrides
            self.stack = AsyncExitStack()

        async def __aenter__(self) -> list[Engine]:
            values: dict[str, Any] = {
                "redis_url": store_url,
                "redis_key_prefix": key_prefix,
                "cometapi_base_url": cometapi.base_url,
            }
            values.update(self.overrides)
            started = []
            for _ in range(self.count):
                engine = await Engine.start(make_settings(**values))
                self.stack.push_async_callback(engine.close)
                started.append(engine)
            return started

        async def __aexit__(self, *exc: object) -> None:
            await self.stack.aclose()

    def make(count: int = 1, **overrides: Any) -> AbstractAsyncContextManager[list[Engine]]:
        return _Engines(count, overrides)

    return make


def users_in(request: Any) -> list[str]:
    return [str(m["content"]) for m in request.messages if m.get("role") == "user"]


async def test_a_follow_up_typed_while_the_answer_waits_for_a_slot_is_answered_second(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    cometapi.set_responder(lambda r: Reply(f"re: {r.last_user_text}", chunks=2, delay=0.15))
    async with engines(1, reply_concurrency=1) as [engine]:
        intake, screen = Intake(engine), Screen()
        busy = thread()  # another conversation holds the only slot
        await intake.submit(said(busy, "unrelated", 1), screen.opener())
        key = thread()
        opening = said(key, "where do we meet?", 10, follow=True)
        assert await intake.submit(opening, screen.opener()) is Admission.ADMITTED
        await asyncio.sleep(0.01)
        follow_up = said(key, "and when?", 11, addressed=False)
        assert await intake.submit(follow_up, screen.opener()) is Admission.ADMITTED
        await screen.all_done(3)
        await engine.idle()
    assert screen.opened.index("where do we meet?") < screen.opened.index("and when?")
    last = [r for r in cometapi.requests_for(GPT) if r.last_user_text.endswith("and when?")]
    assert users_in(last[0]) == ["[Ana] where do we meet?", "[Ana] and when?"]
    assert screen.sinks["and when?"].final == "re: [Ana] and when?"


async def test_only_addressed_or_followed_messages_are_answered(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    async with engines(1) as [engine]:
        intake, screen = Intake(engine), Screen()
        key = thread()
        chatter = said(key, "lunch?", 1, addressed=False)
        assert await intake.submit(chatter, screen.opener()) is Admission.IGNORED
        mention = said(key, "hello bot", 2, follow=True)
        assert await intake.submit(mention, screen.opener()) is Admission.ADMITTED
        assert await intake.submit(mention, screen.opener()) is Admission.DUPLICATE
        after = said(key, "thanks", 3, addressed=False)
        assert await intake.submit(after, screen.opener()) is Admission.ADMITTED
        await screen.all_done(2)
        await intake.submit(said(key, "forget", 4), screen.opener())
        await screen.all_done(3)
        assert "erased" in (screen.sinks["forget"].final or "")
        assert not await intake.is_followed(key)
        late = said(key, "still there?", 5, addressed=False)
        assert await intake.submit(late, screen.opener()) is Admission.IGNORED
        await engine.idle()
    assert [r.last_user_text for r in cometapi.requests_for(GPT)] == [
        "[Ana] hello bot",
        "[Ana] thanks",
    ]


async def test_an_existing_thread_is_read_once_inside_the_turn(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    reads = 0

    async def earlier() -> list[ChatMessage]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return [ChatMessage.user("the budget is 4k", "Bo", id="b1")]

    async with engines(2) as [a, b]:
        screens = [Screen(), Screen()]
        key = thread()
        first = said(key, "what is the budget?", 5, follow=True, backfill=earlier)
        second = said(key, "and the deadline?", 6, backfill=earlier)
        await Intake(a).submit(first, screens[0].opener())
        await Intake(b).submit(second, screens[1].opener())
        await screens[0].all_done(1)
        await screens[1].all_done(1)
        await a.idle()
        await b.idle()
    assert reads == 1
    (request, later) = cometapi.requests_for(GPT)
    assert users_in(request) == ["[Bo] the budget is 4k", "[Ana] what is the budget?"]
    assert users_in(later)[-1] == "[Ana] and the deadline?"


async def test_a_burst_on_two_processes_is_answered_once_in_order_with_full_memory(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    """20 conversations x 6 messages at once, each message sent as soon as the previous one
    of its conversation was acknowledged, to either of two processes; one in five is
    delivered again later (a platform retry), to either. Each message is answered once,
    each conversation in the order it was written, each request holding every earlier turn."""
    rng = random.Random(7)
    cometapi.set_responder(
        lambda r: Reply(f"re: {r.last_user_text}", chunks=2, delay=rng.uniform(0.005, 0.03))
    )
    keys = [thread() for _ in range(20)]
    async with engines(2, reply_concurrency=8, redis_max_connections=4) as processes:
        intakes = [Intake(e) for e in processes]
        screen = Screen()
        retries: list[Incoming] = []

        async def conversation(key: ConversationKey) -> None:
            for n in range(6):
                incoming = said(key, f"{key.thread} q{n}", 100 + n)
                await rng.choice(intakes).submit(incoming, screen.opener())
                if rng.random() < 0.2:
                    retries.append(incoming)
                await asyncio.sleep(rng.uniform(0, 0.01))

        await asyncio.gather(*(conversation(key) for key in keys))
        for incoming in rng.sample(retries, len(retries)):
            answer = await rng.choice(intakes).submit(incoming, screen.opener())
            assert answer is Admission.DUPLICATE
        await screen.all_done(120, within=60)
        for e in processes:
            await e.idle()
    requests = cometapi.requests_for(GPT)
    assert len(requests) == 120  # nothing lost, nothing twice
    for key in keys:
        mine = [r for r in requests if key.thread in r.last_user_text]
        asked = [r.last_user_text.rsplit(" ", 1)[-1] for r in mine]
        assert asked == [f"q{n}" for n in range(6)], asked
        questions = [u for u in users_in(mine[-1]) if key.thread in u]
        assert [q.rsplit(" ", 1)[-1] for q in questions] == [f"q{n}" for n in range(6)]


async def test_deleted_and_edited_messages_never_reach_the_model_again(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    async with engines(1, history_token_budget=500) as [engine]:
        intake, screen = Intake(engine), Screen()
        key = thread()
        await intake.submit(said(key, "the password is hunter2", 1), screen.opener())
        await intake.submit(said(key, "meet at 10", 2), screen.opener())
        await screen.all_done(2)
        ref = MessageRef("slack", "T1", "C1", "m1")
        assert await intake.deleted(ref)
        assert await intake.edited(MessageRef("slack", "T1", "C1", "m2"), "meet at 11")
        await intake.submit(said(key, "what did I say?", 3), screen.opener())
        await screen.all_done(3)
        await engine.idle()
    last = cometapi.requests_for(GPT)[-1]
    text = str(last.json)
    assert "hunter2" not in text
    # the edited message reads as edited (the answer given to the old text stays)
    assert "[Ana] meet at 11" in users_in(last)
    assert "[Ana] meet at 10" not in users_in(last)


async def test_a_lost_lease_stops_the_answer_and_it_never_overlaps_the_next(
    key_prefix: str, cometapi: FakeCometAPI
) -> None:
    """Redis stalls (SIGSTOP) for longer than LOCK_TTL in the middle of an answer: the
    answer stops with a one-line note and stores nothing; the next message starts only
    after that, and its request does not carry the stopped one."""
    server = RedisServer()
    await server.start()
    starts: list[tuple[str, float]] = []
    started = asyncio.Event()

    def respond(request: Any) -> Reply:
        starts.append((request.last_user_text, time.monotonic()))
        started.set()
        if "first" in request.last_user_text:
            return Reply("a long answer " * 20, chunks=20, chunk_delay=0.2)
        return Reply("second answer")

    cometapi.set_responder(respond)
    try:
        values = {
            "redis_url": server.url,
            "redis_key_prefix": key_prefix,
            "cometapi_base_url": cometapi.base_url,
            "lock_ttl_seconds": 1.0,
        }
        async with await Engine.start(make_settings(**values)) as engine:
            intake, screen = Intake(engine), Screen()
            key = thread()
            await intake.submit(said(key, "first question", 1), screen.opener())
            await intake.submit(said(key, "second question", 2), screen.opener())
            await asyncio.wait_for(started.wait(), 5)
            await asyncio.sleep(0.3)
            server.pause()
            await asyncio.wait_for(screen.sinks["first question"].done.wait(), 3)
            stopped_at = time.monotonic()
            await asyncio.sleep(1.5)
            server.resume()
            await screen.all_done(2)
            await engine.idle()
            history = await engine.memory.everything(key)
        first = screen.sinks["first question"]
        assert first.error == LOST_TURN
        appended_after = [c for c in first.calls[first.calls.index(("fail", LOST_TURN)) :]]
        assert appended_after == [("fail", LOST_TURN)]
        second_started = dict(starts)["[Ana] second question"]
        assert second_started > stopped_at
        last = cometapi.requests_for(GPT)[-1]
        assert "first question" not in str(last.json)
        assert [m.content for m in history] == ["second question", "second answer"]
    finally:
        server.resume()
        await server.close()
