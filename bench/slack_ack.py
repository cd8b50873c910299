"""Slack adapter figures: how fast events are acknowledged, and how soon an answer starts.

1. Event → first streamed text, one mention at a time, with a fake model that answers
   instantly: the time from POSTing a signed `app_mention` to the bot's `chat.startStream`
   (the first text a user sees) coming back from Slack. With an instant model this is the
   adapter's and engine's whole overhead (Redis, names, status, one model round trip on
   loopback, Slack calls).
2. Ack latency at a steady rate (default 200 events/s, open loop: requests leave on a fixed
   schedule whatever the answers do), for two kinds of traffic: channel messages the bot
   does not answer (the pure ack path: signature check, Bolt, filter), and mentions it
   answers (acks measured while the same process streams all those answers).

The bot is the real `teambot slack --http` (`run_slack`) on loopback; the fake Slack Web API
and the fake CometAPI each run in their own process, and the load comes from a thread of
its own, so only the bot's work shares the measured event loop. Needs Redis at $REDIS_URL
(default 127.0.0.1:6379; a `redis-server` on PATH is started when none answers).

    .venv/bin/python bench/slack_ack.py [--rate 200] [--seconds 5] [--first-text 100]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid
from typing import Any

import aiohttp
from _support import (
    API_KEY,
    SLACK_TEAM,
    SLACK_TOKEN,
    SlackRequests,
    clean_prefix,
    fake_cometapi_process,
    fake_slack_process,
    percentile,
    redis_server,
)

from bots.slack.app import run_slack
from bots.slack.bot import SlackBot
from core.settings import load_settings

TOKEN, TEAM = SLACK_TOKEN, SLACK_TEAM


def fire(url: str, requests: list[tuple[bytes, dict[str, str]]], rate: float) -> list[float]:
    """Send `requests` at `rate` per second from a thread of its own (open loop); returns
    each ack's latency in seconds, counted from its scheduled send time."""
    out: list[float] = []

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            loop = asyncio.get_running_loop()
            start = loop.time() + 0.05

            async def one(index: int, body: bytes, headers: dict[str, str]) -> None:
                scheduled = start + index / rate
                await asyncio.sleep(max(0.0, scheduled - loop.time()))
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")
                out.append(loop.time() - scheduled)

            await asyncio.gather(*(one(i, b, h) for i, (b, h) in enumerate(requests)))

    thread = threading.Thread(target=lambda: asyncio.run(run()))
    thread.start()
    thread.join()
    return out


def line(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {label:<34} p50 {percentile(ms, 50):7.2f} ms   p99 {percentile(ms, 99):7.2f} ms"
        f"   max {max(ms):7.2f} ms   n={len(ms)}"
    )


async def bench(args: argparse.Namespace) -> None:
    events = int(args.rate * args.seconds)
    with (
        redis_server() as redis,
        fake_cometapi_process() as comet_url,
        fake_slack_process(args.first_text + events) as (api_url, secret, stamps, _stats),
    ):
        prefix = f"teambot-bench-{uuid.uuid4().hex[:8]}"
        settings = load_settings(
            _env_file=None,
            cometapi_api_key=API_KEY,
            cometapi_base_url=comet_url,
            redis_url=redis,
            redis_key_prefix=prefix,
            slack_bot_token=TOKEN,
            slack_signing_secret=secret,
            slack_api_url=api_url,
        )
        first_text: dict[str, float] = {}
        arrived: dict[str, asyncio.Event] = {}
        ready: asyncio.Future[tuple[SlackBot, int | None]] = (
            asyncio.get_running_loop().create_future()
        )
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_slack(
                settings,
                http=True,
                host="127.0.0.1",
                port=0,
                stop=stop,
                started=lambda bot, port: ready.set_result((bot, port)),
            )
        )
        async with clean_prefix(redis, prefix):
            bot, port = await asyncio.wait_for(asyncio.shield(ready), 30)
            url = f"http://127.0.0.1:{port}/slack/events"

            def timed(method: Any) -> Any:
                async def call(**kwargs: Any) -> Any:
                    response = await method(**kwargs)
                    thread = str(kwargs.get("thread_ts"))
                    first_text.setdefault(thread, time.perf_counter())
                    if thread in arrived:
                        arrived[thread].set()
                    return response

                return call

            # the first text shows as a stream's start, or as a message when it came whole
            bot.client.chat_startStream = timed(bot.client.chat_startStream)  # type: ignore[method-assign]
            bot.client.chat_postMessage = timed(bot.client.chat_postMessage)  # type: ignore[method-assign]
            requests = SlackRequests(secret)

            # 1. event -> first streamed text, one at a time
            acks: list[float] = []
            to_text: list[float] = []
            async with aiohttp.ClientSession() as http:
                for i, ts in enumerate(stamps[: args.first_text]):
                    body, headers = requests.mention(ts, i)
                    arrived[ts] = asyncio.Event()
                    sent = time.perf_counter()
                    async with http.post(url, data=body, headers=headers) as response:
                        await response.read()
                        acks.append(time.perf_counter() - sent)
                    await asyncio.wait_for(arrived[ts].wait(), 10)
                    to_text.append(first_text[ts] - sent)
                    await bot.engine.idle()
            print(f"Event -> first streamed text, instant model, {args.first_text} mentions:")
            print(line("ack (HTTP 200 back)", acks))
            print(line("event -> first text in the thread", to_text))

            # 2. ack latency at a steady rate
            loop = asyncio.get_running_loop()
            chatter = [requests.chatter(i) for i in range(events)]
            latencies = await loop.run_in_executor(None, fire, url, chatter, args.rate)
            await bot.engine.idle()
            print(f"\nAck latency at {args.rate:g} events/s for {args.seconds:g} s:")
            print(line("channel chatter (not answered)", latencies))

            mentions = [requests.mention(ts, i) for i, ts in enumerate(stamps[args.first_text :])]
            began = time.perf_counter()
            latencies = await loop.run_in_executor(None, fire, url, mentions, args.rate)
            await bot.engine.idle()
            drained = time.perf_counter() - began
            answered = len(first_text) - args.first_text
            print(line("mentions (each answered)", latencies))
            print(
                f"  {answered} of {len(mentions)} mentions answered (streamed) "
                f"{drained:.1f} s after the first was sent"
            )
            stop.set()
            await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load run")
    parser.add_argument("--first-text", type=int, default=100, help="sequential mentions")
    args = parser.parse_args()
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
