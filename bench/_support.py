"""Shared helpers for the benchmark scripts: a fake CometAPI in its own process (so its
work does not share the event loop being measured), Redis, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def child_process(target: Callable[..., None], *args: Any) -> Iterator[Any]:
    """Run `target(queue, *args)` in a spawned child; yield what it puts on the queue
    first (its address), stop it afterwards."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(queue, *args), daemon=True)
    process.start()
    try:
        yield queue.get(timeout=120)
    finally:
        process.terminate()
        process.join(5)


def _serve_cometapi(queue: Any, responder: Any) -> None:  # pragma: no cover - child
    from tests.fakes.cometapi import FakeCometAPI

    async def main() -> None:
        async with FakeCometAPI(api_key=API_KEY) as fake:
            if responder is not None:
                fake.set_responder(responder)
            queue.put(fake.base_url)
            await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def fake_cometapi_process(responder: Any = None) -> Iterator[str]:
    """The fake CometAPI in a child process (instant unless `responder`, a module-level
    function, says otherwise); yields its base URL."""
    with child_process(_serve_cometapi, responder) as url:
        yield url


SLACK_TOKEN = "xoxb-bench-token-0001"
SLACK_TEAM = "T0000000001"
ALICE = "U0ALICE0001"
GENERAL = "C0GENERAL01"


def _serve_slack(queue: Any, mentions: int) -> None:  # pragma: no cover - child process
    """The fake Slack, seeded with `mentions` messages that mention the bot, plus
    `GET /stats` on a second port: when each thread's answer was complete (the stream's
    stop, or a posted message), by thread."""
    from aiohttp import web

    from tests.fakes.slack_api import FakeSlack

    async def main() -> None:
        async with FakeSlack(bot_token=SLACK_TOKEN, team_id=SLACK_TEAM) as slack:
            slack.add_user(ALICE, "alice", display_name="Alice")
            slack.add_channel(GENERAL, "general", members=[ALICE])
            stamps = [
                slack.add_message(GENERAL, f"<@{slack.bot_user_id}> question {i}", user=ALICE)
                for i in range(mentions)
            ]
            done: dict[str, float] = {}
            streams: dict[str, str] = {}
            seen = 0

            async def stats(_request: web.Request) -> web.Response:
                nonlocal seen
                calls = slack.calls
                for call in calls[seen:]:
                    if not call.ok:
                        continue
                    if call.method == "chat.startStream":
                        ts = str((call.response or {}).get("ts") or "")
                        streams[ts] = str(call.args.get("thread_ts") or "")
                    elif call.method == "chat.stopStream":
                        root = streams.get(str(call.args.get("ts") or ""))
                        if root:
                            done.setdefault(root, call.time)
                    elif call.method == "chat.postMessage" and call.args.get("thread_ts"):
                        done.setdefault(str(call.args["thread_ts"]), call.time)
                seen = len(calls)
                return web.json_response(done)

            async def answers(request: web.Request) -> web.Response:
                """The bot's finished messages in each thread asked about, in order."""
                roots = await request.json()
                return web.json_response(
                    {
                        root: [
                            m.text
                            for m in slack.thread(GENERAL, root)
                            if m.user == slack.bot_user_id and not m.streaming
                        ]
                        for root in roots
                    }
                )

            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_get("/stats", stats)
            app.router.add_post("/answers", answers)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            queue.put((slack.api_url, slack.signing_secret, stamps, f"http://127.0.0.1:{port}"))
            await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def fake_slack_process(mentions: int) -> Iterator[tuple[str, str, list[str], str]]:
    """The fake Slack in a child process: (Web API URL, signing secret, the seeded
    mentions' timestamps, the stats URL)."""
    with child_process(_serve_slack, mentions) as found:
        yield found


class SlackRequests:
    """Signed deliveries as Slack sends them, for the seeded messages."""

    def __init__(self, signing_secret: str) -> None:
        from tests.fakes.slack_api import SlackPayloads, SlackSigner

        self.payloads = SlackPayloads(team_id=SLACK_TEAM)
        self.signer = SlackSigner(signing_secret)

    def mention(self, ts: str, i: int) -> tuple[bytes, dict[str, str]]:
        """The `app_mention` of seeded message `ts` (text "question i")."""
        text = f"<@{self.payloads.bot_user_id}> question {i}"
        request = self.signer.json_request(self.payloads.app_mention(GENERAL, ALICE, text, ts=ts))
        return request.body, request.headers

    def follow_up(self, root: str, text: str) -> tuple[bytes, dict[str, str]]:
        """A message in the thread under `root`, without a mention."""
        envelope = self.payloads.message(GENERAL, ALICE, text, thread_ts=root)
        request = self.signer.json_request(envelope)
        return request.body, request.headers

    def chatter(self, i: int) -> tuple[bytes, dict[str, str]]:
        """A channel message the bot does not answer."""
        envelope = self.payloads.message(GENERAL, ALICE, f"lunch plans, message {i}")
        request = self.signer.json_request(envelope)
        return request.body, request.headers


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """$REDIS_URL (default 127.0.0.1:6379) if it answers, else a throwaway redis-server
    on a free port, stopped afterwards."""
    import redis

    url = redis_url()
    with contextlib.suppress(redis.RedisError):
        if redis.Redis.from_url(url, socket_connect_timeout=1).ping():
            yield url
            return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(f"No Redis at {url} and no redis-server on PATH.")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="teambot-bench-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(url).ping():
                    break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


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
