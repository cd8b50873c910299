"""Token economy: what a long thread costs with the history budget and rolling summaries,
and what a second summary costs after the thread grew.

Against the fake CometAPI (in-process; no platform needed): a 200-turn thread of ~40-word
messages with ~60-word answers. Request sizes are estimated tokens = characters / 4 of
what the model receives (system instruction, messages, tool declarations).

    .venv/bin/python bench/economy.py        # needs Redis at $REDIS_URL or 127.0.0.1:6379

Targets (issue 6): turn-200 request <= 9,600; total over 200 turns <= 965,000 including
rolling-summary calls; second summary <= 0.3 of the first (issue 6); a provider's prefix
cache could serve >= 70% of the dialogue input tokens (issue 11).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import uuid
from typing import Any

from _support import API_KEY, clean_prefix, redis_url

from core.engine import Engine
from core.settings import load_settings
from core.sink import CollectingSink
from core.types import Author, ChatMessage, ConversationKey, Incoming
from tests.fakes.cometapi import FakeCometAPI, RecordedRequest, Reply

WORDS = (
    "deploy",
    "staging",
    "release",
    "branch",
    "review",
    "ticket",
    "budget",
    "customer",
    "design",
    "metrics",
    "latency",
    "cache",
    "database",
    "migration",
    "rollback",
    "incident",
    "oncall",
    "schedule",
    "sprint",
    "roadmap",
    "feature",
    "pricing",
    "contract",
    "vendor",
    "invoice",
    "meeting",
    "agenda",
    "summary",
    "owner",
    "deadline",
    "estimate",
    "risk",
    "dependency",
    "library",
    "upgrade",
    "security",
    "audit",
    "backlog",
    "priority",
    "standup",
    "retro",
    "demo",
)
FACT = "FACT: the vault passphrase is PURPLE-OTTER-42"
REPORT_TURNS = (1, 10, 25, 50, 100, 150, 200)


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def request_tokens(request: RecordedRequest) -> int:
    body = request.json
    text = request.system_text
    if request.protocol == "openai":
        for message in body.get("messages", []):
            content = message.get("content")
            text += content if isinstance(content, str) else json.dumps(content or "")
            text += json.dumps(message.get("tool_calls") or "")
        text += json.dumps(body.get("tools") or "")
    else:
        for content in body.get("contents", []):
            text += json.dumps(content.get("parts"))
        text += json.dumps(body.get("tools") or "")
    return len(text) // 4


def prompt_text(request: RecordedRequest) -> str:
    """A dialogue request's prompt in the order a provider reads it (tools, then the
    messages), for measuring what its prefix cache could serve."""
    body = request.json
    parts = [json.dumps(body.get("tools") or "", sort_keys=True)]
    for message in body.get("messages", []):
        parts.append(json.dumps([message.get("role"), message.get("content")], sort_keys=True))
        parts.append(json.dumps(message.get("tool_calls") or "", sort_keys=True))
    return "".join(parts)


def cacheable_tokens(prompt: str, earlier: list[str]) -> int:
    """Tokens of `prompt` a prefix cache could serve: its longest common prefix with a
    recent request, counted as OpenAI does (nothing under 1,024 tokens, then in steps of
    128)."""
    best = 0
    for other in earlier:
        size = min(len(prompt), len(other))
        low, high = 0, size  # binary search on the common prefix length
        while low < high:
            middle = (low + high + 1) // 2
            if prompt[:middle] == other[:middle]:
                low = middle
            else:
                high = middle - 1
        best = max(best, low)
    tokens = best // 4
    return 0 if tokens < 1024 else tokens - (tokens - 1024) % 128


def responder(rng: random.Random) -> Any:
    def answer(request: RecordedRequest) -> Reply:
        system = request.system_text
        if "running memory" in system:
            # A bounded memory, as a real summarizer writes it: facts kept, the rest condensed.
            kept = ["- " + FACT] if "PURPLE-OTTER-42" in request.last_user_text else []
            return Reply("\n".join([*kept, *(f"- {sentence(rng, 12)}" for _ in range(12))]))
        structured = "response_format" in request.json or (
            request.protocol == "gemini"
            and request.generation_config.get("responseMimeType") == "application/json"
        )
        if structured:
            summary = {
                "tldr": sentence(rng, 40),
                "decisions": [sentence(rng, 15) for _ in range(4)],
                "action_items": [
                    {"owner": f"user{i}", "task": sentence(rng, 10), "due": ""} for i in range(4)
                ],
                "open_questions": [sentence(rng, 12) for _ in range(3)],
            }
            return Reply(json.dumps(summary))
        return Reply(sentence(rng, 60))

    return answer


async def dialogue(engine: Engine, fake: FakeCometAPI, rng: random.Random) -> bool:
    key = ConversationKey("bench", "W", "C", uuid.uuid4().hex[:8])
    sizes: dict[int, int] = {}
    total = 0
    naive = 0
    thread_chars = 0
    prompts: list[str] = []
    prompt_tokens = 0
    cached_tokens = 0
    for turn in range(1, 201):
        text = FACT + ". " + sentence(rng, 33) if turn == 1 else sentence(rng, 40)
        if turn == 200:
            text = "What is the vault passphrase? " + sentence(rng, 34)
        before = len(fake.requests)
        incoming = Incoming(key, uuid.uuid4().hex, Author(f"U{turn % 5}", f"user{turn % 5}"), text)
        sink = CollectingSink()
        await engine.reply(incoming, sink)
        assert sink.text is not None, sink.error
        new = fake.requests[before:]
        for request in new:
            total += request_tokens(request)
        dialogue_requests = [r for r in new if r.protocol == "openai"]
        sizes[turn] = request_tokens(dialogue_requests[0])
        for request in dialogue_requests:
            prompt = prompt_text(request)
            prompt_tokens += len(prompt) // 4
            cached_tokens += cacheable_tokens(prompt, prompts[-8:])
            prompts.append(prompt)
        # a bot that resends the whole thread: the first request plus everything before it
        naive += sizes[1] + thread_chars // 4
        thread_chars += len(text) + len(sink.text)
    last = [r for r in fake.requests if r.protocol == "openai"][-1]
    fact_kept = "PURPLE-OTTER-42" in json.dumps(last.json)
    folds = sum(1 for r in fake.requests if "running memory" in r.system_text)
    print("Dialogue request size (estimated tokens) by turn:")
    for turn in REPORT_TURNS:
        print(f"  turn {turn:3d}: {sizes[turn]:6,d}")
    print(f"Total over 200 turns incl. {folds} rolling-summary calls: {total:,d} tokens")
    print(f"  (resending the whole thread every turn would be about {naive:,d})")
    print(f"First message's fact in the turn-200 request: {'yes' if fact_kept else 'NO'}")
    share = cached_tokens / max(1, prompt_tokens)
    print(
        f"Dialogue input a provider's prefix cache could serve: {share:.0%} "
        f"({cached_tokens:,d} of {prompt_tokens:,d} tokens; target >= 70%: "
        f"{'met' if share >= 0.7 else 'MISSED'})"
    )
    ok = sizes[200] <= 9_600 and total <= 965_000 and fact_kept and share >= 0.7
    verdict = "met" if ok else "MISSED"
    print(f"  targets (<= 9,600 at turn 200, <= 965,000 total, fact kept): {verdict}")
    return ok


async def summaries(engine: Engine, fake: FakeCometAPI, rng: random.Random) -> bool:
    scope = ConversationKey("bench", "W", "C", "summary-thread")
    thread = [
        ChatMessage.user(
            sentence(rng, 40),
            f"user{i % 6}",
            id=f"{1_700_000_000 + i}.000100",
            ts=1_700_000_000 + i,
        )
        for i in range(350)
    ]

    async def cost_of(messages: list[ChatMessage]) -> float:
        before = len(fake.requests)
        await engine.summarize(scope, messages)
        price_in = engine.settings.summary_price_input
        price_out = engine.settings.summary_price_output
        cost = 0.0
        for request in fake.requests[before:]:
            tokens_in = request_tokens(request)
            tokens_out = 400  # the structured summary the fake writes, about the same each time
            cost += (tokens_in * price_in + tokens_out * price_out) / 1e6
        return cost

    first = await cost_of(thread[:300])
    second = await cost_of(thread)
    ratio = second / first
    verdict = "met" if ratio <= 0.3 else "MISSED"
    print(
        f"Thread summary: 300 messages ${first:.5f}; after growing to 350, "
        f"${second:.5f} = {ratio:.2f} of the first (target <= 0.30: {verdict})"
    )
    return ratio <= 0.3


async def main() -> int:
    rng = random.Random(7)
    url = redis_url()
    prefix = f"teambot-bench-{uuid.uuid4().hex[:8]}"
    async with FakeCometAPI(api_key=API_KEY) as fake, clean_prefix(url, prefix):
        fake.set_responder(responder(rng))
        settings = load_settings(
            _env_file=None,
            cometapi_api_key=API_KEY,
            cometapi_base_url=fake.base_url,
            redis_url=url,
            redis_key_prefix=prefix,
            log_level="WARNING",
        )
        engine = await Engine.start(settings)
        try:
            ok = await dialogue(engine, fake, rng)
            ok = await summaries(engine, fake, rng) and ok
        finally:
            await engine.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
