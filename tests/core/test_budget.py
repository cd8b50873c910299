"""The daily budget as a hard cap, and usage accounting (every attempt, cached input),
against the fake CometAPI over HTTP and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from core.engine import Engine, Outcome
from core.types import Author, ConversationKey, Incoming
from tests.fakes.cometapi import FakeCometAPI, RecordedRequest, Reply, ServerError, StreamCut
from tests.fakes.cometapi import Usage as FakeUsage
from tests.support import RecordingSink

GPT = "gpt-5.3-chat-latest"
FLASH = "gemini-3.1-flash-lite"
ANA = Author("U1", "Ana")

EngineWith = Callable[..., AbstractAsyncContextManager[Engine]]


def _incoming(thread: str, text: str, n: int, workspace: str = "T1") -> Incoming:
    key = ConversationKey("slack", workspace, "C1", thread)
    return Incoming(key=key, event_id=f"Ev-budget-{thread}-{n}", author=ANA, text=text)


async def _ask(engine: Engine, thread: str, text: str, n: int = 0) -> RecordingSink:
    sink = RecordingSink()
    await engine.reply(_incoming(thread, text, n), sink)
    return sink


async def test_concurrent_replies_never_pass_the_budget_by_more_than_one_reservation(
    engine_with: EngineWith, cometapi: FakeCometAPI
) -> None:
    """20 replies at once, in 20 threads of one workspace, on a $0.01 budget: what is
    spent stays within the budget plus one reservation; the others get the budget note."""
    long_answer = "word " * 160  # about 200 output tokens: $0.0028 at the dialogue price

    def slow(request: RecordedRequest) -> Reply:
        return Reply(long_answer, delay=0.3)

    cometapi.set_responder(slow)
    async with engine_with(daily_budget_usd=0.01, dialogue_max_output_tokens=256) as engine:
        sinks = [RecordingSink() for _ in range(20)]
        outcomes = await asyncio.gather(
            *(
                engine.reply(_incoming(f"t{n}", "tell me a story", n), sink)
                for n, sink in enumerate(sinks)
            )
        )
        report = await engine.usage("slack:T1")
        target = engine.router.routes["dialogue"][0]
        # one reservation: the request's input (generously estimated) and 256 tokens out
        one_reservation = target.cost(_prompt(cometapi.requests[0]) + 200, 256)

    answered = [s for s in sinks if s.final is not None]
    refused = [s for s in sinks if s.error is not None]
    assert len(answered) + len(refused) == 20
    assert 1 <= len(answered) < 20
    assert report.total_cost <= 0.01 + one_reservation
    assert outcomes.count(Outcome.ANSWERED) == len(answered)
    for sink in refused:
        assert sink.error is not None
        assert sink.error.startswith("This workspace has used its daily AI budget")
    assert len(cometapi.requests) == len(answered)  # a refused reply calls no model


async def test_a_failed_attempt_is_billed_and_a_refused_one_released(
    engine_with: EngineWith, cometapi: FakeCometAPI
) -> None:
    """A stream cut after some text costs its input and output; an attempt that failed
    before the model wrote anything costs nothing and holds no budget afterwards."""
    async with engine_with(daily_budget_usd=5.0) as engine:
        cometapi.script(
            GPT,
            StreamCut(after=2, reply=Reply("partial answer here", chunks=4)),
            Reply("whole answer", usage=FakeUsage(prompt_tokens=1000, completion_tokens=10)),
        )
        cut = await _ask(engine, "cut", "hello")
        assert cut.final == "whole answer"
        assert len(cometapi.requests_for(GPT)) == 2
        report = await engine.usage("slack:T1")
        dialogue_in, dialogue_out, _cost = report.by_route("dialogue")
        # the second attempt's reported usage and the cut first attempt's (estimated) both
        assert dialogue_in > 1000 + _prompt(cometapi.requests[0]) // 2
        assert dialogue_out > 10

        before = (await engine.usage("slack:T1")).total_cost
        cometapi.script(GPT, *[ServerError(500)] * 3)
        cometapi.script(FLASH, *[ServerError(500)] * 3)
        failed = await _ask(engine, "fail", "hello again")
        assert failed.error is not None
        after = await engine.usage("slack:T1")
        assert after.total_cost == pytest.approx(before)
        held = await engine.store.redis.hlen(engine.budget._keys("slack:T1", after.day)[1])
        assert held == 0
        assert await engine.budget.spent("slack:T1") == pytest.approx(before, abs=1e-5)


def _prompt(request: RecordedRequest) -> int:
    return sum(len(str(m.get("content") or "")) for m in request.messages) // 4


async def test_cached_input_is_billed_at_the_cached_price(
    engine_with: EngineWith, cometapi: FakeCometAPI
) -> None:
    """OpenAI `prompt_tokens_details.cached_tokens` and Gemini
    `usageMetadata.cachedContentTokenCount` bill at the cached price (default: a tenth of
    the input price, or *_PRICE_CACHED_INPUT); `/usage` shows them."""
    reported = FakeUsage(prompt_tokens=1000, completion_tokens=100, cached_tokens=800)
    async with engine_with() as engine:
        cometapi.script(GPT, Reply("cached answer", usage=reported))
        await _ask(engine, "c1", "hello")
        report = await engine.usage("slack:T1")
        settings = engine.settings
        expected = (
            200 * settings.dialogue_price_input
            + 800 * settings.dialogue_price_input / 10
            + 100 * settings.dialogue_price_output
        ) / 1e6
        assert report.by_route("dialogue") == (1000, 100, pytest.approx(expected))
        assert report.cached_by_route("dialogue") == 800
        assert "(800 in cached)" in report.render()

    async with engine_with(
        redis_key_prefix=engine.settings.redis_key_prefix + "-gemini",
        dialogue_route=[f"gemini:{FLASH}"],
        summary_price_cached_input=0.05,
    ) as engine:
        cometapi.script(FLASH, Reply("cached answer", usage=reported, thoughts_tokens=0))
        await _ask(engine, "c2", "hello")
        report = await engine.usage("slack:T1")
        expected = (200 * 0.25 + 800 * 0.05 + 100 * 1.50) / 1e6
        assert report.by_route("dialogue") == (1000, 100, pytest.approx(expected))
        assert report.cached_by_route("dialogue") == 800


async def test_the_fake_prefix_cache_serves_the_stable_start_of_a_thread(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    """With the fake's prefix cache on, the second turn of a thread reads its first turn
    from the cache, and the ledger counts those tokens as cached."""
    cometapi.prefix_cache = True
    await _ask(engine, "p", "first question, with some words in it", 1)
    first = await engine.usage("slack:T1")
    assert first.cached_by_route("dialogue") == 0
    await _ask(engine, "p", "second question", 2)
    second = await engine.usage("slack:T1")
    cached = second.cached_by_route("dialogue")
    second_input = second.by_route("dialogue")[0] - first.by_route("dialogue")[0]
    # the first turn (tools, system prompt, first question) came from the cache, the rest
    # (its answer and the new question) did not
    assert first.by_route("dialogue")[0] <= cached < second_input
