"""Operations in the core: metrics, structured logs with secrets scrubbed, and draining
replies in flight on shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from pydantic import SecretStr

from core import metrics
from core.engine import RESTARTING, Engine
from core.logs import configure_logging
from core.types import Author, ConversationKey, Incoming
from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.support import API_KEY, RecordingSink

KEY = ConversationKey("console", "ops", "C", "T")


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def test_metrics_count_replies_model_calls_tokens_and_tools(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    from tests.fakes.cometapi import ToolCall

    before_calls = sample(
        "teambot_model_calls_total",
        route="dialogue",
        target="openai:gpt-5.3-chat-latest",
        outcome="ok",
    )
    before_replies = sample("teambot_replies_total", platform="console", outcome="answered")
    before_tools = sample("teambot_tool_calls_total", tool="current_time", outcome="ok")
    cometapi.script(
        "gpt-5.3-chat-latest", Reply(tool_calls=[ToolCall("current_time", {"timezone": "UTC"})])
    )
    sink = RecordingSink()
    await engine.reply(Incoming(KEY, "m1", Author("u", "Ana"), "time?"), sink)
    assert sink.final
    assert (
        sample(
            "teambot_model_calls_total",
            route="dialogue",
            target="openai:gpt-5.3-chat-latest",
            outcome="ok",
        )
        == before_calls + 2
    )
    assert (
        sample("teambot_replies_total", platform="console", outcome="answered")
        == before_replies + 1
    )
    assert sample("teambot_tool_calls_total", tool="current_time", outcome="ok") == before_tools + 1
    assert (
        sample(
            "teambot_tokens_total", route="dialogue", model="gpt-5.3-chat-latest", direction="input"
        )
        > 0
    )
    text = metrics.render().decode()
    assert "teambot_first_token_seconds_bucket" in text
    assert "teambot_queue_depth" in text


async def test_drain_finishes_quick_replies_and_tells_slow_ones_we_restart(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script("gpt-5.3-chat-latest", Reply("quick", chunk_delay=0.01))
    cometapi.script("gpt-5.3-chat-latest", Reply("very slow answer", chunks=5, chunk_delay=2))
    quick, slow = RecordingSink(), RecordingSink()
    other = ConversationKey("console", "ops", "C", "other")
    assert engine.spawn(engine.reply(Incoming(KEY, "q1", Author("u", "Ana"), "hi"), quick))
    await asyncio.sleep(0.05)
    assert engine.spawn(engine.reply(Incoming(other, "s1", Author("u", "Ana"), "hi"), slow))
    await asyncio.sleep(0.3)
    await engine.drain(grace=0.5)
    assert quick.final == "quick"
    assert slow.error == RESTARTING
    assert not engine.accepting
    late = RecordingSink()
    assert not engine.spawn(engine.reply(Incoming(KEY, "late", Author("u", "Ana"), "hi"), late))
    assert late.calls == []
    # the cancelled reply released its turn and its event: nothing is left locked
    redis, keys = engine.store.redis, engine.store.keys
    assert await redis.zcard(keys.of("q", other)) == 0
    assert await redis.exists(keys.of("q", other, "cur")) == 0
    assert await redis.get(engine.line.claim_key(other, "s1")) == "done"


def test_json_logs_carry_context_and_never_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    from core.logs import bind, log_context

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", "json", secrets=[SecretStr(API_KEY), None])
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        token = bind(conversation="slack:T:C:1.2", event_id="Ev9")
        logging.getLogger("teambot.test").warning("calling with key %s", API_KEY)
        try:
            raise RuntimeError(f"bad key {API_KEY}")
        except RuntimeError:
            logging.getLogger("teambot.test").exception("failed")
    finally:
        log_context.reset(token)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["conversation"] == "slack:T:C:1.2"
    assert lines[0]["event_id"] == "Ev9"
    assert lines[0]["level"] == "warning"
    assert API_KEY not in stream.getvalue()
    assert "**********" in lines[0]["msg"]
    assert "RuntimeError" in lines[1]["exc"]
