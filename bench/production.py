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
import json
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
    parser.add_argument("--verbose", action="store_true", help="show the replicas' warnings")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    per_run = [int(rate * args.seconds) for rate in rates]
    needed = 2 * sum(per_run) + (0 if args.skip_memory else args.conversations)
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

        async def with_replicas(count: int, work: Any) -> Any:
            prefix = f"teambot-bench-{uuid.uuid4().hex[:8]}"
            async with clean_prefix(url, prefix):
                replicas = [BotProcess(env(prefix), name=f"replica-{i}") for i in range(count)]
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
