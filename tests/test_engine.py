"""The engine end to end: real Redis, the fake CometAPI over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from core.engine import Engine, Outcome
from core.settings import Settings
from core.types import Attachment, Author, ConversationKey, Incoming
from tests.fakes.cometapi import (
    BadRequest,
    ConnectionReset,
    ContextTooLong,
    FakeCometAPI,
    HtmlBody,
    QuotaExhausted,
    RateLimited,
    Redirect,
    Reply,
    ServerError,
    StalledBody,
    StreamCut,
    StreamError,
    ToolCall,
    Unauthorized,
)
from tests.support import RecordingSink

GPT = "gpt-5.3-chat-latest"
FLASH = "gemini-3.1-flash-lite"
KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")
ANA = Author("U1", "Ana")
BO = Author("U2", "Bo")

_counter = 0


def _md(summary: object) -> str | None:
    """A summary's Markdown (None when there was none)."""
    return None if summary is None else summary.markdown()  # type: ignore[attr-defined]


def message(
    text: str, author: Author = ANA, key: ConversationKey = KEY, **extra: object
) -> Incoming:
    global _counter
    _counter += 1
    return Incoming(
        key=key, event_id=f"Ev{_counter}-{time.monotonic_ns()}", author=author, text=text, **extra
    )  # type: ignore[arg-type]


async def ask(
    engine: Engine, text: str, author: Author = ANA, key: ConversationKey = KEY
) -> RecordingSink:
    sink = RecordingSink()
    await engine.reply(message(text, author, key), sink)
    return sink


