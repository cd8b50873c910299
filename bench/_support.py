"""Shared helpers for the benchmark scripts: a fake CometAPI in its own process (so its
work does not share the event loop being measured), Redis, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

API_KEY = "sk-bench-key-0000000000"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"p50 {percentile(ms, 50):7.2f} ms   p99 {percentile(ms, 99):7.2f} ms   "
        f"mean {statistics.fmean(ms):7.2f} ms   n={len(ms)}"
    )


def _serve_fake(queue: multiprocessing.Queue[str]) -> None:  # pragma: no cover - child
    from tests.fakes.cometapi import FakeCometAPI

    async def main() -> None:
        async with FakeCometAPI(api_key=API_KEY) as fake:
            queue.put(fake.base_url)
            await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def fake_cometapi_process() -> Iterator[str]:
    """An instant fake CometAPI in a child process; yields its base URL."""
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[str] = context.Queue()
    process = context.Process(target=_serve_fake, args=(queue,), daemon=True)
    process.start()
    try:
        yield queue.get(timeout=60)
    finally:
        process.terminate()
        process.join(5)


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@contextlib.asynccontextmanager
async def clean_prefix(url: str, prefix: str) -> AsyncIterator[None]:
    from redis.asyncio import Redis

    try:
        yield
    finally:
        client = Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
        await client.aclose()
