"""Gemini native REST (`/v1beta/models/{model}:streamGenerateContent?alt=sse`)."""

from __future__ import annotations

import json
import re
import uuid
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

__all__ = ["GeminiProvider", "to_gemini_contents"]

# Documented stand-in for function calls that Gemini did not produce itself
# (history written by another model): Gemini 3 rejects unsigned calls otherwise.
DUMMY_SIGNATURE = "skip_thought_signature_validator"

_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}


def _function_response(message: ChatMessage) -> dict[str, Any]:
    try:
        parsed = json.loads(message.content)
    except (json.JSONDecodeError, ValueError):
        parsed = message.content
    if isinstance(parsed, str) and parsed.startswith("Error:"):
        response: dict[str, Any] = {"error": parsed}
    elif isinstance(parsed, dict):
        response = parsed
    else:
        response = {"result": parsed}
    return {"functionResponse": {"name": message.tool_name or "tool", "response": response}}


def _model_parts(message: ChatMessage) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"text": message.content})
    for index, call in enumerate(message.tool_calls):
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError:
            args = {"_raw": call.arguments}
        function_call: dict[str, Any] = {
            "name": call.name,
            "args": args if isinstance(args, dict) else {"value": args},
        }
        if call.extra.get("gemini_id"):
            function_call["id"] = call.id
        part: dict[str, Any] = {"functionCall": function_call}
        signature = call.extra.get("thoughtSignature")
        if signature:
            part["thoughtSignature"] = signature
        elif index == 0:
            part["thoughtSignature"] = DUMMY_SIGNATURE
        parts.append(part)
    return parts


def to_gemini_contents(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "user":
            role = "user"
            parts: list[dict[str, Any]] = []
            text = message.speaker_text()
            if text:
                parts.append({"text": text})
            for media in message.parts:
                parts.append({"inlineData": {"mimeType": media.mime, "data": media.b64()}})
        elif message.role == "assistant":
            role = "model"
            parts = _model_parts(message)
        else:
            role = "user"
            parts = [_function_response(message)]
        if not parts:
            continue
        # Gemini wants turns to alternate; parallel tool results share one turn.
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)s\s*$")


def _retry_delay(details: list[Any]) -> float | None:
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _is_quota(details: list[Any], message: str) -> bool:
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("QuotaFailure"):
            return True
    return "quota" in message.lower() and "exceeded" in message.lower()


def _classify_error(
    status: int, error: dict[str, Any], retry_after_header: float | None
) -> ProviderError:
    message = str(error.get("message") or "")
    state = str(error.get("status") or "")
    raw_details = error.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    detail = f"HTTP {status} {state}: {message}".strip()
    if status == 429 or state == "RESOURCE_EXHAUSTED":
        delay = _retry_delay(details)
        if delay is None and _is_quota(details, message):
            return ProviderError(ErrorKind.FALLBACK, "quota", detail, status=status)
        return ProviderError(
            ErrorKind.RETRY,
            "rate_limit",
            detail,
            status=status,
            retry_after=delay if delay is not None else retry_after_header,
        )
    lowered = message.lower()
    if (
        state == "INVALID_ARGUMENT"
        and "token" in lowered
        and ("exceed" in lowered or "too long" in lowered or "limit" in lowered)
    ):
        return ProviderError(ErrorKind.FALLBACK, "context", detail, status=status)
    if status < 400:  # an error object inside a 200 stream
        return ProviderError(ErrorKind.RETRY, "stream_error", detail)
    return classify_status(status, detail, retry_after_header)