async def test_two_turn_conversation_remembers_turn_one(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    first = await ask(engine, "My project's code name is BLUEFIN.")
    assert first.final == "Echo: [Ana] My project's code name is BLUEFIN."
    assert len(first.appends) >= 2  # streamed in pieces, not in one block
    second = await ask(engine, "What is the code name?", BO)
    assert second.final == "Echo: [Bo] What is the code name?"

    request = cometapi.requests_for(GPT)[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test-cometapi-key-123456"
    roles = [(m["role"], m["content"]) for m in request.messages]
    assert roles[0][0] == "system"
    assert roles[1:] == [
        ("user", "[Ana] My project's code name is BLUEFIN."),
        ("assistant", "Echo: [Ana] My project's code name is BLUEFIN."),
        ("user", "[Bo] What is the code name?"),
    ]
    body = request.json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "max_completion_tokens" in body
    for rejected in ("reasoning_effort", "temperature", "top_p", "max_tokens"):
        assert rejected not in body
    assert cometapi.rejected == []


async def test_summary_goes_to_gemini_flash_lite_with_thinking_level(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    from tests.support import team_model

    cometapi.set_responder(team_model)
    sink = RecordingSink()
    messages = [
        _chat("Ana", "We decided to ship on Friday."),
        _chat("Bo", "I will write the release notes."),
        _chat("Cy", "Who tells the customer?"),
    ]
    summary = await engine.summarize(KEY, messages, sink)
    assert summary is not None and sink.final == summary.markdown()
    markdown = summary.markdown()
    assert "**TL;DR:**" in markdown
    assert "Ana: We decided to ship on Friday." in markdown
    assert "**Bo**: I will write the release notes." in markdown
    assert "Cy asked: Who tells the customer?" in markdown

    (request,) = cometapi.requests
    assert request.path == f"/v1beta/models/{FLASH}:streamGenerateContent"
    assert request.query.get("alt") == "sse"
    assert request.headers["x-goog-api-key"] == "sk-test-cometapi-key-123456"
    assert request.thinking_level == "low"
    assert request.generation_config["responseMimeType"] == "application/json"
    assert "[Bo] " not in request.last_user_text  # transcript lines carry names, not prefixes
    assert "Bo: I will write the release notes." in request.last_user_text
    assert cometapi.rejected == []


def _chat(name: str, text: str, ident: str | None = None, ts: float | None = None) -> object:
    from core.types import ChatMessage

    global _counter
    _counter += 1
    return ChatMessage.user(
        text, name, id=ident or f"m{_counter}", ts=ts or 1_700_000_000 + _counter
    )


async def test_tool_call_in_three_fragments_runs_and_the_answer_streams(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script(
        GPT,
        Reply(
            "Let me check.",
            tool_calls=[ToolCall("current_time", {"timezone": "Asia/Tokyo"})],
            arg_fragments=3,
        ),
    )
    sink = await ask(engine, "What time is it in Tokyo?")
    first, second = cometapi.requests_for(GPT)
    assert first.json["tools"][0]["type"] == "function"
    assert {t["function"]["name"] for t in first.json["tools"]} == {
        "current_time",
        "summarize_conversation",
    }
    ((_call_id, content),) = second.tool_results
    result = json.loads(content)
    assert result["timezone"] == "Asia/Tokyo" and result["utc_offset"] == "+0900"
    assert sink.final is not None
    assert sink.final.startswith("Let me check.\n\nTool result: ")
    assert "Asia/Tokyo" in sink.final
    assert "Using current_time…" in sink.statuses
    assert sink.shown == sink.final
    assert cometapi.rejected == []


async def test_two_parallel_tool_calls(engine: Engine, cometapi: FakeCometAPI) -> None:
    cometapi.script(
        GPT,
        Reply(
            tool_calls=[
                ToolCall("current_time", {"timezone": "Europe/Paris"}),
                ToolCall("current_time", {"timezone": "America/New_York"}),
            ]
        ),
    )
    sink = await ask(engine, "Time in Paris and New York?")
    second = cometapi.requests_for(GPT)[1]
    zones = [json.loads(content)["timezone"] for _, content in second.tool_results]
    assert zones == ["Europe/Paris", "America/New_York"]
    assistant = [m for m in second.messages if m["role"] == "assistant"][-1]
    assert len(assistant["tool_calls"]) == 2
    assert sink.final is not None and "America/New_York" in sink.final


async def test_bad_tool_calls_are_told_to_the_model_and_the_user_still_gets_an_answer(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script(
        GPT,
        Reply(
            tool_calls=[ToolCall("launch_rockets", {}), ToolCall("current_time", '{"timezone": ')]
        ),
    )
    sink = await ask(engine, "Do something odd")
    results = [content for _, content in cometapi.requests_for(GPT)[1].tool_results]
    assert "no tool named 'launch_rockets'" in results[0]
    assert "not valid JSON" in results[1]
    assert sink.final is not None and sink.error is None


async def test_history_with_tool_calls_is_replayed_validly(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script(GPT, Reply(tool_calls=[ToolCall("current_time", {"timezone": "UTC"})]))
    await ask(engine, "time?")
    await ask(engine, "thanks")
    last = cometapi.requests_for(GPT)[-1]
    roles = [m["role"] for m in last.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert cometapi.rejected == []


@pytest.mark.parametrize(
    "fault",
    [
        RateLimited(retry_after=0.05),
        ServerError(503),
        ServerError(502),
        StreamCut(after=2),
        StreamError(after=1),
        HtmlBody(200),
        ConnectionReset(),
    ],
    ids=["429", "503", "502", "cut", "error-in-stream", "html", "reset"],
)
async def test_retryable_errors_are_retried_on_the_same_model(
    engine: Engine, cometapi: FakeCometAPI, fault: object
) -> None:
    cometapi.script(GPT, fault)  # type: ignore[arg-type]
    sink = await ask(engine, "hello")
    assert sink.final == "Echo: [Ana] hello"
    assert [r.model for r in cometapi.requests] == [GPT, GPT]


async def test_text_streamed_before_a_cut_is_discarded_not_duplicated(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script(GPT, StreamCut(after=2, reply=Reply("partial answer here", chunks=4)))
    sink = await ask(engine, "hello")
    assert ("reset", "") in sink.calls
    assert sink.shown == sink.final == "Echo: [Ana] hello"


async def test_retry_after_ms_is_honoured(engine: Engine, cometapi: FakeCometAPI) -> None:
    cometapi.script(GPT, RateLimited(retry_after=0.4))
    started = time.monotonic()
    sink = await ask(engine, "hello")
    assert sink.final == "Echo: [Ana] hello"
    first, second = cometapi.requests
    assert second.received_at - first.received_at >= 0.38
    assert time.monotonic() - started < 3


async def test_gemini_retry_info_is_honoured(engine: Engine, cometapi: FakeCometAPI) -> None:
    from tests.support import team_model

    cometapi.set_responder(team_model)
    cometapi.script(
        FLASH, RateLimited(retry_after=0.3, retry_after_header=False, retry_after_ms_header=False)
    )
    summary = await engine.summarize(KEY, [_chat("Ana", "We decided: tea.")])
    assert summary is not None and "We decided: tea." in summary.markdown()
    first, second = cometapi.requests_for(FLASH)
    assert second.received_at - first.received_at >= 0.28


@pytest.mark.parametrize(
    "fault",
    [QuotaExhausted(), ContextTooLong(), Redirect()],
    ids=["quota", "context", "redirect"],
)
async def test_fallback_errors_go_to_the_other_model(
    engine: Engine, cometapi: FakeCometAPI, fault: object
) -> None:
    cometapi.script(GPT, fault)  # type: ignore[arg-type]
    sink = await ask(engine, "hello")
    assert sink.final == "Echo: [Ana] hello"
    assert [r.model for r in cometapi.requests] == [GPT, FLASH]
    gemini = cometapi.requests[1]
    assert gemini.thinking_level == "minimal"
    assert gemini.contents[-1] == {"role": "user", "parts": [{"text": "[Ana] hello"}]}
    assert cometapi.rejected == []


async def test_repeated_failure_falls_back_then_the_dead_model_cools_down(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script(GPT, ServerError(500), times=3)
    sink = await ask(engine, "one")
    assert sink.final == "Echo: [Ana] one"
    assert [r.model for r in cometapi.requests] == [GPT, GPT, GPT, FLASH]
    # Three failed requests open the breaker (threshold 3): two more failures...
    cometapi.script(GPT, ServerError(500), times=6)
    await ask(engine, "two")
    await ask(engine, "three")
    cometapi.clear_requests()
    # ...and now GPT is skipped without being called.
    sink = await ask(engine, "four")
    assert sink.final == "Echo: [Ana] four"
    assert [r.model for r in cometapi.requests] == [FLASH]


async def test_primary_is_used_again_after_the_cooldown(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    async with engine_with(breaker_failures=1, breaker_cooldown=0.5, retry_attempts=1) as engine:
        cometapi.script(GPT, ServerError(500))
        await ask(engine, "one")
        await ask(engine, "two")
        assert [r.model for r in cometapi.requests] == [GPT, FLASH, FLASH]
        await asyncio.sleep(0.6)
        cometapi.clear_requests()
        sink = await ask(engine, "three")
        assert sink.final == "Echo: [Ana] three"
        assert [r.model for r in cometapi.requests] == [GPT]


@pytest.mark.parametrize(
    ("fault", "words"),
    [(Unauthorized(), "refused my API key"), (BadRequest("bad image"), "rejected the request")],
    ids=["401", "400"],
)
async def test_fatal_errors_fail_at_once_with_a_plain_message(
    engine: Engine, cometapi: FakeCometAPI, fault: object, words: str
) -> None:
    cometapi.script(GPT, fault)  # type: ignore[arg-type]
    sink = await ask(engine, "hello")
    assert sink.final is None
    assert sink.error is not None and words in sink.error
    assert len(cometapi.requests) == 1
    # the message is not lost: the next turn still sees it
    await ask(engine, "again?")
    contents = [m["content"] for m in cometapi.requests[-1].messages if m["role"] == "user"]
    assert contents == ["[Ana] hello", "[Ana] again?"]


async def test_everything_down_ends_in_a_message_not_silence(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script(None, ServerError(503), times=20)
    sink = await ask(engine, "hello")
    assert sink.error == "The AI service isn't answering right now. Please try again in a minute."
    assert [r.model for r in cometapi.requests] == [GPT] * 3 + [FLASH] * 3


async def test_first_token_and_idle_timeouts(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    async with engine_with(first_token_timeout=0.3, idle_timeout=0.3) as engine:
        cometapi.script(GPT, Reply("slow", delay=2))
        cometapi.script(GPT, Reply("stalls midway", chunks=4, stall_after=2, stall=2))
        started = time.monotonic()
        sink = await ask(engine, "hello")
        assert sink.final == "Echo: [Ana] hello"
        assert len(cometapi.requests) == 3
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "stalled",
    [StalledBody(ServerError(502), stall=30), StalledBody(HtmlBody(200), stall=30, sent=20)],
    ids=["502-error-body", "non-sse-body"],
)
async def test_a_stalled_body_cannot_hold_the_turn_past_the_total_timeout(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
    stalled: StalledBody,
) -> None:
    async with engine_with(total_timeout=2.0, first_token_timeout=5.0, idle_timeout=5.0) as engine:
        cometapi.script(None, stalled, times=20)
        started = time.monotonic()
        async with asyncio.timeout(6):
            sink = await ask(engine, "hello")
        assert time.monotonic() - started < 3.0  # TOTAL_TIMEOUT and a small margin
        assert sink.error == (
            "The AI service isn't answering right now. Please try again in a minute."
        )
        assert engine.in_flight == 0
        cometapi.clear_script()
        async with asyncio.timeout(6):
            again = await ask(engine, "are you back?")  # the thread's turn was released
        assert again.final == "Echo: [Ana] are you back?"


async def test_chunks_that_keep_coming_outlast_the_idle_timeout(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    """The read timeout is per chunk: a long answer whose chunks arrive regularly streams
    to its end even when it takes far longer than one read may wait."""
    async with engine_with(first_token_timeout=0.4, idle_timeout=0.4) as engine:
        cometapi.script(GPT, Reply("one two three four five six seven", chunks=7, chunk_delay=0.2))
        sink = await ask(engine, "a long answer please")
        assert sink.final == "one two three four five six seven"
        assert len(cometapi.requests) == 1


async def test_long_history_is_folded_into_a_rolling_summary(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    from tests.support import team_model

    cometapi.set_responder(team_model)
    async with engine_with(history_token_budget=600) as engine:
        await ask(engine, "The launch code word is PELICAN and the budget is 4200 euros.")
        for i in range(12):
            await ask(engine, f"Filler message number {i}, " + "blah " * 30)
        last = cometapi.requests_for(GPT)[-1]
        # the early fact is no longer verbatim history but lives in the rolling summary
        users = [m["content"] for m in last.messages if m["role"] == "user"]
        assert not any("PELICAN" in text for text in users)
        assert "PELICAN" in last.messages[0]["content"] and "4200" in last.messages[0]["content"]
        history_tokens = sum(len(m["content"] or "") for m in last.messages[1:]) / 4
        assert history_tokens <= 600 + 100
        folds = [r for r in cometapi.requests_for(FLASH) if "running memory" in r.system_text]
        assert 1 <= len(folds) <= 4  # in batches, not one per turn
        memory = await engine.memory.rolling_summary(KEY)
        assert memory is not None and memory.folded > 0


async def test_fold_keeps_tool_call_and_result_together(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    from tests.support import team_model

    cometapi.set_responder(team_model)
    async with engine_with(history_token_budget=500) as engine:
        for i in range(8):
            cometapi.script(GPT, Reply(tool_calls=[ToolCall("current_time", {"timezone": "UTC"})]))
            await ask(engine, f"time please {i} " + "x " * 60)
            history = await engine.memory.history(KEY)
            assert history[0].role == "user"
            ids_called = {c.id for m in history for c in m.tool_calls}
            ids_answered = {m.tool_call_id for m in history if m.role == "tool"}
            assert ids_called == ids_answered
        assert cometapi.rejected == []


async def test_concurrent_messages_are_answered_in_order(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    for i in range(5):
        cometapi.script(GPT, Reply(f"answer {i}", chunk_delay=0.02))
    sinks = [RecordingSink() for _ in range(5)]
    tasks = []
    for i, sink in enumerate(sinks):
        tasks.append(asyncio.create_task(engine.reply(message(f"question {i}"), sink)))
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    assert [s.final for s in sinks] == [f"answer {i}" for i in range(5)]
    history = await engine.memory.history(KEY)
    assert [m.content for m in history] == [
        text for i in range(5) for text in (f"question {i}", f"answer {i}")
    ]
    # the model saw each earlier answer before the next question: never interleaved
    last = cometapi.requests_for(GPT)[-1]
    assert [m["content"] for m in last.messages[1:]][-2:] == ["answer 3", "[Ana] question 4"]
    assert any("Waiting" in s for s in sinks[1].statuses)


async def test_duplicate_event_is_answered_once(engine: Engine, cometapi: FakeCometAPI) -> None:
    incoming = message("hello")
    sinks = [RecordingSink() for _ in range(3)]
    outcomes = await asyncio.gather(*(engine.reply(incoming, s) for s in sinks))
    assert sorted(outcomes) == sorted([Outcome.ANSWERED, Outcome.DUPLICATE, Outcome.DUPLICATE])
    assert sum(1 for s in sinks if s.final) == 1
    assert len(cometapi.requests) == 1
    assert await engine.reply(incoming, RecordingSink()) is Outcome.DUPLICATE


async def test_forget_erases_the_conversation(engine: Engine, cometapi: FakeCometAPI) -> None:
    await ask(engine, "remember 42")
    other = ConversationKey("slack", "T1", "C1", "other-thread")
    await ask(engine, "elsewhere", key=other)
    await engine.forget(KEY)
    await ask(engine, "what did I say?")
    users = [m["content"] for m in cometapi.requests[-1].messages if m["role"] == "user"]
    assert users == ["[Ana] what did I say?"]
    assert len(await engine.memory.history(other)) == 2


async def test_budget_refusal_makes_no_model_call(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    async with engine_with(daily_budget_usd=0.003) as engine:
        # about 700 tokens in ($0.0012 at GPT prices), then the echoed answer costs more
        sink = await ask(engine, "word " * 400)
        assert sink.final is not None
        report = await engine.usage(KEY.tenant)
        assert report.total_cost > 0
        calls = len(cometapi.requests)
        refused = await ask(engine, "and another " * 50)
        assert refused.error is not None and "daily AI budget" in refused.error
        assert len(cometapi.requests) == calls
        other_workspace = ConversationKey("slack", "T2", "C1", "x")
        assert (await ask(engine, "hi", key=other_workspace)).final == "Echo: [Ana] hi"


async def test_usage_reports_dialogue_and_summary_separately(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    from tests.support import team_model

    cometapi.set_responder(team_model)
    await ask(engine, "hello there")
    await engine.summarize(KEY, [_chat("Ana", "We decided X.")])
    report = await engine.usage(KEY.tenant)
    d_in, d_out, _d_cost = report.by_route("dialogue")
    s_in, s_out, s_cost = report.by_route("summary")
    assert d_in > 0 and d_out > 0 and s_in > 0 and s_out > 0
    settings = engine.settings
    assert s_cost == pytest.approx(
        (s_in * settings.summary_price_input + s_out * settings.summary_price_output) / 1e6,
        abs=2e-6,
    )
    text = report.render()
    assert "Dialogue:" in text and "Summary:" in text


async def test_images_reach_the_model_and_audio_goes_to_flash_lite(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

    async def fetch_png() -> bytes:
        return png

    async def fetch_ogg() -> bytes:
        return b"OggS" + b"\x00" * 64

    image = Attachment("chart.png", "image/png", len(png), fetch_png)
    sink = RecordingSink()
    await engine.reply(message("what is this?", attachments=(image,)), sink)
    content = cometapi.requests[-1].messages[-1]["content"]
    assert content[0] == {"type": "text", "text": "[Ana] what is this?"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")

    audio = Attachment("memo.ogg", "audio/ogg", 68, fetch_ogg)
    sink = RecordingSink()
    await engine.reply(message("transcribe", attachments=(audio,)), sink)
    assert sink.final is not None
    request = cometapi.requests[-1]
    assert request.model == FLASH
    assert request.contents[-1]["parts"][1]["inlineData"]["mimeType"] == "audio/ogg"
    # memory keeps a note, not the bytes; the next plain turn goes back to GPT
    await ask(engine, "thanks")
    assert cometapi.requests[-1].model == GPT
    assert "[attached audio: memo.ogg]" in json.dumps(cometapi.requests[-1].messages)
    assert cometapi.rejected == []


async def test_unsupported_and_oversized_files_get_a_note(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    async def never() -> bytes:
        raise AssertionError("must not be downloaded")

    exe = Attachment("setup.exe", "application/x-msdownload", 10, never)
    big = Attachment("huge.png", "image/png", 200 * 1024 * 1024, never)
    sink = RecordingSink()
    await engine.reply(message("see files", attachments=(exe, big)), sink)
    assert sink.final is not None
    assert "I can't read setup.exe" in sink.final
    assert "I skipped huge.png" in sink.final


async def test_gemini_function_calls_echo_the_thought_signature(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    async with engine_with(dialogue_route=f"gemini:{FLASH}") as engine:
        cometapi.script(FLASH, Reply(tool_calls=[ToolCall("current_time", {"timezone": "UTC"})]))
        sink = await ask(engine, "time?")
        assert sink.final is not None and "Tool result" in sink.final
        _first, second = cometapi.requests_for(FLASH)
        issued = set(cometapi.issued_signatures)
        model_turn = second.contents[-2]
        assert model_turn["role"] == "model"
        assert model_turn["parts"][0]["thoughtSignature"] in issued
        assert "functionResponse" in second.contents[-1]["parts"][0]
        assert cometapi.rejected == []


async def test_history_written_by_gpt_is_valid_for_gemini(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script(GPT, Reply(tool_calls=[ToolCall("current_time", {"timezone": "UTC"})]))
    await ask(engine, "time?")
    cometapi.script(GPT, QuotaExhausted())
    sink = await ask(engine, "and now?")
    assert sink.final == "Echo: [Ana] and now?"
    assert cometapi.requests[-1].model == FLASH
    assert cometapi.rejected == []


async def test_in_process_store_engine(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    async with engine_with(redis_url=None) as engine:
        await ask(engine, "first")
        second = await ask(engine, "second")
        assert second.final == "Echo: [Ana] second"
        users = [m["content"] for m in cometapi.requests[-1].messages if m["role"] == "user"]
        assert users == ["[Ana] first", "[Ana] second"]


async def test_a_summary_is_incremental_and_invalidated_by_edits(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    from core.types import ChatMessage
    from tests.support import team_model

    cometapi.set_responder(team_model)
    scope = ConversationKey("slack", "T1", "C1", "thread-summary")
    thread = [
        ChatMessage.user(
            f"line {i}" + (" we decided to use Postgres" if i == 3 else ""),
            "Ana",
            id=f"{i}",
            ts=1000 + i,
        )
        for i in range(30)
    ]
    first = _md(await engine.summarize(scope, thread))
    assert first is not None and "Summary of 30 messages" in first
    first_size = len(cometapi.requests[-1].last_user_text)

    # nothing new: served from the cache, no model call
    calls = len(cometapi.requests)
    assert _md(await engine.summarize(scope, thread)) == first
    assert len(cometapi.requests) == calls

    # five new messages: only they are sent, with the previous summary
    more = [ChatMessage.user(f"new {i}? ", "Bo", id=f"n{i}", ts=2000 + i) for i in range(5)]
    second = _md(await engine.summarize(scope, thread + more))
    assert second is not None and "Summary of 35 messages" in second
    request = cometapi.requests[-1]
    assert "Current summary:" in request.last_user_text
    assert "line 7" not in request.last_user_text and "new 4?" in request.last_user_text
    assert len(request.last_user_text) < first_size
    assert "Postgres" in second  # still covers the old decision

    # an edit inside the covered range starts over
    edited = [
        m.model_copy(update={"content": "line 3 (edited)"}) if m.id == "3" else m
        for m in thread + more
    ]
    third = _md(await engine.summarize(scope, edited))
    assert third is not None and "Postgres" not in third
    assert "Current summary:" not in cometapi.requests[-1].last_user_text

    # a deleted message starts over too
    fourth = _md(await engine.summarize(scope, [m for m in edited if m.id != "10"]))
    assert fourth is not None and "Summary of 34 messages" in fourth
    assert "Current summary:" not in cometapi.requests[-1].last_user_text


async def test_long_transcripts_are_map_reduced_not_truncated(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]],
    cometapi: FakeCometAPI,
) -> None:
    from core.types import ChatMessage
    from tests.support import team_model

    cometapi.set_responder(team_model)
    async with engine_with(summary_chunk_tokens=1000) as engine:
        thread = [
            ChatMessage.user(f"message {i} " + "words " * 20, "Ana", id=str(i), ts=1000 + i)
            for i in range(200)
        ]
        thread[5] = thread[5].model_copy(update={"content": "We decided on blue."})
        thread[195] = thread[195].model_copy(update={"content": "We decided on tuesday."})
        markdown = _md(await engine.summarize(KEY, thread))
        assert markdown is not None
        assert "blue" in markdown and "tuesday" in markdown
        maps = [r for r in cometapi.requests if "Part " in r.last_user_text]
        merges = [r for r in cometapi.requests if "merge partial summaries" in r.system_text]
        assert len(maps) >= 5 and merges
        sent = "".join(r.last_user_text for r in maps)
        assert all(f"message {i} " in sent for i in range(200) if i not in (5, 195))


async def test_broken_summary_output_gives_a_plain_message(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    cometapi.script(FLASH, Reply("this is not json"), times=2)
    sink = RecordingSink()
    assert await engine.summarize(KEY, [_chat("Ana", "hi")], sink) is None
    assert sink.error == "The summary model returned something I couldn't read. Please try again."


async def test_summarize_conversation_tool_uses_the_summary_route(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    from tests.support import team_model

    cometapi.set_responder(team_model)
    await ask(engine, "We decided to hire Dana.")
    cometapi.script(GPT, Reply(tool_calls=[ToolCall("summarize_conversation", {})]))
    sink = await ask(engine, "summarize please")
    assert sink.final is not None and "hire Dana" in sink.final
    assert any(r.model == FLASH for r in cometapi.requests)


async def test_unknown_failures_still_answer(
    engine: Engine, cometapi: FakeCometAPI, settings: Settings
) -> None:
    async def explode() -> bytes:
        raise RuntimeError("boom")

    # a failing download is a note, not a crash
    sink = RecordingSink()
    await engine.reply(
        message("file", attachments=(Attachment("a.png", "image/png", 10, explode),)), sink
    )
    assert sink.final is not None and "couldn't download a.png" in sink.final
