"""Bad input on the Slack HTTP endpoint of a real `teambot slack --http` process, generated
by hypothesis: malformed JSON, wrong types, huge bodies, unknown event types, forged
signatures. Every answer is a clear 4xx
(or a 200 for a well-formed event the bot has no use for), never a 5xx or a crash, and an
unsigned request never leads to any work (no Slack call, no model call)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.slack_api import FakeSlack, SignedRequest, SlackSigner
from tests.faults.procs import BotProcess, bot_env, free_port
from tests.support import API_KEY
from tests.test_slack_harness import ALICE, GENERAL, seed

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

event_types = st.sampled_from(
    ["app_mention", "message", "reaction_added", "team_join", "no_such_event", "", "💥"]
)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Event envelopes whose fields have the wrong types, are missing, or are unknown."""
    event: dict[str, Any] = {
        "type": draw(event_types | json_values),
        "channel": draw(st.just(GENERAL) | json_values),
        "user": draw(st.just(ALICE) | json_values),
        "text": draw(st.text(max_size=200) | json_values),
        "ts": draw(st.just(f"{time.time():.6f}") | json_values),
    }
    for name in draw(st.lists(st.sampled_from(list(event)), max_size=3)):
        event.pop(name, None)
    envelope: dict[str, Any] = {
        "type": draw(
            st.sampled_from(["event_callback", "url_verification", "bogus"]) | json_values
        ),
        "team_id": draw(st.just("T0000000001") | json_values),
        "event": draw(st.just(event) | json_values),
        "event_id": draw(st.text(min_size=1, max_size=20) | json_values),
        "event_time": draw(st.integers() | json_values),
    }
    return envelope


bodies = (
    envelopes().map(lambda e: json.dumps(e).encode())
    | st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.just(b"payload=%7Bnot-json")
    | st.just(b"command=/summarize&text=" + b"9" * 50)
    | st.just(
        b'{"type": "event_callback", "event": {"type": "app_mention", "text": ' + b"1" * 20 + b"}"
    )
)


