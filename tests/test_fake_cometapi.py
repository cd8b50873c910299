"""Self-tests of the CometAPI fake (tests/fakes/cometapi.py), seen from a plain HTTP client."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.genai import types as gtypes
from httpx_sse import aconnect_sse

from tests.fakes.cometapi import (
    BadRequest,
    CloudflareTimeout,
    ConnectionReset,
    ContextTooLong,
    FakeCometAPI,
    Forbidden,
    HtmlBody,
    ModelSpec,
    QuotaExhausted,
    RateLimited,
    RecordedRequest,
    Redirect,
    Reply,
    RequestTimeout,
    ServerError,
    StalledBody,
    StreamCut,
    StreamError,
    ToolCall,
    Unauthorized,
    Usage,
    openai_schema_errors,
)

KEY = "test-key"
GPT = "gpt-5.3-chat-latest"
GEMINI = "gemini-3.1-flash-lite"
CHAT = "/v1/chat/completions"
GEN = f"/v1beta/models/{GEMINI}:generateContent"
STREAM = f"/v1beta/models/{GEMINI}:streamGenerateContent"
SSE = f"{STREAM}?alt=sse"
GKEY = {"x-goog-api-key": KEY}
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwAB"
    "BAEAfbLI3wAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCometAPI]:
    async with FakeCometAPI(api_key=KEY, validate_responses=True) as server:
        yield server


@pytest.fixture
async def client(fake: FakeCometAPI) -> AsyncIterator[httpx.AsyncClient]:
    # Plain HTTP to loopback: verify=False skips loading the CA bundle (~50 ms per client).
    async with httpx.AsyncClient(
        base_url=fake.base_url,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5.0,
        verify=False,
    ) as http:
        yield http


def chat(content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": GPT, "messages": [{"role": "user", "content": content}], **extra}


def gem(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def assert_openai_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert openai_schema_errors("ErrorResponse", body) == []
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


def assert_google_error(
    response: httpx.Response, status: int, google_status: str
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status
    assert error["status"] == google_status
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


async def openai_events(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    """Stream a chat completion: (every chunk, validated against the spec; saw [DONE])."""
    chunks: list[dict[str, Any]] = []
    done = False
    async with aconnect_sse(client, "POST", CHAT, json=body) as events:
        assert events.response.status_code == 200
        async for event in events.aiter_sse():
            if event.data == "[DONE]":
                done = True
                continue
            assert not done, "data after [DONE]"
            chunk = json.loads(event.data)
            if "error" not in chunk:
                assert openai_schema_errors("CreateChatCompletionStreamResponse", chunk) == []
            chunks.append(chunk)
    return chunks, done


async def gemini_events(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Stream Gemini SSE; every event is validated with google-genai's response type."""
    out: list[dict[str, Any]] = []
    async with aconnect_sse(client, "POST", SSE, json=body, headers=GKEY) as events:
        assert events.response.status_code == 200
        async for event in events.aiter_sse():
            obj = json.loads(event.data)
            if "error" not in obj:
                gtypes.GenerateContentResponse.model_validate(obj)
                gtypes.GenerateContentResponse.model_validate_json(event.data)
            out.append(obj)
    return out


async def drain_sse(
    into: list[str], client: httpx.AsyncClient, url: str, body: dict[str, Any], **kwargs: Any
) -> None:
    """Append each SSE data payload to ``into`` until the stream ends (or fails)."""
    async with aconnect_sse(client, "POST", url, json=body, **kwargs) as events:
        async for event in events.aiter_sse():
            into.append(event.data)


def reassemble_tool_calls(chunks: list[dict[str, Any]]) -> list[dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for delta in choice["delta"].get("tool_calls", []):
                call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
                if "id" in delta:
                    assert not call["id"], "id repeated in a later fragment"
                    call["id"] = delta["id"]
                    call["name"] = delta["function"]["name"]
                else:
                    assert "name" not in delta.get("function", {})
                call["arguments"] += delta["function"].get("arguments", "")
    return [calls[i] for i in sorted(calls)]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


def gemini_parts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for e in events for p in e["candidates"][0]["content"].get("parts", [])]


# --------------------------------------------------------------------------------------------
# Spec validator sanity (so "no errors" below means something)
# --------------------------------------------------------------------------------------------


def test_spec_validator_handles_nullable_and_rejects_bad_chunks() -> None:
    good = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": GPT,
        "choices": [{"index": 0, "delta": {"content": None}, "finish_reason": None}],
        "usage": None,
    }
    assert openai_schema_errors("CreateChatCompletionStreamResponse", good) == []
    bad = {**good, "choices": [{"index": 0, "delta": {}, "finish_reason": "done"}]}
    assert openai_schema_errors("CreateChatCompletionStreamResponse", bad)
    assert openai_schema_errors("CreateChatCompletionStreamResponse", {**good, "object": "x"})


