"""OpenAI-compatible chat completions (`/v1/chat/completions`), streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from core.providers.base import (
    ErrorKind,
    Event,
    Finish,
    ModelRequest,
    Provider,
    ProviderError,
    Target,
    TextDelta,
    ToolCallEvent,
    Usage,
    classify_status,
    json_body,
    load_json,
    parse_retry_after,
)
from core.types import ChatMessage, ToolCall

__all__ = ["OpenAIChatProvider", "to_openai_messages"]

_FINISH: dict[str, Any] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}


def _user_content(message: ChatMessage) -> str | list[dict[str, Any]]:
    text = message.speaker_text()
    images = [p for p in message.parts if p.kind == "image"]
    if not images:
        return text
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for part in images:
        content.append(
            {"type": "image_url", "image_url": {"url": f"data:{part.mime};base64,{part.b64()}"}}
        )
    return content


def to_openai_messages(system: str, messages: list[ChatMessage]) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    if system:
        wire.append({"role": "system", "content": system})
    for message in messages:
        if message.role == "user":
            wire.append({"role": "user", "content": _user_content(message)})
        elif message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments or "{}"},
                    }
                    for call in message.tool_calls
                ]
            elif not message.content:
                entry["content"] = ""
            wire.append(entry)
        else:
            wire.append(
                {
                    "role": "tool",
                    "tool_call_id": message.tool_call_id or "",
                    "content": message.content,
                }
            )
    return wire


class OpenAIChatProvider(Provider):
    protocol = "openai"

    def build(self, target: Target, request: ModelRequest) -> httpx.Request:
        body: dict[str, Any] = {
            "model": target.model,
            "messages": to_openai_messages(request.system, request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_completion_tokens": min(request.max_output_tokens, target.max_output),
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": spec.name,
                        "description": spec.description,
                        "parameters": spec.parameters,
                    },
                }
                for spec in request.tools
            ]
            body["tool_choice"] = request.tool_choice
            if request.tool_choice == "auto":
                body["parallel_tool_calls"] = True
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.json_schema,
                    "strict": True,
                },
            }
        return self._client.build_request(
            "POST",
            f"{self._base_url}/v1/chat/completions",
            json=body,
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Accept": "text/event-stream",
            },
        )

    def classify(self, status: int, headers: httpx.Headers, body: bytes) -> ProviderError:
        error = json_body(body).get("error")
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or "")
        kind = str(error.get("type") or "")
        message = str(error.get("message") or body[:200].decode("utf-8", "replace")).strip()
        detail = f"HTTP {status} {code or kind}: {message}".strip()
        if code == "insufficient_quota" or kind == "insufficient_quota":
            return ProviderError(ErrorKind.FALLBACK, "quota", detail, status=status)
        if code == "context_length_exceeded" or "maximum context length" in message:
            return ProviderError(ErrorKind.FALLBACK, "context", detail, status=status)
        if code == "model_not_found":
            return ProviderError(ErrorKind.FALLBACK, "not_found", detail, status=status)
        return classify_status(status, detail, parse_retry_after(headers))

    async def parse(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[Event]:
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        usage: Usage | None = None
        done = False
        produced = False
        async for sse in events:
            data = sse.data.strip()
            if not data:
                continue
            if data == "[DONE]":
                done = True
                break
            chunk = load_json(data)
            if not isinstance(chunk, dict):
                raise ProviderError(
                    ErrorKind.RETRY, "bad_response", f"unexpected chunk {data[:80]}"
                )
            if chunk.get("error"):
                raise _stream_error(chunk["error"])
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text = delta.get("content") or delta.get("refusal")
                if text:
                    produced = True
                    yield TextDelta(text)
                for fragment in delta.get("tool_calls") or []:
                    slot = calls.setdefault(
                        int(fragment.get("index", 0)), {"id": "", "name": "", "args": []}
                    )
                    if fragment.get("id"):
                        slot["id"] = fragment["id"]
                    function = fragment.get("function") or {}
                    if function.get("name") and not slot["name"]:
                        slot["name"] = function["name"]
                    if function.get("arguments"):
                        slot["args"].append(function["arguments"])
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
            if chunk.get("usage"):
                raw = chunk["usage"]
                details = raw.get("prompt_tokens_details") or {}
                usage = Usage(
                    int(raw.get("prompt_tokens") or 0),
                    int(raw.get("completion_tokens") or 0),
                    int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
                )
        if not done and finish is None:
            raise ProviderError(
                ErrorKind.RETRY, "stream_cut", "the stream ended before the answer did"
            )
        for index in sorted(calls):
            slot = calls[index]
            if not slot["name"]:
                raise ProviderError(ErrorKind.RETRY, "bad_response", "tool call without a name")
            produced = True
            yield ToolCallEvent(
                ToolCall(
                    id=slot["id"] or f"call_{index}",
                    name=slot["name"],
                    arguments="".join(slot["args"]) or "{}",
                )
            )
        if not produced and finish != "content_filter":
            raise ProviderError(ErrorKind.RETRY, "empty", "the model returned an empty answer")
        if usage is not None:
            yield usage
        reason = _FINISH.get(finish or "stop", "stop")
        if calls:
            reason = "tool_calls"
        yield Finish(reason)


def _stream_error(error: Any) -> ProviderError:
    if not isinstance(error, dict):
        return ProviderError(ErrorKind.RETRY, "stream_error", str(error)[:200])
    code = str(error.get("code") or error.get("type") or "")
    message = str(error.get("message") or "")
    detail = f"error in stream {code}: {message}"
    if code in ("insufficient_quota",):
        return ProviderError(ErrorKind.FALLBACK, "quota", detail)
    if code == "context_length_exceeded":
        return ProviderError(ErrorKind.FALLBACK, "context", detail)
    if code in ("invalid_api_key", "invalid_request_error"):
        return ProviderError(ErrorKind.FATAL, "bad_request", detail)
    return ProviderError(ErrorKind.RETRY, "stream_error", detail)