class Background:
    """An event loop in a thread, for the fakes and the bot process, so a synchronous
    hypothesis test can drive them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Any, within: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(within)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def bot_process(
    redis_url: str, key_prefix: str
) -> Iterator[tuple[BotProcess, FakeSlack, FakeCometAPI]]:
    """A real `teambot slack --http` process with the fakes it talks to."""
    background = Background()
    stack = contextlib.AsyncExitStack()

    async def start() -> tuple[BotProcess, FakeSlack, FakeCometAPI]:
        cometapi = await stack.enter_async_context(FakeCometAPI(api_key=API_KEY))
        slack = await stack.enter_async_context(FakeSlack(bot_token="xoxb-test-token-0001"))
        seed(slack)
        env = bot_env(
            cometapi_api_key=API_KEY,
            cometapi_base_url=cometapi.base_url,
            redis_url=redis_url,
            redis_key_prefix=key_prefix,
            slack_bot_token="xoxb-test-token-0001",
            slack_signing_secret=slack.signing_secret,
            slack_api_url=slack.api_url,
            health_port=free_port(),  # as deployed: probes and metrics on a port of their own
        )
        bot = BotProcess(env, name="fuzzed")
        await bot.start()
        return bot, slack, cometapi

    bot, slack, cometapi = background.run(start())
    try:
        yield bot, slack, cometapi
    finally:
        code = background.run(bot.stop())
        bot.cleanup()
        background.run(stack.aclose())
        background.close()
        assert code == 0


def _content_type(body: bytes) -> str:
    return "application/json" if body[:1] in (b"{", b"[") else "application/x-www-form-urlencoded"


def signed(signer: SlackSigner, body: bytes) -> SignedRequest:
    """Signed as Slack signs: HMAC-SHA256 over `v0:<timestamp>:` and the raw bytes (the
    SDK's helper takes text only, and fuzzed bodies need not be UTF-8)."""
    timestamp = str(int(time.time()))
    digest = hmac.new(
        signer.signing_secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256
    ).hexdigest()
    headers = {
        "Content-Type": _content_type(body),
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
    }
    return SignedRequest(body, headers)


def idle(http: httpx.Client, bot: BotProcess) -> None:
    """Until the bot has nothing in flight (its /readyz tells)."""
    for _ in range(200):
        if http.get(bot.health_url + "/readyz").json().get("in_flight") == 0:
            return
        time.sleep(0.02)
    raise AssertionError("the bot never became idle")


def test_fuzzed_bodies_never_crash_the_endpoint(
    bot_process: tuple[BotProcess, FakeSlack, FakeCometAPI],
) -> None:
    bot, slack, cometapi = bot_process
    url = bot.url + "/slack/events"
    statuses: list[int] = []
    forger = SlackSigner("not-the-secret")
    with httpx.Client(timeout=10) as http:

        @settings(
            max_examples=200,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(body=bodies, forged=st.booleans())
        def check(body: bytes, forged: bool) -> None:
            if forged:
                idle(http, bot)  # work started by earlier, signed examples is over
            calls, requests = len(slack.calls), len(cometapi.requests)
            request = signed(forger if forged else slack.signer, body)
            status = http.post(url, content=request.body, headers=request.headers).status_code
            statuses.append(status)
            assert status < 500, (status, body[:200])
            if forged:
                assert status == 401
                time.sleep(0.02)  # work, if any were started, would show by now
                idle(http, bot)
                assert (len(slack.calls), len(cometapi.requests)) == (calls, requests)

        check()
        assert 401 in statuses
        assert bot.alive
        # the process is still healthy
        assert http.get(bot.health_url + "/readyz").status_code == 200
        huge = json.dumps({"type": "event_callback", "event": {"text": "x" * 3_000_000}})
        request = signed(slack.signer, huge.encode())
        assert http.post(url, content=request.body, headers=request.headers).status_code == 413
        bare = http.post(url, content=b"{}", headers={"Content-Type": "application/json"})
        assert bare.status_code == 401
        odd = http.post(
            url,
            content=b"{}",
            headers={
                "Content-Type": "application/json",
                "X-Slack-Request-Timestamp": "not-a-number",
                "X-Slack-Signature": "v0=zz",
            },
        )
        assert odd.status_code == 401
        assert http.get(url).status_code == 405
        # The events port serves the events alone; probes and metrics are on HEALTH_PORT.
        for path in ("/metrics", "/healthz", "/readyz"):
            assert http.get(bot.url + path).status_code == 404, path
            assert http.get(bot.health_url + path).status_code == 200, path
        assert http.post(bot.health_url + "/slack/events", content=b"{}").status_code == 404
    assert cometapi.requests == [] or all(not r.rejected for r in cometapi.requests)
    # No crash: failures that were logged are the bot telling Slack-side refusals apart
    # (a fuzzed event names a thread that does not exist), never a parsing error.
    crashes = [
        line for line in bot.log.splitlines() if "Traceback" in line and "SlackApiError" not in line
    ]
    assert crashes == [], "\n".join(crashes[:3])


def _nested(depth: int) -> str:
    """A JSON object whose `event` holds lists nested `depth` deep."""
    return '{"type": "event_callback", "event": {"x": ' + "[" * depth + "]" * depth + "}}"


def test_bad_headers_and_hostile_bodies_are_refused_with_4xx(
    bot_process: tuple[BotProcess, FakeSlack, FakeCometAPI],
) -> None:
    """What a client sees for headers that are not Slack's, bodies nested beyond any
    parser's depth, and bodies over the size limit: 401, 400 and 413, never a 500."""
    bot, slack, cometapi = bot_process
    url = bot.url + "/slack/events"
    mention = json.dumps(slack.mention(GENERAL, ALICE, "hello")).encode()
    good = signed(slack.signer, mention).headers
    timestamp, signature = good["X-Slack-Request-Timestamp"], good["X-Slack-Signature"]
    bad_headers: list[tuple[bytes, bytes]] = [
        (signature.encode()[:-1] + "é".encode(), timestamp.encode()),
        ("v0=é".encode(), timestamp.encode()),
        (b"v0=\xff\xfe", timestamp.encode()),
        (("v0=" + "ａ" * 64).encode(), timestamp.encode()),  # full-width letters
        (signature.encode(), "١٧٠٠٠٠٠٠٠٠".encode()),  # Arabic-Indic digits
        (signature.encode(), b"\xff"),
        (signature.encode(), b"1e9"),
        (signature.encode(), b"-1"),
        (signature.encode(), b"9" * 5000),
        (signature.encode(), b""),
        (b"", timestamp.encode()),
        (b"v1=" + signature.encode()[3:], timestamp.encode()),
    ]
    deep_json = _nested(100_000).encode()
    deep_form = (
        b"payload="
        + urllib.parse.quote(
            '{"type": "block_actions", "actions": ' + "[" * 100_000 + "]" * 100_000 + "}"
        ).encode()
    )
    seen: list[tuple[str, int, int]] = []  # (case, wanted, got)
    with httpx.Client(timeout=30) as http:

        def post(case: str, wanted: int, body: Any, headers: Any) -> None:
            seen.append((case, wanted, http.post(url, content=body, headers=headers).status_code))

        challenge = signed(slack.signer, json.dumps(slack.payloads.url_verification()).encode())
        post("control: Slack's own headers", 200, challenge.body, challenge.headers)
        for sig, stamp in bad_headers:
            headers = {
                b"Content-Type": b"application/json",
                b"X-Slack-Signature": sig,
                b"X-Slack-Request-Timestamp": stamp,
            }
            post(f"headers {sig[:12]!r} {stamp[:12]!r}", 401, mention, headers)
        for name, body in (("deep JSON", deep_json), ("deep payload=", deep_form)):
            request = signed(slack.signer, body)
            post(f"signed {name}", 400, request.body, request.headers)
            # Unsigned, the body is never parsed: the signature check refuses it first.
            forged = signed(SlackSigner("not-the-secret"), body)
            post(f"forged {name}", 401, forged.body, forged.headers)
        too_big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
        for name, request in (
            ("signed", signed(slack.signer, too_big)),
            ("unsigned", SignedRequest(too_big, {})),
        ):
            post(f"{name} 2 MB body", 413, request.body, request.headers)
            # Streamed (chunked, no Content-Length): the limit holds as the body arrives.
            chunks = iter([too_big[: 1 << 20], too_big[1 << 20 :]])
            post(f"{name} 2 MB body, chunked", 413, chunks, request.headers)
        wrong = [case for case in seen if case[1] != case[2]]
        assert not wrong, "\n".join(f"{case}: wanted {w}, got {g}" for case, w, g in wrong)
        idle(http, bot)
        assert http.get(bot.health_url + "/readyz").status_code == 200
    assert bot.alive
    assert [c.method for c in slack.calls if c.method != "auth.test"] == []
    assert cometapi.requests == []
    assert "Traceback" not in bot.log, bot.log[-3000:]
