"""Discord adapter: interaction → deferred-response latency under a burst of 100
concurrent /ask commands, and message edits per second per channel against the budget.

The bot (the production `TeamBot`, with its real engine and Redis) runs in this process's
event loop. The fake Discord runs in its own thread and event loop, and the fake CometAPI
in a child process, so neither shares the loop being measured. The fake model streams
each answer for about 5 seconds, so every channel has ten answers streaming at once.

Latency is measured on the fake Discord's clock: from the moment it sends
INTERACTION_CREATE down the gateway to the moment the bot's deferral reaches it, as
Discord's 3-second deadline counts.

    .venv/bin/python bench/discord_latency.py      # needs Redis at $REDIS_URL or 127.0.0.1:6379
    .venv/bin/python bench/discord_latency.py --commands 200 --channels 20
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from _support import (
    API_KEY,
    clean_prefix,
    fake_cometapi_process,
    percentile,
    redis_url,
    summary_ms,
)

SEQUENTIAL = 20
TOKEN = "bench-discord-token-000000"
T = TypeVar("T")


def _streaming_answer(request: Any) -> Any:  # pragma: no cover - runs in the child
    from tests.fakes.cometapi import Reply

    asked = request.last_user_text
    if "instant" in asked:
        return Reply("Here you are: done.")
    if "one-second" in asked:
        return Reply(" ".join(f"part{i}" for i in range(40)), chunks=10, chunk_delay=0.1)
    text = " ".join(f"word{i}" for i in range(200))
    return Reply(text, chunks=50, chunk_delay=0.1)


class LoopThread:
    """An event loop in a thread of its own, for the fake Discord."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    async def call(self, function: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return function()

        return await self.run(wrapped())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 10 ms sleep wakes up: the event loop's responsiveness."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - started - 0.01)


async def idle(bot: Any) -> bool:
    return not bot.busy


async def poll(done: Callable[[], Awaitable[bool]], every: float) -> None:
    """Wait until `done()` is true, checking every `every` seconds."""
    while True:
        if await done():
            return
        await asyncio.sleep(every)


def windows(times: list[float], width: float = 1.0) -> int:
    """Most events in any `width`-second window."""
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= width:
            start += 1
        best = max(best, end - start + 1)
    return best


async def main(commands: int, channels: int, interval: float) -> None:
    from bots.discord.app import discord_endpoints
    from bots.discord.bot import TeamBot
    from core.engine import Engine
    from core.settings import load_settings
    from tests.fakes.discord_server import FakeDiscord

    class Bot(TeamBot):
        async def before_identify_hook(
            self, shard_id: int | None, *, initial: bool = False
        ) -> None:
            return None

    fake_thread = LoopThread()
    url = redis_url()
    prefix = f"teambot-bench-{uuid.uuid4().hex[:8]}"

    async def build() -> Any:
        dc = FakeDiscord(token=TOKEN, validate_requests=False)
        await dc.start()
        guild = dc.add_guild("Bench")
        rooms = [dc.add_channel(guild, f"room-{i}") for i in range(channels)]
        people = [dc.add_member(guild, f"user{i}") for i in range(commands)]
        quiet = [dc.add_channel(guild, f"quiet-{i}") for i in range(SEQUENTIAL)]
        return dc, rooms, people, quiet

    with fake_cometapi_process(_streaming_answer) as model_url:
        dc, rooms, people, quiet = await fake_thread.run(build())
        settings = load_settings(
            _env_file=None,
            cometapi_api_key=API_KEY,
            cometapi_base_url=model_url,
            redis_url=url,
            redis_key_prefix=prefix,
            discord_bot_token=TOKEN,
            discord_api_url=dc.api_url,
            discord_gateway_url=dc.gateway_url,
            discord_edit_interval=interval,
            log_level="WARNING",
        )
        async with clean_prefix(url, prefix):
            engine = await Engine.start(settings)
            bot = Bot(settings, engine, guild_ready_timeout=0.1)
            try:
                with discord_endpoints(settings):
                    async with bot:
                        runner = asyncio.create_task(bot.start(TOKEN))
                        await asyncio.wait_for(bot.wait_until_ready(), 20)
                        await mentions_in_one_channel(bot, dc, fake_thread, quiet, people)
                        single = await one_at_a_time(bot, dc, fake_thread, quiet, people)
                        await measure(
                            bot, dc, fake_thread, rooms, people, commands, interval, single
                        )
                        await bot.close()
                        await runner
            finally:
                await engine.close()
        await fake_thread.run(dc.stop())
    fake_thread.stop()


