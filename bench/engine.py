"""The engine's own overhead per turn, and the cost of a 10,000-message history.

With the fake CometAPI answering instantly (in its own process), a turn's time is split
into the time spent waiting on the model provider and everything else (dedupe, ordered
lock, memory reads and writes, request building, streaming into the sink, usage ledger):
the latter is the engine's overhead.

    .venv/bin/python bench/engine.py            # needs Redis at $REDIS_URL or 127.0.0.1:6379
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator

from _support import API_KEY, clean_prefix, fake_cometapi_process, redis_url, summary_ms

from core.engine import Engine
from core.providers.base import Event, ModelRequest, Provider, Target
from core.settings import load_settings
from core.sink import CollectingSink
from core.tokens import split_for_budget
from core.types import Author, ChatMessage, ConversationKey, Incoming

_model_time: dict[str, float] = {}


class TimedProvider(Provider):
    """Wraps a provider and adds the wall time spent inside it to the current turn."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.protocol = inner.protocol

    def build(self, target: Target, request: ModelRequest):  # type: ignore[no-untyped-def]
        return self.inner.build(target, request)

    def classify(self, status, headers, body):  # type: ignore[no-untyped-def]
        return self.inner.classify(status, headers, body)

    def parse(self, events):  # type: ignore[no-untyped-def]
        return self.inner.parse(events)

    async def stream(
        self, target: Target, request: ModelRequest, *, deadline: float | None = None
    ) -> AsyncGenerator[Event, None]:
        turn = request.messages[-1].id or ""
        started = time.perf_counter()
        try:
            async for event in self.inner.stream(target, request, deadline=deadline):
                paused = time.perf_counter()
                _model_time[turn] = _model_time.get(turn, 0.0) + paused - started
                yield event
                started = time.perf_counter()
        finally:
            _model_time[turn] = _model_time.get(turn, 0.0) + time.perf_counter() - started


async def turns(engine: Engine, conversations: int, per_conversation: int) -> list[float]:
    overheads: list[float] = []

    async def conversation(n: int) -> None:
        key = ConversationKey("bench", "W", f"C{n}", uuid.uuid4().hex[:8])
        for i in range(per_conversation):
            event = uuid.uuid4().hex
            incoming = Incoming(key, event, Author("U", "Ana"), f"message {i} " + "word " * 30)
            started = time.perf_counter()
            await engine.reply(incoming, CollectingSink())
            total = time.perf_counter() - started
            overheads.append(total - _model_time.pop(event, 0.0))

    await asyncio.gather(*(conversation(n) for n in range(conversations)))
    return overheads


async def history_cost(engine: Engine) -> None:
    key = ConversationKey("bench", "W", "big", "thread")
    messages = [
        ChatMessage.user(f"message {i}: " + "lorem ipsum dolor sit amet " * 6, f"user{i % 7}")
        if i % 2 == 0
        else ChatMessage.assistant(f"answer {i}: " + "consectetur adipiscing elit " * 8)
        for i in range(10_000)
    ]
    for start in range(0, len(messages), 500):
        await engine.memory.append(key, messages[start : start + 500])
    loads = []
    for _ in range(5):
        started = time.perf_counter()
        history = await engine.memory.history(key)
        loads.append(time.perf_counter() - started)
    fits = []
    for _ in range(5):
        started = time.perf_counter()
        fold, keep = split_for_budget(history, engine.settings.history_token_budget, 3000)
        fits.append(time.perf_counter() - started)
    size = await engine.store.redis.memory_usage(engine.store.keys.of("h", key))
    print(f"10,000-message history ({len(history)} loaded, {size / 1e6:.1f} MB in Redis):")
    print(f"  load (LRANGE + parse)  {summary_ms(loads)}")
    print(f"  fit to the budget      {summary_ms(fits)}   -> fold {len(fold)}, keep {len(keep)}")


async def main() -> None:
    url = redis_url()
    prefix = f"teambot-bench-{uuid.uuid4().hex[:8]}"
    with fake_cometapi_process() as base_url:
        settings = load_settings(
            _env_file=None,
            cometapi_api_key=API_KEY,
            cometapi_base_url=base_url,
            redis_url=url,
            redis_key_prefix=prefix,
            history_max_messages=10_000,
            history_token_budget=1_000_000,  # measure turns, not folding
            log_level="WARNING",
        )
        async with clean_prefix(url, prefix):
            engine = await Engine.start(settings)
            engine.router.providers = {
                name: TimedProvider(p) for name, p in engine.router.providers.items()
            }
            try:
                await turns(engine, 5, 4)  # warm-up
                print("Engine overhead per turn (instant model, real Redis):")
                for concurrent, per in ((1, 200), (10, 40), (100, 8)):
                    overheads = await turns(engine, concurrent, per)
                    print(f"  {concurrent:3d} concurrent conversations  {summary_ms(overheads)}")
                await history_cost(engine)
            finally:
                await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
