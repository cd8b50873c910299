"""Production figures with real processes: sustained throughput and latency with one and
two Slack HTTP replicas sharing one Redis, resident memory of a process after 10,000
conversations, and Redis memory per conversation.

Every party is its own process: the fake Slack Web API (pre-seeded with the mentions, and
reporting when each answer was complete), the fake CometAPI (answers instantly), each
replica (`teambot slack --http`), and this driver, which sends the signed events at a
fixed rate (open loop), spread over the replicas round robin.

    .venv/bin/python bench/production.py                   # Redis at $REDIS_URL or 6379
    .venv/bin/python bench/production.py --rate 60 --seconds 20 --conversations 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from _support import (
    API_KEY,
    SLACK_TOKEN,
    SlackRequests,
    clean_prefix,
    fake_cometapi_process,
    fake_slack_process,
    percentile,
    redis_server,
)
from redis.asyncio import Redis

from tests.faults.procs import BotProcess, bot_env
from tests.stores import local_cluster


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(
    events: SlackRequests,
    stamps: list[str],
    stats_url: str,
    replicas: list[BotProcess],
    rate: float,
) -> dict[str, Any]:
    """Send one mention per stamp at `rate` per second; wait for the answers."""
    prepared = [events.mention(ts, i) for i, ts in enumerate(stamps)]
    sent: dict[str, float] = {}
    acks: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        begin = time.monotonic() + 0.05

        async def one(i: int) -> None:
            scheduled = begin + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            body, headers = prepared[i]
            url = replicas[i % len(replicas)].url + "/slack/events"
            sent[stamps[i]] = time.monotonic()  # CLOCK_MONOTONIC: the fake's clock too
            async with http.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
            acks.append(time.monotonic() - sent[stamps[i]])

        await asyncio.gather(*(one(i) for i in range(len(stamps))))
        offered = len(stamps) / (time.monotonic() - begin)
        done: dict[str, float] = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            async with http.get(stats_url + "/stats") as response:
                everything = json.loads(await response.text())
            done = {ts: everything[ts] for ts in stamps if ts in everything}
            if len(done) == len(stamps):
                break
    answered = [done[ts] - sent[ts] for ts in stamps if ts in done]
    span = max(done.values(), default=time.monotonic()) - min(sent.values())
    return {
        "events": len(stamps),
        "answered": len(answered),
        "offered": offered,
        "throughput": len(answered) / span,
        "ack": acks,
        "answer": answered,
    }


async def threads_burst(
    events: SlackRequests,
    roots: list[str],
    stats_url: str,
    replicas: list[BotProcess],
    *,
    follow_ups: int,
    retry_share: float = 0.1,
    in_flight: int = 50,
) -> dict[str, int]:
    """Each root's mention, then `follow_ups` messages in its thread without a mention, each
    sent once the previous one of its thread was acknowledged, to the replicas in turn; a
    share delivered a second time (Slack's retry). Counts what a team would notice."""
    rng = random.Random(3)
    gate = asyncio.Semaphore(in_flight)
    counter = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(body: bytes, headers: dict[str, str], retry: bool = False) -> None:
            nonlocal counter
            counter += 1
            url = replicas[counter % len(replicas)].url + "/slack/events"
            if retry:
                headers = {**headers, "X-Slack-Retry-Num": "1"}
            async with gate, http.post(url, data=body, headers=headers) as response:
                await response.read()

        retries: list[asyncio.Task[None]] = []

        async def thread(i: int, root: str) -> None:
            deliveries = [events.mention(root, i)] + [
                events.follow_up(root, f"question {i}.{n}") for n in range(1, follow_ups + 1)
            ]
            for body, headers in deliveries:
                await post(body, headers)
                if rng.random() < retry_share:
                    retries.append(asyncio.create_task(post(body, headers, retry=True)))

        await asyncio.gather(*(thread(i, root) for i, root in enumerate(roots)))
        await asyncio.gather(*retries)
        expected = len(roots) * (follow_ups + 1)
        deadline = time.monotonic() + 120
        found: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            async with http.post(stats_url + "/answers", json=roots) as response:
                found = json.loads(await response.text())
            if sum(len(v) for v in found.values()) >= expected:
                await asyncio.sleep(1.0)  # a duplicate would show up by now
                async with http.post(stats_url + "/answers", json=roots) as response:
                    found = json.loads(await response.text())
                break
    lost = duplicates = out_of_order = 0
    for i, root in enumerate(roots):
        asked = [f"question {i}"] + [f"question {i}.{n}" for n in range(1, follow_ups + 1)]
        answered = [a.rsplit("] ", 1)[-1] for a in found.get(root, [])]
        lost += len(set(asked) - set(answered))
        duplicates += len(answered) - len(set(answered))
        order = [asked.index(a) for a in answered if a in asked]
        out_of_order += sum(1 for a, b in itertools.pairwise(order) if b < a)
    return {
        "messages": expected,
        "lost": lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
    }


def show_burst(label: str, result: dict[str, int]) -> None:
    print(
        f"  {label:<28} {result['messages']:>5} messages: lost {result['lost']}, "
        f"answered twice {result['duplicates']}, out of order {result['out_of_order']}"
    )


def show(label: str, result: dict[str, Any]) -> None:
    ack = [x * 1000 for x in result["ack"]]
    answer = [x * 1000 for x in result["answer"]]
    print(
        f"  {label:<10} {result['answered']:>5}/{result['events']} answered   "
        f"{result['throughput']:5.0f} answers/s (offered {result['offered']:.0f}/s)   "
        f"ack p50 {percentile(ack, 50):6.1f} ms  p99 {percentile(ack, 99):6.1f} ms   "
        f"answer p50 {percentile(answer, 50):6.0f} ms  p99 {percentile(answer, 99):6.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description="teambot production figures")
    parser.add_argument("--rates", default="40,80", help="offered mentions/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--memory-rate", type=float, default=40.0)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--threads", type=int, default=100, help="threads in the ordering runs")
    parser.add_argument("--follow-ups", type=int, default=9)
    parser.add_argument("--verbose", action="store_true", help="show the replicas' warnings")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    per_run = [int(rate * args.seconds) for rate in rates]
    needed = 2 * sum(per_run) + 3 * args.threads
    needed += 0 if args.skip_memory else args.conversations
    with (
        redis_server() as url,
        fake_cometapi_process() as cometapi_url,
        fake_slack_process(needed) as (api_url, secret, stamps, stats_url),
    ):
        events = SlackRequests(secret)
        pool = iter(stamps)

        def env(prefix: str) -> dict[str, str]:
            return bot_env(
                cometapi_api_key=API_KEY,
                cometapi_base_url=cometapi_url,
                redis_url=url,
                redis_key_prefix=prefix,
                slack_bot_token=SLACK_TOKEN,
                slack_signing_secret=secret,
                slack_api_url=api_url,
                log_level="WARNING",
            )

        async def with_replicas(count: int, work: Any, redis: str | None = None) -> Any:
            prefix = f"teambot-bench-{uuid.uuid4().hex[:8]}"
            # a throwaway cluster needs no cleaning
            cleaning = clean_prefix(url, prefix) if redis is None else contextlib.nullcontext()
            async with cleaning:
                settings = env(prefix)
                if redis is not None:
                    settings["REDIS_URL"] = redis
                replicas = [BotProcess(settings, name=f"replica-{i}") for i in range(count)]
                await asyncio.gather(*(r.start() for r in replicas))
                try:
                    return await work(replicas, prefix)
                finally:
                    await asyncio.gather(*(r.stop() for r in replicas))
                    for replica in replicas:
                        problems = [
                            line
                            for line in replica.log.splitlines()
                            if '"level": "info"' not in line
                        ]
                        if problems and args.verbose:
                            print(f"  {replica.name}: {len(problems)} log lines above INFO, e.g.")
                            for line in problems[:5]:
                                print("    " + line[:400])
                        replica.cleanup()

        print(f"Sustained load, each mention a new thread, instant model, {args.seconds:.0f} s:")
        for rate, count in zip(rates, per_run, strict=True):
            for replicas in (1, 2):
                batch = [next(pool) for _ in range(count)]

                async def run(
                    procs: list[BotProcess],
                    _prefix: str,
                    batch: list[str] = batch,
                    rate: float = rate,
                ) -> dict[str, Any]:
                    return await load(events, batch, stats_url, procs, rate)

                result = await with_replicas(replicas, run)
                show(f"{replicas} replica{'s' if replicas > 1 else ''}", result)

        print(
            f"Threads: {args.threads} mentions, {args.follow_ups} follow-ups each without a "
            "mention, 10% delivered twice, 50 in flight:"
        )
        for replicas in (1, 2):
            batch = [next(pool) for _ in range(args.threads)]

            async def burst(
                procs: list[BotProcess], _prefix: str, batch: list[str] = batch
            ) -> dict[str, int]:
                return await threads_burst(
                    events, batch, stats_url, procs, follow_ups=args.follow_ups
                )

            result = await with_replicas(replicas, burst)
            show_burst(f"{replicas} replica{'s' if replicas > 1 else ''}, one Redis", result)
        with local_cluster() as cluster_url:
            batch = [next(pool) for _ in range(args.threads)]

            async def on_cluster(
                procs: list[BotProcess], _prefix: str, batch: list[str] = batch
            ) -> dict[str, int]:
                return await threads_burst(
                    events, batch, stats_url, procs, follow_ups=args.follow_ups
                )

            result = await with_replicas(2, on_cluster, redis=cluster_url)
            show_burst("2 replicas, 3-node Redis Cluster", result)

        if args.skip_memory:
            return
        n = args.conversations
        batch = [next(pool) for _ in range(n)]

        async def memory(procs: list[BotProcess], prefix: str) -> None:
            (replica,) = procs
            assert replica.process is not None
            before = rss_mb(replica.process.pid)
            result = await load(events, batch, stats_url, procs, args.memory_rate)
            await asyncio.sleep(1)
            after = rss_mb(replica.process.pid)
            redis = Redis.from_url(url)
            total = keys = 0
            history = 0
            try:
                async for key in redis.scan_iter(match=f"{prefix}:*", count=2000):
                    size = int(await redis.memory_usage(key) or 0)
                    total += size
                    keys += 1
                    if key.startswith(f"{prefix}:h:".encode()):
                        history += size
            finally:
                await redis.aclose()
            print(f"Memory after {n:,} conversations (one question and answer each):")
            print(
                f"  {result['answered']:,} answered; process RSS {before:.0f} MB at start, "
                f"{after:.0f} MB after ({(after - before) * 1024 / n:.2f} KB per conversation)"
            )
            print(
                f"  Redis: {keys:,} keys, {total / 1e6:.1f} MB = {total / n / 1024:.2f} KB per "
                f"conversation, of which history {history / n / 1024:.2f} KB"
            )

        await with_replicas(1, memory)


if __name__ == "__main__":
    asyncio.run(main())