async def mentions_in_one_channel(
    bot: Any, dc: Any, fake: LoopThread, channels: list[Any], people: list[Any]
) -> None:
    """Mentions in one channel against Discord's per-channel buckets (5 creates and 5
    edits per 5 s, announced in rate-limit headers): first, 30 one after another with an
    instant model; then 20 people at once, each answer streamed for a second."""
    me = bot.user.id
    first, crowd = channels[0], channels[1]

    async def ask(channel: Any, person: Any, text: str) -> tuple[int, float]:
        def send() -> tuple[dict[str, Any], float]:
            payload = dc.message(channel, f"<@{me}> {text}", person)
            return payload, dc.now()

        payload, at = await fake.call(send)
        await fake.run(dc.dispatch("MESSAGE_CREATE", payload))
        return int(payload["id"]), at

    def replies(channel: Any) -> dict[int, list[float]]:
        """Write times of each bot message, by the question it answers."""
        by_message: dict[int, list[float]] = {}
        for write in dc.writes:
            if write.channel_id == channel.id and write.kind in ("create", "edit"):
                by_message.setdefault(write.message_id, []).append(write.time)
        out: dict[int, list[float]] = {}
        for message in dc.messages(channel):
            if message.author_id == me and message.reference_id is not None:
                out[message.reference_id] = sorted(by_message.get(message.id, []))
        return out

    firsts: list[float] = []
    for i in range(30):
        question, at = await ask(first, people[i % len(people)], f"instant question {i}")
        await poll(lambda q=question: fake.call(lambda: bool(replies(first).get(q))), 0.002)
        await poll(lambda: idle(bot), 0.005)
        firsts.append(await fake.call(lambda q=question: replies(first)[q][0]) - at)
    asked = await asyncio.gather(
        *(ask(crowd, people[i], f"one-second question {i}") for i in range(20))
    )
    started = min(at for _q, at in asked)
    await poll(lambda: idle(bot), 0.05)
    done = await fake.call(lambda: replies(crowd))
    finals = [max(done[q]) - started for q, _at in asked if done.get(q)]
    if os.environ.get("BENCH_DEBUG"):
        creates = await fake.call(
            lambda: sorted(
                round(w.time - started, 2)
                for w in dc.writes
                if w.channel_id == crowd.id and w.kind == "create"
            )
        )
        print("  creates at", creates)
    refused = await fake.call(lambda: sum(1 for c in dc.calls if c.status == 429))
    complete = await fake.call(
        lambda: sum(
            1
            for m in dc.messages(crowd)
            if m.author_id == me and m.content.rstrip().endswith("part39")
        )
    )
    # Each of 20 answers needs one message created; 5 creates per 5 s means the last
    # create cannot come before 15 s after the first (it then carries the final text).
    bound = (math.ceil(20 / 5) - 1) * 5.0
    print("Discord: mentions in one channel (per-channel buckets 5 per 5 s, from headers):")
    print(f"  30 one after another, instant model: first text {summary_ms(firsts)}")
    print(
        f"  20 at once, 1 s answers: {complete}/20 complete; last final text after "
        f"{max(finals):.1f} s (least the budget allows: ~{bound:.0f} s); "
        f"final text p50 {statistics.median(finals):.1f} s; {refused} responses were 429"
    )


