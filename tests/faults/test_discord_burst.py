"""A burst on Discord: 1,000 messages over 100 threads the bot converses in, up to 50
gateway events in flight, one in ten replayed (a RESUME, a second process), answers
taking 20-100 ms. The real client against the fake gateway and REST API, real Redis."""

from __future__ import annotations

import asyncio
import random

from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.test_discord_harness import running_bot

GPT = "gpt-5.3-chat-latest"
THREADS, PER_THREAD = 100, 10


async def test_a_burst_of_a_thousand_thread_messages(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> None:
    rng = random.Random(5)
    cometapi.set_responder(
        lambda r: Reply(f"re {r.last_user_text.rsplit(' ', 1)[-1]}", delay=rng.uniform(0.02, 0.1))
    )
    # The production lease (30 s): the fakes share this one event loop with the bot, and a
    # 3 s test lease would be lost to the burst's own load, not to anything under test.
    settings = {"discord_edit_interval": 0.05, "lock_ttl_seconds": 30.0}
    async with running_bot(redis_url, key_prefix, cometapi, settings=settings) as h:
        threads = [
            h.dc.add_thread(h.general, f"topic {t}", owner=h.dc.bot_user) for t in range(THREADS)
        ]
        in_flight = asyncio.Semaphore(50)

        async def dispatch(payload: dict[str, object]) -> None:
            async with in_flight:
                await h.dc.dispatch("MESSAGE_CREATE", payload)

        async def burst(t: int) -> None:
            for n in range(PER_THREAD):
                payload = h.dc.message(threads[t], f"t{t} q{n}", h.alice)
                await dispatch(payload)
                if rng.random() < 0.1:
                    asyncio.get_running_loop().create_task(dispatch(payload))

        await asyncio.gather(*(burst(t) for t in range(THREADS)))
        await h.dc.wait_until(
            lambda: all(len(h.bot_messages(th)) >= PER_THREAD for th in threads), 90
        )
        await asyncio.sleep(0.3)
        await h.settle()
        requests = h.cometapi.requests_for(GPT)
        assert len(requests) == THREADS * PER_THREAD  # none lost, none twice
        for t, thread in enumerate(threads):
            answers = [m.content for m in h.bot_messages(thread)]
            assert answers == [f"re q{n}" for n in range(PER_THREAD)], answers
            last = next(r for r in reversed(requests) if r.last_user_text == f"[Alice] t{t} q9")
            users = [m["content"] for m in last.messages if m["role"] == "user"]
            assert users == [f"[Alice] t{t} q{n}" for n in range(PER_THREAD)]
