"""Proof under faults, with real processes: `teambot slack --http` children, real Redis,
the fake Slack Web API and the fake CometAPI on loopback.

* two replicas behind one address, receiving the same events and retries: every mention
  answered exactly once, in order per thread;
* Redis restarted in the middle of a conversation;
* the model API failing for a while, then recovering;
* a burst of 1,000 events across 100 threads.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.cometapi import (
    ConnectionReset,
    FakeCometAPI,
    RateLimited,
    Reply,
    ServerError,
    StreamCut,
)
from tests.fakes.slack_api import FakeSlack
from tests.faults.procs import ROOT, BotProcess, RedisServer, bot_env, round_robin
from tests.support import API_KEY

TOKEN = "xoxb-fault-test-0001"
ALICE = "U0ALICE0001"
BOT = "U0000000BOT"
GENERAL = "C0GENERAL01"
GPT = "gpt-5.3-chat-latest"
THREADS, PER_THREAD = 100, 10
FLASH = "gemini-3.1-flash-lite"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=TOKEN, bot_user_id=BOT) as fake:
        fake.add_user(ALICE, "alice", display_name="Alice")
        fake.add_channel(GENERAL, "general", members=[ALICE])
        yield fake


def env_for(
    redis_url: str, prefix: str, cometapi: FakeCometAPI, slack: FakeSlack, **extra: Any
) -> dict[str, str]:
    return bot_env(
        cometapi_api_key=API_KEY,
        cometapi_base_url=cometapi.base_url,
        redis_url=redis_url,
        redis_key_prefix=prefix,
        slack_bot_token=TOKEN,
        slack_signing_secret=slack.signing_secret,
        slack_api_url=slack.api_url,
        retry_base_delay=0.02,
        **extra,
    )


async def deliver(
    http: aiohttp.ClientSession,
    url: str,
    slack: FakeSlack,
    envelope: dict[str, Any],
    retry: int = 0,
) -> int:
    request = slack.signer.json_request(envelope, retry_num=retry or None)
    async with http.post(url + "/slack/events", data=request.body, headers=request.headers) as r:
        return r.status


def bot_replies(slack: FakeSlack, ts: str) -> list[str]:
    return [m.text for m in slack.thread(GENERAL, ts) if m.user == BOT and not m.streaming]


def settled(replies: list[str], answer: str) -> bool:
    """One reply, ended as the whole answer or as the plain "not answering" message."""
    return len(replies) == 1 and (replies[0] == answer or "isn't answering right now" in replies[0])


async def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def question_of(answer: str) -> str:
    match = re.search(r"\] (q\d+-\d+)", answer)
    return match.group(1) if match else answer


async def test_two_replicas_answer_every_mention_once_in_order(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    cometapi.set_responder(
        lambda request: Reply(f"Echo: {request.last_user_text}", chunks=4, chunk_delay=0.02)
    )
    env = env_for(redis_url, key_prefix, cometapi, slack)
    replicas = [BotProcess(env, name="replica-a"), BotProcess(env, name="replica-b")]
    await asyncio.gather(*(r.start() for r in replicas))
    try:
        async with round_robin([r.url for r in replicas]) as url, aiohttp.ClientSession() as http:
            threads: dict[str, list[str]] = {}
            roots = []
            for t in range(8):
                first = slack.mention(GENERAL, ALICE, f"q{t}-0")
                roots.append(first["event"]["ts"])
                threads[first["event"]["ts"]] = [f"q{t}-0"]
                # the event and Slack's retry of it: round robin sends them to both replicas
                assert await deliver(http, url, slack, first) == 200
                assert await deliver(http, url, slack, first, retry=1) == 200
            for n in range(1, 4):
                for t, root in enumerate(roots):
                    follow = slack.mention(GENERAL, ALICE, f"q{t}-{n}", thread_ts=root)
                    threads[root].append(f"q{t}-{n}")
                    assert await deliver(http, url, slack, follow) == 200
                    assert await deliver(http, url, slack, follow, retry=1) == 200
                    assert await deliver(http, url, slack, follow, retry=2) == 200
                await asyncio.sleep(0.01)
            await wait_for(
                lambda: all(len(bot_replies(slack, r)) >= 4 for r in roots), 60, "all answers"
            )
            await asyncio.sleep(0.5)  # a duplicate would show up by now
        for root, questions in threads.items():
            answers = bot_replies(slack, root)
            assert [question_of(a) for a in answers] == questions
        assert cometapi.rejected == []
        served = [("replica-a" in r.name, r.log.count("slack:")) for r in replicas]
        assert all(r.alive for r in replicas), served
    finally:
        codes = await asyncio.gather(*(r.stop() for r in replicas))
        for replica in replicas:
            replica.cleanup()
    assert codes == [0, 0]


async def test_redis_restart_in_the_middle_of_a_conversation(
    key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    redis = RedisServer()
    await redis.start()
    bot = BotProcess(env_for(redis.url, key_prefix, cometapi, slack), name="bot")
    try:
        await bot.start()
        async with aiohttp.ClientSession() as http:
            cometapi.script(GPT, Reply("the answer that was in flight", chunks=8, chunk_delay=0.25))
            first = slack.mention(GENERAL, ALICE, "remember the code word OSPREY")
            root = first["event"]["ts"]
            assert await deliver(http, bot.url, slack, first) == 200
            await asyncio.sleep(0.6)  # streaming has started
            await redis.restart(down_for=0.7)
            await wait_for(lambda: len(bot_replies(slack, root)) == 1, 30, "the answer in flight")
            assert bot_replies(slack, root) == ["the answer that was in flight"]
            # the conversation goes on, with its memory
            second = slack.mention(GENERAL, ALICE, "what was the code word?", thread_ts=root)
            assert await deliver(http, bot.url, slack, second) == 200
            await wait_for(lambda: len(bot_replies(slack, root)) == 2, 30, "the next answer")
            last = cometapi.requests_for(GPT)[-1]
            assert "OSPREY" in json.dumps(last.messages)
            assert bot.alive
    finally:
        assert await bot.stop() == 0
        bot.cleanup()
        await redis.close()


async def test_model_api_down_for_a_while_then_back(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    env = env_for(
        redis_url,
        key_prefix,
        cometapi,
        slack,
        first_token_timeout=0.5,
        idle_timeout=0.5,
        breaker_failures=2,
        breaker_cooldown=2,
        retry_attempts=2,
    )
    bot = BotProcess(env, name="bot")
    await bot.start()
    try:
        async with aiohttp.ClientSession() as http:
            # GPT fails in every way for a while; Gemini is flaky too for its first calls
            cometapi.script(
                GPT,
                RateLimited(retry_after=0.05),
                ServerError(503),
                StreamCut(after=2),
                Reply("too late", delay=2),
                ConnectionReset(),
                ServerError(500),
                ServerError(502),
                ServerError(503),
            )
            cometapi.script(FLASH, ServerError(503), ServerError(503))
            roots = []
            for i in range(6):
                mention = slack.mention(GENERAL, ALICE, f"question {i}")
                roots.append(mention["event"]["ts"])
                assert await deliver(http, bot.url, slack, mention) == 200
                # its one reply ends as an answer (often from the fallback) or a plain
                # failure message, never silence; a retry rewrites it in place
                answer = f"Echo: [Alice] question {i}"
                await wait_for(
                    lambda r=roots[-1], a=answer: settled(bot_replies(slack, r), a), 30, "a reply"
                )
            # every user got exactly one reply, and it stayed
            shown = [bot_replies(slack, r) for r in roots]
            assert all(
                settled(replies, f"Echo: [Alice] question {i}") for i, replies in enumerate(shown)
            ), shown
            assert any(r.model == FLASH for r in cometapi.requests)
            # recovery: once the faults are over and the cooldown has passed, the primary
            # model answers again
            recovered = False
            for attempt in range(6):
                await asyncio.sleep(2.1)
                cometapi.clear_requests()
                mention = slack.mention(GENERAL, ALICE, f"are you back? {attempt}")
                assert await deliver(http, bot.url, slack, mention) == 200
                ts = mention["event"]["ts"]
                await wait_for(lambda t=ts: len(bot_replies(slack, t)) == 1, 30, "an answer")
                assert bot_replies(slack, ts) == [f"Echo: [Alice] are you back? {attempt}"]
                if [r.model for r in cometapi.requests] == [GPT]:
                    recovered = True
                    break
            assert recovered
            assert cometapi.pending(GPT) == 0
        assert bot.alive
    finally:
        assert await bot.stop() == 0
        bot.cleanup()


async def test_two_replicas_answer_back_to_back_follow_ups_in_order(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    """Ten follow-ups without a mention in one thread, each sent as soon as the previous
    one was acknowledged, alternately to two replicas: answered and posted in the order
    they were written, each model request holding every earlier follow-up."""
    cometapi.set_responder(
        lambda request: Reply(f"Echo: {request.last_user_text}", chunks=3, chunk_delay=0.03)
    )
    env = env_for(redis_url, key_prefix, cometapi, slack)
    replicas = [BotProcess(env, name="replica-a"), BotProcess(env, name="replica-b")]
    await asyncio.gather(*(r.start() for r in replicas))
    try:
        async with round_robin([r.url for r in replicas]) as url, aiohttp.ClientSession() as http:
            opening = slack.mention(GENERAL, ALICE, "q0-0")
            root = opening["event"]["ts"]
            assert await deliver(http, url, slack, opening) == 200
            for n in range(1, 11):
                follow = slack.user_message(GENERAL, ALICE, f"q0-{n}", thread_ts=root)
                assert await deliver(http, url, slack, follow) == 200
            await wait_for(lambda: len(bot_replies(slack, root)) >= 11, 60, "all answers")
            await asyncio.sleep(0.3)
        answers = bot_replies(slack, root)
        assert [question_of(a) for a in answers] == [f"q0-{n}" for n in range(11)]
        for n, request in enumerate(cometapi.requests_for(GPT)):
            users = [m["content"] for m in request.messages if m["role"] == "user"]
            assert [u.rsplit(" ", 1)[-1] for u in users] == [f"q0-{k}" for k in range(n + 1)]
    finally:
        codes = await asyncio.gather(*(r.stop() for r in replicas))
        for replica in replicas:
            replica.cleanup()
    assert codes == [0, 0]


async def test_a_burst_of_a_thousand_events_across_a_hundred_threads(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    """100 threads: a mention opens each, then 9 follow-ups without a mention; up to 50
    deliveries in flight, one in ten delivered again as Slack's retry, answers taking
    20-100 ms. None lost, none answered twice, every thread in order, and each thread's
    last request holds every earlier turn."""
    rng = random.Random(11)
    cometapi.set_responder(
        lambda request: Reply(
            f"Echo: {request.last_user_text}", chunks=2, delay=rng.uniform(0.02, 0.1)
        )
    )
    bot = BotProcess(env_for(redis_url, key_prefix, cometapi, slack), name="bot")
    await bot.start()
    try:
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            in_flight = asyncio.Semaphore(50)
            roots: list[str] = []

            async def send(event: dict[str, Any], retry: int = 0) -> None:
                async with in_flight:
                    assert await deliver(http, bot.url, slack, event, retry) == 200

            async def thread_burst(t: int) -> None:
                opening = slack.mention(GENERAL, ALICE, f"q{t}-0")
                roots.append(opening["event"]["ts"])
                root = opening["event"]["ts"]
                await send(opening)
                for n in range(1, PER_THREAD):
                    event = slack.user_message(GENERAL, ALICE, f"q{t}-{n}", thread_ts=root)
                    await send(event)
                    if rng.random() < 0.1:  # Slack retries it (the first ack was "lost")
                        asyncio.get_running_loop().create_task(send(event, 1))

            started = time.monotonic()
            await asyncio.gather(*(thread_burst(t) for t in range(THREADS)))
            acked = time.monotonic() - started

            def answered() -> int:
                return sum(len(bot_replies(slack, r)) for r in roots)

            await wait_for(lambda: answered() >= THREADS * PER_THREAD, 60, "all answers")
            await asyncio.sleep(0.5)  # a duplicate would show up by now
        assert acked < 30
        assert answered() == THREADS * PER_THREAD
        requests = cometapi.requests_for(GPT)
        assert len(requests) == THREADS * PER_THREAD
        for root in roots:
            answers = [question_of(a) for a in bot_replies(slack, root)]
            t = answers[0].split("-")[0]
            assert answers == [f"{t}-{n}" for n in range(PER_THREAD)]
            last = next(r for r in reversed(requests) if r.last_user_text.endswith(answers[-1]))
            users = [m["content"] for m in last.messages if m["role"] == "user"]
            assert [u.rsplit(" ", 1)[-1] for u in users] == answers
        assert bot.alive
    finally:
        assert await bot.stop() == 0
        bot.cleanup()


async def test_sigterm_finishes_quick_answers_and_tells_slow_ones(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    env = env_for(redis_url, key_prefix, cometapi, slack, shutdown_grace_seconds=1.5)
    first = BotProcess(env, name="old")
    await first.start()
    async with aiohttp.ClientSession() as http:
        cometapi.script(GPT, Reply("quick answer", chunks=2, chunk_delay=0.2))
        quick = slack.mention(GENERAL, ALICE, "quick one")
        assert await deliver(http, first.url, slack, quick) == 200
        slow = slack.mention(GENERAL, ALICE, "slow one")
        root = slow["event"]["ts"]
        await asyncio.sleep(0.05)
        cometapi.script(GPT, Reply("a very slow answer", chunks=10, chunk_delay=1.0))
        assert await deliver(http, first.url, slack, slow) == 200
        await asyncio.sleep(0.5)
        # the rolling deploy: SIGTERM while both answers are in flight
        started = time.monotonic()
        assert await first.stop() == 0
        assert time.monotonic() - started < 10
        first.cleanup()
        assert bot_replies(slack, quick["event"]["ts"]) == ["quick answer"]
        # what had streamed stays, finished; the last word is the note
        before = bot_replies(slack, root)
        assert "restarting" in before[-1]
        assert before[0].startswith("a ")
        # the replacement answers the same thread at once: nothing was left locked
        second = BotProcess(env, name="new")
        await second.start()
        try:
            again = slack.mention(GENERAL, ALICE, "again please", thread_ts=root)
            assert await deliver(http, second.url, slack, again) == 200
            await wait_for(
                lambda: len(bot_replies(slack, root)) == len(before) + 1, 15, "the next answer"
            )
            assert bot_replies(slack, root)[-1] == "Echo: [Alice] again please"
            # the log line is written just after the reply is posted
            await wait_for(lambda: '"reply answered"' in second.log, 5, "the reply's log line")
            log = [json.loads(line) for line in second.log.splitlines() if line.startswith("{")]
            replies = [entry for entry in log if entry.get("msg") == "reply answered"]
            assert replies
            assert replies[0]["conversation"].endswith(root)
            assert replies[0]["event_id"] == f"{GENERAL}:{again['event']['ts']}"
            assert "answer_ms" in replies[0]
        finally:
            assert await second.stop() == 0
            second.cleanup()


async def test_an_approval_clicked_after_a_restart_is_finished_by_the_other_replica(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    """The replica that asked for approval is stopped while the person thinks; the click
    reaches the other replica, which runs the tool and finishes the answer in the thread.
    Meanwhile a later message in the thread waits behind the paused turn."""
    from tests.fakes.cometapi import ToolCall
    from tests.test_slack_approvals import click

    cometapi.script(
        GPT,
        Reply("Filing it.", tool_calls=[ToolCall("create_ticket", {"title": "VPN"})]),
        Reply("Done: filed."),
    )
    env = env_for(
        redis_url,
        key_prefix,
        cometapi,
        slack,
        tool_modules="tests.approval_tools",
        shutdown_grace_seconds=0.5,
        pythonpath=str(ROOT),
    )
    first, second = BotProcess(env, name="asked"), BotProcess(env, name="finished")
    await asyncio.gather(first.start(), second.start())
    try:
        async with aiohttp.ClientSession() as http:
            mention = slack.mention(GENERAL, ALICE, "file a ticket")
            root = mention["event"]["ts"]
            assert await deliver(http, first.url, slack, mention) == 200

            def cards() -> list[Any]:
                return [m for m in slack.thread(GENERAL, root) if m.user == BOT and m.blocks]

            await wait_for(lambda: bool(cards()), 15, "the approval card")
            later = slack.user_message(GENERAL, ALICE, "and one more thing", thread_ts=root)
            assert await deliver(http, second.url, slack, later) == 200
            assert await first.stop() == 0  # stopped while the person thinks
            await asyncio.sleep(0.5)
            assert not any("one more thing" in r.last_user_text for r in cometapi.requests)
            harness = type("H", (), {"slack": slack, "p": slack.payloads})()
            form = slack.signer.form_request(
                slack.payloads.shortcut_form(click(harness, cards()[0], user=ALICE, approve=True))
            )
            async with http.post(
                second.url + "/slack/events", data=form.body, headers=form.headers
            ) as response:
                assert response.status == 200
            await wait_for(
                lambda: any("one more thing" in r.last_user_text for r in cometapi.requests),
                20,
                "the later message, after the paused turn",
            )
        texts = [m.text for m in slack.thread(GENERAL, root) if m.user == BOT]
        assert any("Approved by Alice" in t for t in texts)
        assert any(t.endswith("Done: filed.") for t in texts)
        results = [r.tool_results for r in cometapi.requests_for(GPT) if r.tool_results]
        assert "created ticket T-1: VPN" in results[0][0][1]
        after = cometapi.requests_for(GPT)[-1]
        assert "created ticket T-1" in json.dumps(after.json)  # the later one saw it
    finally:
        await first.stop()
        await second.stop()
        first.cleanup()
        second.cleanup()