async def one_at_a_time(
    bot: Any, dc: Any, fake: LoopThread, quiet: list[Any], people: list[Any]
) -> list[float]:
    """The same command, one at a time (each in a quiet channel): the latency without
    a crowd, once connections to Redis and Discord are open."""
    latencies: list[float] = []
    for i, channel in enumerate(quiet):
        payload = await fake.call(
            lambda i=i, channel=channel: dc.interaction(
                "ask", {"prompt": f"warm {i}"}, people[-1 - i], channel
            )
        )
        await fake.run(dc.dispatch("INTERACTION_CREATE", payload))
        state = await fake.call(lambda payload=payload: dc.interaction_state(payload))
        await poll(lambda state=state: fake.call(lambda: state.callback_at is not None), 0.002)
        latencies.append(state.callback_at - state.dispatched_at)
    await poll(lambda: idle(bot), 0.05)  # let those answers finish before the crowd arrives
    return latencies


async def measure(
    bot: Any,
    dc: Any,
    fake: LoopThread,
    rooms: list[Any],
    people: list[Any],
    commands: int,
    interval: float,
    single: list[float],
) -> None:
    def payloads() -> list[dict[str, Any]]:
        return [
            dc.interaction("ask", {"prompt": f"question {i}"}, people[i], rooms[i % len(rooms)])
            for i in range(commands)
        ]

    burst = await fake.call(payloads)
    lags: list[float] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(loop_lag(stop, lags))

    async def send_all() -> None:
        for payload in burst:
            await dc.dispatch("INTERACTION_CREATE", payload)

    started = time.perf_counter()
    await fake.run(send_all())
    states = await fake.call(lambda: [dc.interaction_state(p) for p in burst])

    async def all_deferred() -> bool:
        return await fake.call(lambda: all(s.callback_at is not None for s in states))

    await poll(all_deferred, 0.01)
    deferred_in = time.perf_counter() - started
    await poll(lambda: idle(bot), 0.05)
    answered_in = time.perf_counter() - started
    stop.set()
    await monitor

    burst_rooms = {room.id for room in rooms}

    def collect() -> tuple[list[float], dict[int, list[float]], list[str]]:
        latencies = [s.callback_at - s.dispatched_at for s in states]
        edits: dict[int, list[float]] = {}
        for write in dc.writes:
            if write.kind == "edit" and write.channel_id in burst_rooms:
                edits.setdefault(write.channel_id, []).append(write.time)
        finals = [s.original_content or "" for s in states]
        return latencies, edits, finals

    latencies, edits, finals = await fake.call(collect)
    complete = sum(1 for text in finals if text.rstrip().endswith("word199"))
    per_window = [windows(sorted(times)) for times in edits.values()]
    gaps = [
        b - a
        for times in edits.values()
        for a, b in zip(sorted(times), sorted(times)[1:], strict=False)
    ]
    rates = [
        (len(times) - 1) / (max(times) - min(times))
        for times in edits.values()
        if len(times) > 1 and max(times) > min(times)
    ]
    print(
        f"Discord adapter: {commands} concurrent /ask in {len(rooms)} channels, "
        f"edit budget {1 / interval:.1f} edit/s per channel"
    )
    print(f"  interaction → deferred response, one at a time: {summary_ms(single)}")
    print(f"  interaction → deferred response, {commands} at once: {summary_ms(latencies)}")
    print(f"  all {commands} deferred within {deferred_in * 1000:.0f} ms of the first event")
    print(
        f"  event-loop lag during the run: p99 {percentile(lags, 99) * 1000:.1f} ms, "
        f"max {max(lags) * 1000:.1f} ms"
    )
    print(f"  answers complete: {complete}/{commands} in {answered_in:.1f} s")
    print(
        f"  interaction edits per channel (Discord limits them per interaction, not per "
        f"channel): max {max(per_window)} in any 1 s window; mean {statistics.fmean(rates):.2f}/s; "
        f"min gap {min(gaps):.3f} s; {sum(len(t) for t in edits.values())} edits in all"
    )


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="DISCORD_EDIT_INTERVAL")
    return parser.parse_args()


if __name__ == "__main__":
    options = _args()
    asyncio.run(main(options.commands, options.channels, options.interval))