# --------------------------------------------------------------------------------------------
# Lifecycle, auth, models
# --------------------------------------------------------------------------------------------


async def test_server_binds_loopback_and_stops() -> None:
    async with FakeCometAPI(api_key=KEY) as server:
        url = server.base_url
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(verify=False) as http:
            response = await http.get(
                f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}
            )
            assert response.status_code == 200
    async with httpx.AsyncClient(verify=False) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/v1/models")


async def test_openai_auth_failures(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    missing = await client.post(CHAT, json=chat(), headers={"Authorization": ""})
    error = assert_openai_error(missing, 401, None)
    assert "didn't provide an API key" in error["message"]
    wrong = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer nope-nope-nope"})
    assert_openai_error(wrong, 401, "invalid_api_key")
    models = await client.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert_openai_error(models, 401, "invalid_api_key")
    assert [r.rejection.status for r in fake.rejected if r.rejection] == [401, 401, 401]


async def test_gemini_auth_failures(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    missing = await client.post(GEN, json=gem())
    assert_google_error(missing, 403, "PERMISSION_DENIED")
    wrong = await client.post(GEN, json=gem(), headers={"x-goog-api-key": "bad"})
    error = assert_google_error(wrong, 401, "UNAUTHENTICATED")
    assert error["details"][0]["reason"] == "API_KEY_INVALID"
    wrong_query = await client.post(f"{GEN}?key=bad", json=gem())
    assert_google_error(wrong_query, 401, "UNAUTHENTICATED")
    ok_query = await client.post(f"{GEN}?key={KEY}", json=gem())
    assert ok_query.status_code == 200
    assert len(fake.rejected) == 3


async def test_models_list(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.add_model(ModelSpec("gpt-test-mini", "openai", context_window=1000, max_output_tokens=100))
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert openai_schema_errors("ListModelsResponse", body) == []
    assert {m["id"] for m in body["data"]} == {GPT, GEMINI, "gpt-test-mini"}


async def test_unknown_path_and_model(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    assert (await client.post("/chat/completions", json=chat())).status_code == 404
    assert_openai_error(await client.post(CHAT, json=chat(model="gpt-4o")), 404, "model_not_found")
    gone = await client.post("/v1beta/models/gemini-9:generateContent", json=gem(), headers=GKEY)
    assert_google_error(gone, 404, "NOT_FOUND")
    # Each protocol knows only its own models.
    assert_openai_error(await client.post(CHAT, json=chat(model=GEMINI)), 404, "model_not_found")
    assert len(fake.rejected) == 4


# --------------------------------------------------------------------------------------------
# OpenAI: replies
# --------------------------------------------------------------------------------------------


async def test_openai_streamed_text_validates(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    fake.script(GPT, Reply("The quick brown fox jumps", chunks=4))
    chunks, done = await openai_events(client, chat(stream=True))
    assert done
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content_chunks = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) == 4
    assert text_of(chunks) == "The quick brown fox jumps"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all("usage" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert fake.rejected == []
    [recorded] = fake.requests_for(GPT)
    assert recorded.stream
    assert recorded.protocol == "openai"
    assert recorded.outcome == "Reply"


async def test_openai_default_responder_echoes(client: httpx.AsyncClient) -> None:
    chunks, _ = await openai_events(client, chat("ping", stream=True))
    assert text_of(chunks) == "Echo: ping"
    parts = [{"type": "text", "text": "look"}, {"type": "text", "text": " here"}]
    response = await client.post(CHAT, json=chat(parts))
    assert response.json()["choices"][0]["message"]["content"] == "Echo: look here"


async def test_openai_tool_call_deltas_reassemble(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    weather = {"city": "Zürich", "units": ["C", "F"], "days": 3}
    raw = '{"query": "teambot", "limit": 5}'
    fake.script(
        GPT,
        Reply(
            tool_calls=[ToolCall("get_weather", weather), ToolCall("search", raw)], arg_fragments=4
        ),
    )
    chunks, done = await openai_events(client, chat(stream=True))
    assert done
    calls = reassemble_tool_calls(chunks)
    assert [c["name"] for c in calls] == ["get_weather", "search"]
    assert json.loads(calls[0]["arguments"]) == weather
    assert calls[1]["arguments"] == raw
    assert calls[0]["id"] != calls[1]["id"]
    assert all(c["id"].startswith("call_") for c in calls)
    fragments = [c for c in chunks if c["choices"][0]["delta"].get("tool_calls")]
    assert len(fragments) == 8  # 4 per call
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    # The bot answers the calls; the fake checks the ids line up.
    history = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
    ]
    missing = await client.post(CHAT, json={"model": GPT, "messages": history})
    error = assert_openai_error(missing, 400, None)
    assert calls[1]["id"] in error["message"]
    history.append({"role": "tool", "tool_call_id": calls[1]["id"], "content": "found"})
    answered = await client.post(CHAT, json={"model": GPT, "messages": history})
    assert answered.json()["choices"][0]["message"]["content"] == "Tool result: sunny; found"


async def test_openai_single_fragment_tool_call(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    fake.script(GPT, Reply("Let me check.", tool_calls=[ToolCall("f", {"a": 1})], arg_fragments=1))
    chunks, _ = await openai_events(client, chat(stream=True))
    assert text_of(chunks) == "Let me check."
    fragments = [c for c in chunks if c["choices"][0]["delta"].get("tool_calls")]
    assert len(fragments) == 1
    assert reassemble_tool_calls(chunks)[0]["arguments"] == '{"a":1}'


async def test_openai_include_usage(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, Reply("counted", usage=Usage(prompt_tokens=11, completion_tokens=7)))
    body = chat(stream=True, stream_options={"include_usage": True})
    chunks, done = await openai_events(client, body)
    assert done
    *others, last = chunks
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 11
    assert last["usage"]["completion_tokens"] == 7
    assert last["usage"]["total_tokens"] == 18
    assert all(c["usage"] is None for c in others)
    assert others[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openai_non_streamed_completion(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    fake.script(GPT, Reply(tool_calls=[ToolCall("lookup", {"id": 7})]))
    response = await client.post(CHAT, json=chat())
    assert response.status_code == 200
    body = response.json()
    assert openai_schema_errors("CreateChatCompletionResponse", body) == []
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"id": 7}
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_openai_length_finish_when_limit_hit(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat("x" * 40, max_completion_tokens=2))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "Echo: xx"  # 2 tokens = 8 characters


async def test_openai_image_accepted_audio_and_video_rejected(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    image = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    assert (await client.post(CHAT, json=chat(image))).status_code == 200
    audio = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]
    error = assert_openai_error(await client.post(CHAT, json=chat(audio)), 400, "invalid_value")
    assert error["param"] == "messages[0].content[0].type"
    video = [{"type": "image_url", "image_url": {"url": "data:video/mp4;base64,AAAA"}}]
    assert_openai_error(await client.post(CHAT, json=chat(video)), 400, "invalid_image_format")
    broken = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]
    assert_openai_error(await client.post(CHAT, json=chat(broken)), 400, "invalid_image_url")
    assert len(fake.rejected) == 3


# --------------------------------------------------------------------------------------------
# OpenAI: request validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("reasoning_effort", "low"),
        ("temperature", 0.2),
        ("top_p", 0.9),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("logprobs", True),
        ("top_logprobs", 2),
        ("logit_bias", {"50256": -100}),
        ("max_tokens", 100),
    ],
)
async def test_chat_latest_rejects_sampling_params(
    fake: FakeCometAPI, client: httpx.AsyncClient, param: str, value: Any
) -> None:
    response = await client.post(CHAT, json=chat(**{param: value}))
    error = assert_openai_error(response, 400, "unsupported_parameter")
    assert error["param"] == param
    assert f"'{param}'" in error["message"]
    if param == "max_tokens":
        assert "max_completion_tokens" in error["message"]
    [rejected] = fake.rejected
    assert rejected.rejection is not None
    assert rejected.rejection.code == "unsupported_parameter"


async def test_max_completion_tokens_limit(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    assert (await client.post(CHAT, json=chat(max_completion_tokens=16_384))).status_code == 200
    error = assert_openai_error(
        await client.post(CHAT, json=chat(max_completion_tokens=16_385)), 400, "invalid_value"
    )
    assert error["param"] == "max_completion_tokens"
    assert "16384" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (chat(5), "messages[0].content", "invalid_type"),
        ({"model": GPT}, "messages", "missing_required_parameter"),
        ({"model": GPT, "messages": []}, "messages", "empty_array"),
        (chat(stream="yes"), "stream", "invalid_type"),
        (
            chat([{"type": "image_url", "image_url": {}}]),
            "messages[0].content[0].image_url.url",
            "missing_required_parameter",
        ),
        (
            {"model": GPT, "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        (chat(n=0), "n", "integer_below_min_value"),
        (chat(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
        (
            chat(tools=[{"type": "function", "function": {"name": "bad name"}}]),
            "tools[0].function.name",
            "invalid_value",
        ),
        (chat(surprise=1), None, None),
    ],
)
async def test_invalid_openai_bodies_name_the_field(
    fake: FakeCometAPI,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    param: str | None,
    code: str | None,
) -> None:
    error = assert_openai_error(await client.post(CHAT, json=body), 400, code)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if param is None:
        assert "surprise" in error["message"]
    assert len(fake.rejected) == 1


async def test_unknown_message_field_and_bad_json(client: httpx.AsyncClient) -> None:
    body = {"model": GPT, "messages": [{"role": "user", "content": "x", "sender": "bob"}]}
    error = assert_openai_error(await client.post(CHAT, json=body), 400, None)
    assert "'sender' was unexpected" in error["message"]
    garbage = await client.post(
        CHAT, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert "could not parse the JSON body" in assert_openai_error(garbage, 400, None)["message"]


async def test_openai_context_window(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.add_model(
        ModelSpec("gpt-tiny-chat-latest", "openai", context_window=100, max_output_tokens=50)
    )
    fits = {"model": "gpt-tiny-chat-latest", "messages": [{"role": "user", "content": "a" * 400}]}
    assert (await client.post(CHAT, json=fits)).status_code == 200
    too_long = {
        "model": "gpt-tiny-chat-latest",
        "messages": [{"role": "user", "content": "a" * 401}],
    }
    error = assert_openai_error(
        await client.post(CHAT, json=too_long), 400, "context_length_exceeded"
    )
    assert "maximum context length is 100 tokens" in error["message"]
    # The derived restrictions follow the name: this model rejects temperature too.
    hot = {**fits, "temperature": 1}
    assert_openai_error(await client.post(CHAT, json=hot), 400, "unsupported_parameter")


async def test_openai_real_context_limit(client: httpx.AsyncClient) -> None:
    ok = await client.post(CHAT, json=chat("a" * 128_000 * 4))
    assert ok.status_code == 200
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    over = chat([{"type": "text", "text": "a" * 128_000 * 4}, image])
    assert_openai_error(await client.post(CHAT, json=over), 400, "context_length_exceeded")


# --------------------------------------------------------------------------------------------
# Gemini: replies and validation
# --------------------------------------------------------------------------------------------


async def test_gemini_sse_stream_validates(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GEMINI, Reply("Summaries are short.", chunks=3))
    async with client.stream("POST", SSE, json=gem(), headers=GKEY) as response:
        raw = (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
    assert raw.startswith("data: ")
    assert raw.endswith("\r\n\r\n")
    events = await gemini_events(client, gem())  # default responder
    assert "".join(p["text"] for p in gemini_parts(events)) == "Echo: hello"
    assert [e["candidates"][0].get("finishReason") for e in events] == [None, None, "STOP"]
    assert "thoughtSignature" in gemini_parts(events)[-1]
    usage = events[-1]["usageMetadata"]
    assert usage["thoughtsTokenCount"] == 1024  # default level: high
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert fake.rejected == []
    assert all(r.sse and r.stream for r in fake.requests)


async def test_gemini_non_stream_and_json_array(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    fake.script(GEMINI, Reply("one"), Reply("two two two", chunks=2))
    response = await client.post(GEN, json=gem(), headers=GKEY)
    assert response.status_code == 200
    parsed = gtypes.GenerateContentResponse.model_validate(response.json())
    assert parsed.text == "one"
    array = await client.post(STREAM, json=gem(), headers=GKEY)
    assert array.headers["content-type"].startswith("application/json")
    items = array.json()
    assert isinstance(items, list)
    assert len(items) == 2
    for item in items:
        gtypes.GenerateContentResponse.model_validate(item)
    assert "".join(p["text"] for p in gemini_parts(items)) == "two two two"


@pytest.mark.parametrize(
    ("level", "thoughts"), [("minimal", None), ("low", 64), ("MEDIUM", 256), ("high", 1024)]
)
async def test_gemini_thinking_levels(
    client: httpx.AsyncClient, level: str, thoughts: int | None
) -> None:
    body = gem(generationConfig={"thinkingConfig": {"thinkingLevel": level}})
    usage = (await client.post(GEN, json=body, headers=GKEY)).json()["usageMetadata"]
    assert usage.get("thoughtsTokenCount") == thoughts


async def test_gemini_reply_overrides_thoughts_and_summary(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    fake.script(GEMINI, Reply("done", thoughts_tokens=7, thought_summary="Thinking about it"))
    body = gem(generationConfig={"thinkingConfig": {"includeThoughts": True}})
    events = await gemini_events(client, body)
    parts = gemini_parts(events)
    assert parts[0] == {"text": "Thinking about it", "thought": True}
    assert events[-1]["usageMetadata"]["thoughtsTokenCount"] == 7


async def test_gemini_separate_finish_chunk(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GEMINI, Reply("hi", separate_finish_chunk=True, chunks=1))
    events = await gemini_events(client, gem())
    assert events[-1]["candidates"][0]["content"] == {"role": "model"}
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_gemini_max_tokens_finish(client: httpx.AsyncClient) -> None:
    body = gem("y" * 80, generationConfig={"maxOutputTokens": 3})
    candidate = (await client.post(GEN, json=body, headers=GKEY)).json()["candidates"][0]
    assert candidate["finishReason"] == "MAX_TOKENS"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (gem(bogus=1), 'Unknown name "bogus"'),
        (
            {"contents": [{"role": "user", "parts": [{"text": "a", "colour": 1}]}]},
            "Unknown name \"colour\" at 'contents[0].parts[0]'",
        ),
        (gem(generationConfig={"thinkingConfig": {"thinkingLevel": "xhigh"}}), "not supported"),
        (
            gem(
                generationConfig={"thinkingConfig": {"thinkingLevel": "low", "thinkingBudget": 128}}
            ),
            "thinking budget and thinking level",
        ),
        (gem(generationConfig={"maxOutputTokens": 65_537}), "maxOutputTokens"),
        (gem(generationConfig={"temperature": "warm"}), "generation_config.temperature"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "a"}]}]}, "valid role"),
        (
            {"contents": [{"parts": [{"text": "a", "functionCall": {"name": "f"}}]}]},
            "oneof field 'data'",
        ),
        (gem(tools=[{"functionDeclarations": [{"name": "9lives"}]}]), "Invalid function name"),
        (
            gem(tools=[{"functionDeclarations": [{"name": "f", "strict": True}]}]),
            'Unknown name "strict"',
        ),
    ],
)
async def test_invalid_gemini_bodies(
    fake: FakeCometAPI, client: httpx.AsyncClient, body: dict[str, Any], needle: str
) -> None:
    response = await client.post(GEN, json=body, headers=GKEY)
    error = assert_google_error(response, 400, "INVALID_ARGUMENT")
    assert needle in error["message"]
    assert len(fake.rejected) == 1


async def test_gemini_accepts_snake_case_and_max_output(client: httpx.AsyncClient) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "generation_config": {
            "max_output_tokens": 65_536,
            "thinking_config": {"thinking_level": "low"},
        },
    }
    assert (await client.post(GEN, json=body, headers=GKEY)).status_code == 200


async def test_gemini_multimodal_inline_data(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    parts: list[dict[str, Any]] = [{"text": "describe"}]
    for mime in ("image/png", "audio/wav", "video/mp4", "application/pdf"):
        parts.append({"inlineData": {"mimeType": mime, "data": PNG}})
    body = {"contents": [{"role": "user", "parts": parts}]}
    assert (await client.post(GEN, json=body, headers=GKEY)).status_code == 200
    bad_mime = {
        "contents": [
            {
                "role": "user",
                "parts": [{"inlineData": {"mimeType": "application/x-foo", "data": PNG}}],
            }
        ]
    }
    assert (
        "Unsupported MIME type"
        in assert_google_error(
            await client.post(GEN, json=bad_mime, headers=GKEY), 400, "INVALID_ARGUMENT"
        )["message"]
    )
    bad_b64 = {
        "contents": [
            {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "@@@"}}]}
        ]
    }
    assert_google_error(await client.post(GEN, json=bad_b64, headers=GKEY), 400, "INVALID_ARGUMENT")


async def test_gemini_token_limit(client: httpx.AsyncClient) -> None:
    huge = gem("a" * (1_048_576 * 4 + 4))
    error = assert_google_error(
        await client.post(GEN, json=huge, headers=GKEY), 400, "INVALID_ARGUMENT"
    )
    assert "exceeds the maximum number of tokens allowed (1048576)" in error["message"]


# --------------------------------------------------------------------------------------------
# Gemini: function calls and thought signatures
# --------------------------------------------------------------------------------------------


async def _gemini_tool_turn(fake: FakeCometAPI, client: httpx.AsyncClient) -> list[dict[str, Any]]:
    fake.script(
        GEMINI,
        Reply(
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris"}),
                ToolCall("get_time", {"tz": "CET"}),
            ]
        ),
    )
    events = await gemini_events(client, gem("weather and time in Paris?"))
    call_events = [
        e
        for e in events
        if any("functionCall" in p for p in e["candidates"][0]["content"].get("parts", []))
    ]
    assert len(call_events) == 1, "function calls arrive whole in a single chunk"
    parts: list[dict[str, Any]] = call_events[0]["candidates"][0]["content"]["parts"]
    return parts


def _history(model_parts: list[dict[str, Any]]) -> dict[str, Any]:
    responses = [
        {"functionResponse": {"name": p["functionCall"]["name"], "response": {"ok": True}}}
        for p in model_parts
        if "functionCall" in p
    ]
    return {
        "contents": [
            {"role": "user", "parts": [{"text": "weather and time in Paris?"}]},
            {"role": "model", "parts": model_parts},
            {"role": "user", "parts": responses},
        ]
    }


async def test_thought_signature_round_trip(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    parts = await _gemini_tool_turn(fake, client)
    assert [p["functionCall"]["name"] for p in parts] == ["get_weather", "get_time"]
    assert parts[0]["functionCall"]["args"] == {"city": "Paris"}
    signature = parts[0]["thoughtSignature"]
    assert "thoughtSignature" not in parts[1]  # parallel calls: first part only
    base64.b64decode(signature, validate=True)
    assert fake.issued_signatures[signature] == "get_weather"

    response = await client.post(GEN, json=_history(parts), headers=GKEY)
    assert response.status_code == 200, response.text
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"].startswith(
        "Tool result:"
    )
    assert fake.rejected == []


async def test_thought_signature_tampered_or_missing(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    parts = await _gemini_tool_turn(fake, client)
    signature = parts[0]["thoughtSignature"]
    tampered = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    bad = [{**parts[0], "thoughtSignature": tampered}, parts[1]]
    error = assert_google_error(
        await client.post(GEN, json=_history(bad), headers=GKEY), 400, "INVALID_ARGUMENT"
    )
    assert error["message"] == "Corrupted thought signature."

    missing = [{"functionCall": parts[0]["functionCall"]}, parts[1]]
    error = assert_google_error(
        await client.post(GEN, json=_history(missing), headers=GKEY), 400, "INVALID_ARGUMENT"
    )
    assert "missing a thought_signature" in error["message"]

    swapped = [
        {"functionCall": parts[1]["functionCall"], "thoughtSignature": signature},
        {"functionCall": parts[0]["functionCall"]},
    ]
    assert (await client.post(GEN, json=_history(swapped), headers=GKEY)).status_code == 400

    short = _history(parts)
    short["contents"][2]["parts"].pop()
    error = assert_google_error(
        await client.post(GEN, json=short, headers=GKEY), 400, "INVALID_ARGUMENT"
    )
    assert "number of function response parts" in error["message"]
    assert len(fake.rejected) == 4


async def test_dummy_signature_and_old_turns(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    foreign = [
        {
            "functionCall": {"name": "get_weather", "args": {}},
            "thoughtSignature": "skip_thought_signature_validator",
        }
    ]
    assert (await client.post(GEN, json=_history(foreign), headers=GKEY)).status_code == 200
    # An unsigned call in an earlier turn is not validated (only the current turn is).
    old = _history([{"functionCall": {"name": "get_weather", "args": {}}}])
    old["contents"] += [
        {"role": "model", "parts": [{"text": "It is sunny."}]},
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]
    assert (await client.post(GEN, json=old, headers=GKEY)).status_code == 200
    assert fake.rejected == []


# --------------------------------------------------------------------------------------------
# Faults, as a client sees them
# --------------------------------------------------------------------------------------------


async def test_rate_limit_openai(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, RateLimited(), RateLimited(retry_after=0.5, retry_after_header=False))
    first = await client.post(CHAT, json=chat())
    error = assert_openai_error(first, 429, "rate_limit_exceeded")
    assert first.headers["retry-after-ms"] == "2000"
    assert first.headers["retry-after"] == "2"
    assert "try again" in error["message"]
    second = await client.post(CHAT, json=chat())
    assert second.headers["retry-after-ms"] == "500"
    assert "retry-after" not in second.headers
    assert (await client.post(CHAT, json=chat())).status_code == 200
    assert fake.rejected == []


async def test_rate_limit_and_quota_gemini(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GEMINI, RateLimited(), QuotaExhausted())
    limited = assert_google_error(
        await client.post(GEN, json=gem(), headers=GKEY), 429, "RESOURCE_EXHAUSTED"
    )
    retry = [
        d for d in limited["details"] if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    ]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]
    quota = assert_google_error(
        await client.post(GEN, json=gem(), headers=GKEY), 429, "RESOURCE_EXHAUSTED"
    )
    kinds = [d["@type"].rsplit(".", 1)[-1] for d in quota["details"]]
    assert "QuotaFailure" in kinds
    assert "RetryInfo" not in kinds


async def test_quota_openai(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, QuotaExhausted())
    response = await client.post(CHAT, json=chat())
    error = assert_openai_error(response, 429, "insufficient_quota")
    assert error["type"] == "insufficient_quota"
    assert "retry-after" not in response.headers
    assert "retry-after-ms" not in response.headers


@pytest.mark.parametrize(
    ("fault", "status", "google"),
    [
        (RequestTimeout(), 408, "DEADLINE_EXCEEDED"),
        (ServerError(), 500, "INTERNAL"),
        (ServerError(502), 502, "UNAVAILABLE"),
        (ServerError(503), 503, "UNAVAILABLE"),
        (BadRequest("nope"), 400, "INVALID_ARGUMENT"),
        (Unauthorized(), 401, "UNAUTHENTICATED"),
        (Forbidden(), 403, "PERMISSION_DENIED"),
    ],
)
async def test_http_errors_both_protocols(
    fake: FakeCometAPI, client: httpx.AsyncClient, fault: Any, status: int, google: str
) -> None:
    fake.script(None, fault, times=2)  # the global queue serves any model
    code = "invalid_api_key" if status == 401 else None
    error = assert_openai_error(await client.post(CHAT, json=chat()), status, code)
    if status >= 500:
        assert error["type"] == "server_error"
    assert_google_error(await client.post(GEN, json=gem(), headers=GKEY), status, google)
    assert (await client.post(CHAT, json=chat())).status_code == 200
    assert fake.rejected == []


async def test_context_too_long_fault(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, ContextTooLong())
    fake.script(GEMINI, ContextTooLong(prompt_tokens=2_000_000))
    assert_openai_error(await client.post(CHAT, json=chat()), 400, "context_length_exceeded")
    error = assert_google_error(
        await client.post(GEN, json=gem(), headers=GKEY), 400, "INVALID_ARGUMENT"
    )
    assert "input token count (2000000)" in error["message"]


async def test_fail_next_three_then_recover(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, ServerError(503), times=3)
    statuses = [(await client.post(CHAT, json=chat())).status_code for _ in range(5)]
    assert statuses == [503, 503, 503, 200, 200]
    assert fake.pending(GPT) == 0
    assert [r.outcome for r in fake.requests] == ["ServerError"] * 3 + ["Reply"] * 2


async def test_connection_reset(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, ConnectionReset())
    fake.script(GEMINI, ConnectionReset())
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.post(CHAT, json=chat(stream=True))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.post(GEN, json=gem(), headers=GKEY)
    assert (await client.post(CHAT, json=chat())).status_code == 200


async def test_stream_cut_openai(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, StreamCut(after=2, reply=Reply("abcdef", chunks=3)), StreamCut(after=1))
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        await drain_sse(received, client, CHAT, chat(stream=True))
    assert len(received) == 2
    assert "[DONE]" not in received
    assert json.loads(received[1])["choices"][0]["delta"]["content"] == "ab"
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(CHAT, json=chat())  # non-streamed: half a body


async def test_stream_cut_gemini(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GEMINI, StreamCut(after=1))
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        await drain_sse(received, client, SSE, gem(), headers=GKEY)
    assert len(received) == 1
    assert "finishReason" not in json.loads(received[0])["candidates"][0]


async def test_stream_error_openai(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, StreamError(after=2, message="upstream exploded"), StreamError())
    chunks, done = await openai_events(client, chat(stream=True))
    assert not done
    assert len(chunks) == 3
    assert chunks[-1]["error"]["message"] == "upstream exploded"
    assert openai_schema_errors("ErrorResponse", chunks[-1]) == []
    plain = await client.post(CHAT, json=chat())
    assert plain.status_code == 200
    assert "error" in plain.json()


async def test_stream_error_gemini(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GEMINI, StreamError(after=1, status=503), StreamError(after=1, raw=True))
    events = await gemini_events(client, gem())
    assert len(events) == 2
    assert events[-1]["error"]["status"] == "UNAVAILABLE"
    async with client.stream("POST", SSE, json=gem(), headers=GKEY) as response:
        assert response.status_code == 200
        raw = (await response.aread()).decode()
    head, _, tail = raw.partition("\r\n\r\n")
    assert head.startswith("data: ")
    assert json.loads(tail)["error"]["code"] == 500  # pretty-printed, no "data:" prefix


async def test_html_bodies(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, HtmlBody(200), HtmlBody(502), CloudflareTimeout())
    for status in (200, 502, 524):
        response = await client.post(CHAT, json=chat(stream=True))
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.lstrip().lower().startswith(("<!doctype html", "<html"))
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert "524" in response.text


async def test_stalled_bodies(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, StalledBody(ServerError(502), stall=0.5, sent=10))
    fake.script(GEMINI, StalledBody(HtmlBody(200), stall=0.5))
    started = time.monotonic()
    async with client.stream("POST", CHAT, json=chat(stream=True)) as response:
        assert response.status_code == 502  # the head arrives at once
        assert time.monotonic() - started < 0.4
        assert response.headers["content-type"].startswith("application/json")
        body = await response.aread()  # the body only after the stall, complete
    assert time.monotonic() - started >= 0.5
    assert len(body) == int(response.headers["content-length"])
    assert json.loads(body)["error"]["type"]
    quick = httpx.Timeout(5.0, read=0.2)
    async with client.stream("POST", SSE, json=gem(), headers=GKEY, timeout=quick) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()  # nothing of the body before the stall
    assert [r.outcome for r in fake.requests] == ["StalledBody", "StalledBody"]


async def test_redirect(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, Redirect(), Redirect(location="https://example.invalid/elsewhere", status=301))
    response = await client.post(CHAT, json=chat())
    assert response.status_code == 302
    assert response.headers["location"] == "/__fake__/login"
    followed = await client.get(response.headers["location"])
    assert followed.status_code == 200
    assert "text/html" in followed.headers["content-type"]
    moved = await client.post(CHAT, json=chat())
    assert moved.status_code == 301
    assert moved.headers["location"].startswith("https://")


async def test_slow_first_byte(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, Reply("late", delay=0.5))
    with pytest.raises(httpx.ReadTimeout):
        await client.post(CHAT, json=chat(stream=True), timeout=httpx.Timeout(5.0, read=0.1))
    fake.script(GEMINI, ServerError(503, delay=0.2))
    started = time.monotonic()
    assert (await client.post(GEN, json=gem(), headers=GKEY)).status_code == 503
    assert time.monotonic() - started >= 0.2


async def test_first_chunk_delay_after_headers(
    fake: FakeCometAPI, client: httpx.AsyncClient
) -> None:
    fake.script(GPT, Reply("x", first_chunk_delay=0.3))
    started = time.monotonic()
    async with client.stream("POST", CHAT, json=chat(stream=True)) as response:
        headers_at = time.monotonic() - started
        assert response.status_code == 200
        async for _ in response.aiter_bytes():
            break
        first_byte_at = time.monotonic() - started
    assert headers_at < 0.25 <= first_byte_at


async def test_stall_between_chunks(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, Reply("abcdef", chunks=3, stall_after=2, stall=0.6))
    received: list[str] = []
    with pytest.raises(httpx.ReadTimeout):
        await drain_sse(
            received, client, CHAT, chat(stream=True), timeout=httpx.Timeout(5.0, read=0.15)
        )
    assert len(received) == 2


async def test_chunk_pacing(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GEMINI, Reply("abcd", chunks=4, chunk_delay=0.05))
    started = time.monotonic()
    events = await gemini_events(client, gem())
    assert len(events) == 4
    assert time.monotonic() - started >= 0.15


async def test_default_is_instant(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    for _ in range(10):
        await openai_events(client, chat(stream=True))
    assert time.monotonic() - started < 1.0


# --------------------------------------------------------------------------------------------
# Responders, queues, recording
# --------------------------------------------------------------------------------------------


async def test_custom_responder_and_queues(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    def shout(request: RecordedRequest) -> Reply:
        return Reply(request.last_user_text.upper())

    fake.set_responder(shout)
    fake.set_responder(lambda request: ServerError(502), model=GEMINI)
    fake.script(None, Reply("global"))
    fake.script(GPT, lambda request: Reply(f"{len(request.messages)} message(s)"))

    async def ask() -> str:
        content: str = (await client.post(CHAT, json=chat("quiet"))).json()["choices"][0][
            "message"
        ]["content"]
        return content

    assert await ask() == "1 message(s)"  # the model's own queue first
    assert await ask() == "global"  # then the global queue
    assert await ask() == "QUIET"  # then the responder
    assert (await client.post(GEN, json=gem(), headers=GKEY)).status_code == 502
    fake.set_responder(None)
    assert await ask() == "Echo: quiet"


async def test_recording(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    system = {"role": "system", "content": "be nice"}
    body = {
        "model": GPT,
        "messages": [system, {"role": "user", "content": "hi"}],
        "stream": True,
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    await openai_events(client, body)
    await client.post(
        GEN, json=gem(generationConfig={"thinkingConfig": {"thinkingLevel": "LOW"}}), headers=GKEY
    )
    await client.post(CHAT, json=chat(temperature=0.1))
    openai_req, gemini_req, bad = fake.requests
    assert openai_req.headers["authorization"] == f"Bearer {KEY}"
    assert openai_req.body == body
    assert openai_req.stream
    assert openai_req.system_text == "be nice"
    assert openai_req.tool_names == ["lookup"]
    assert gemini_req.protocol == "gemini"
    assert gemini_req.model == GEMINI
    assert gemini_req.thinking_level == "low"
    assert not gemini_req.stream
    assert fake.rejected == [bad]
    assert bad.rejection is not None
    assert bad.rejection.param == "temperature"
    assert "unsupported_parameter" in repr(bad)
    assert [r.model for r in fake.requests_for(GPT)] == [GPT, GPT]


async def test_fake_reports_its_own_errors(fake: FakeCometAPI, client: httpx.AsyncClient) -> None:
    fake.script(GPT, Reply("x", finish_reason="exploded"))  # not a spec finish_reason
    fake.script(GEMINI, Reply(tool_calls=[ToolCall("f", "[1, 2]")]))  # Gemini args need an object
    broken = await client.post(CHAT, json=chat(stream=True))
    assert broken.status_code == 500
    assert broken.text.startswith("FakeCometAPI error")
    assert (await client.post(GEN, json=gem(), headers=GKEY)).status_code == 500
    assert len(fake.errors) == 2
    assert fake.rejected == []