class GeminiProvider(Provider):
    protocol = "gemini"

    def build(self, target: Target, request: ModelRequest) -> httpx.Request:
        generation: dict[str, Any] = {
            "maxOutputTokens": min(request.max_output_tokens, target.max_output),
        }
        if request.thinking_level:
            generation["thinkingConfig"] = {"thinkingLevel": request.thinking_level}
        if request.json_schema is not None:
            generation["responseMimeType"] = "application/json"
            generation["responseJsonSchema"] = request.json_schema
        body: dict[str, Any] = {
            "contents": to_gemini_contents(request.messages),
            "generationConfig": generation,
        }
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        if request.tools:
            body["tools"] = [
                {
                    "functionDeclarations": [
                        {
                            "name": spec.name,
                            "description": spec.description,
                            "parametersJsonSchema": spec.parameters,
                        }
                        for spec in request.tools
                    ]
                }
            ]
            mode = "AUTO" if request.tool_choice == "auto" else "NONE"
            body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
        return self._client.build_request(
            "POST",
            f"{self._base_url}/v1beta/models/{target.model}:streamGenerateContent",
            params={"alt": "sse"},
            json=body,
            headers={"x-goog-api-key": self._api_key, "Accept": "text/event-stream"},
        )

    def classify(self, status: int, headers: httpx.Headers, body: bytes) -> ProviderError:
        error = json_body(body).get("error")
        if not isinstance(error, dict):
            snippet = body[:200].decode("utf-8", "replace").strip()
            return classify_status(status, f"HTTP {status}: {snippet}", parse_retry_after(headers))
        return _classify_error(status, error, parse_retry_after(headers))

    async def parse(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[Event]:
        calls: list[ToolCall] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None
        produced = False
        async for sse in events:
            data = sse.data.strip()
            if not data:
                continue
            chunk = load_json(data)
            chunks = chunk if isinstance(chunk, list) else [chunk]
            for item in chunks:
                if not isinstance(item, dict):
                    raise ProviderError(ErrorKind.RETRY, "bad_response", "unexpected chunk")
                if item.get("error"):
                    error = item["error"]
                    code = int(error.get("code") or 200) if isinstance(error, dict) else 200
                    raise _classify_error(
                        code if code >= 400 else 200,
                        error if isinstance(error, dict) else {"message": str(error)},
                        None,
                    )
                blocked = (item.get("promptFeedback") or {}).get("blockReason")
                if blocked:
                    raise ProviderError(
                        ErrorKind.FATAL, "blocked", f"the prompt was blocked ({blocked})"
                    )
                for candidate in (item.get("candidates") or [])[:1]:
                    for part in (candidate.get("content") or {}).get("parts") or []:
                        if part.get("thought"):
                            continue
                        if part.get("text"):
                            produced = True
                            yield TextDelta(part["text"])
                        call = part.get("functionCall")
                        if call:
                            calls.append(_tool_call(call, part.get("thoughtSignature")))
                    if candidate.get("finishReason"):
                        finish = candidate["finishReason"]
                if item.get("usageMetadata"):
                    usage = item["usageMetadata"]
        if finish is None:
            raise ProviderError(
                ErrorKind.RETRY, "stream_cut", "the stream ended before the answer did"
            )
        if finish == "MALFORMED_FUNCTION_CALL":
            raise ProviderError(
                ErrorKind.RETRY, "bad_response", "the model wrote a malformed tool call"
            )
        for call in calls:
            produced = True
            yield ToolCallEvent(call)
        if not produced and finish not in _BLOCKED:
            raise ProviderError(ErrorKind.RETRY, "empty", "the model returned an empty answer")
        if usage is not None:
            output = int(usage.get("candidatesTokenCount") or 0) + int(
                usage.get("thoughtsTokenCount") or 0
            )
            yield Usage(
                int(usage.get("promptTokenCount") or 0),
                output,
                int(usage.get("cachedContentTokenCount") or 0),
            )
        if calls:
            yield Finish("tool_calls")
        elif finish == "MAX_TOKENS":
            yield Finish("length")
        elif finish in _BLOCKED:
            yield Finish("content_filter")
        else:
            yield Finish("stop")


def _tool_call(call: dict[str, Any], signature: str | None) -> ToolCall:
    extra: dict[str, Any] = {}
    if signature:
        extra["thoughtSignature"] = signature
    call_id = call.get("id")
    if call_id:
        extra["gemini_id"] = True
    return ToolCall(
        id=str(call_id or f"call_{uuid.uuid4().hex[:12]}"),
        name=str(call.get("name") or ""),
        arguments=json.dumps(call.get("args") or {}),
        extra=extra,
    )
