"""The Slack adapter's test harness, and the tests of its serving shell.

`running()` starts the real `teambot slack --http` entry point (`run_slack`) on a free
loopback port, against the fake Slack Web API, the fake CometAPI and real Redis; tests
then talk to it as Slack does: signed HTTP requests to `/slack/events`. Only the network
edges are fakes.

Tests here: health and readiness, signature checks, the 3-second ack with a slow model,
shutdown waiting for answers in flight, start-up errors, and Socket Mode wiring (through
a loopback stand-in for Slack's WebSocket endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bots.slack.app import run_slack
from bots.slack.bot import SlackBot
from core.settings import ConfigError, Settings
from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.fakes.slack_api import (
    Call,
    FakeSlack,
    SignedRequest,
    SlackPayloads,
    SlackSigner,
    SlackSpec,
    ThreadMessage,
)
from tests.support import make_settings

TOKEN = "xoxb-test-token-0001"
APP_TOKEN = "xapp-1-A0000000APP-test"
TEAM = "T0000000001"
BOT = "U0000000BOT"
ALICE = "U0ALICE0001"
BOB = "U0BOB000001"
CAROL = "U0CAROL0001"
GENERAL = "C0GENERAL01"
SECRET = "C0SECRET001"
GPT = "gpt-5.3-chat-latest"
FLASH = "gemini-3.1-flash-lite"

SPEC = SlackSpec()


def seed(slack: FakeSlack) -> None:
    slack.add_user(ALICE, "alice", display_name="Alice", real_name="Alice Archer")
    slack.add_user(BOB, "bob", display_name="", real_name="Bob Baker")
    slack.add_user(CAROL, "carol", display_name="Carol")
    slack.add_channel(GENERAL, "general", members=[ALICE, BOB, CAROL])
    slack.add_channel(SECRET, "secret", is_private=True, members=[BOB])


def slack_settings(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_key_prefix": key_prefix,
        "cometapi_base_url": cometapi.base_url,
        "slack_bot_token": TOKEN,
        "slack_signing_secret": slack.signing_secret,
        "slack_api_url": slack.api_url,
    }
    values.update(extra)
    return make_settings(**values)


@dataclass
class Harness:
    """A running Slack bot and what a test needs to drive and observe it."""

    slack: FakeSlack
    cometapi: FakeCometAPI
    bot: SlackBot
    base: str
    http: aiohttp.ClientSession
    stop: asyncio.Event  # set it to make run_slack shut down (as SIGTERM does)

    @property
    def url(self) -> str:
        return f"{self.base}/slack/events"

    @property
    def p(self) -> SlackPayloads:
        return self.slack.payloads

    async def post(self, request: SignedRequest) -> tuple[int, str]:
        async with self.http.post(self.url, data=request.body, headers=request.headers) as res:
            return res.status, await res.text()

    async def send(
        self,
        envelope: Mapping[str, Any],
        *,
        retry_num: int | None = None,
        timestamp: int | None = None,
    ) -> int:
        """Deliver an Events API envelope, signed; returns the HTTP status."""
        request = self.slack.signer.json_request(envelope, retry_num=retry_num, timestamp=timestamp)
        status, _ = await self.post(request)
        return status

    async def command(self, command: str, text: str, *, user: str, channel: str) -> str:
        fields = self.p.slash_command(command, text, user_id=user, channel_id=channel)
        status, body = await self.post(self.slack.signer.form_request(fields))
        assert status == 200, body
        return body

    async def form(self, payload: Mapping[str, Any]) -> int:
        form = SlackPayloads.shortcut_form(payload)
        status, _ = await self.post(self.slack.signer.form_request(form))
        return status

    async def settle(self) -> None:
        """Wait until the bot has finished everything it started."""
        await self.bot.engine.idle()

    def thread(self, channel: str, ts: str) -> list[ThreadMessage]:
        return self.slack.thread(channel, ts)

    def replies(self, channel: str, ts: str) -> list[ThreadMessage]:
        """The bot's messages in a thread."""
        return [m for m in self.slack.thread(channel, ts) if m.user == BOT]

    def failed_calls(self) -> list[Call]:
        return [c for c in self.slack.calls if not c.ok]

    def assert_clean(self, *, allowed: Mapping[str, set[str]] | None = None) -> None:
        """Nothing the bot sent was rejected (other than the faults a test injected), every
        argument is one the spec knows, and the fake model rejected nothing."""
        allowed = allowed or {}
        unexpected = [
            (c.method, c.status, c.error)
            for c in self.failed_calls()
            if c.error not in allowed.get(c.method, set())
        ]
        assert unexpected == []
        assert_args_in_spec(self.slack.calls)
        assert self.cometapi.rejected == []


def assert_args_in_spec(calls: list[Call]) -> None:
    """Every argument of a call to a method the public spec covers is one it lists."""
    for call in calls:
        if not SPEC.covers(call.method):
            continue
        known = {p["name"] for p in SPEC.operation(call.method).get("parameters", [])}
        extra = set(call.args) - known - {"token"}
        assert not extra, (call.method, extra)


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    slack: FakeSlack,
    cometapi: FakeCometAPI,
    *,
    update_interval: float = 0.05,
    stream_interval: float = 0.02,
) -> AsyncIterator[Harness]:
    """`run_slack(--http)` on a free port until the block ends; then a clean shutdown."""
    stop = asyncio.Event()
    started: asyncio.Future[tuple[SlackBot, int | None]] = (
        asyncio.get_running_loop().create_future()
    )

    def on_start(bot: SlackBot, port: int | None) -> None:
        started.set_result((bot, port))

    task = asyncio.create_task(
        run_slack(settings, http=True, host="127.0.0.1", port=0, stop=stop, started=on_start)
    )
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task in done and not started.done():
        task.result()
        raise AssertionError("run_slack returned before serving")
    bot, port = started.result()
    bot.update_interval = update_interval
    bot.stream_interval = stream_interval
    try:
        async with aiohttp.ClientSession() as http:
            yield Harness(slack, cometapi, bot, f"http://127.0.0.1:{port}", http, stop)
    finally:
        stop.set()
        assert await task == 0
        await assert_no_tasks_left()


async def assert_no_tasks_left() -> None:
    """The bot stopped cleanly: none of its tasks (answers, sinks, sockets) outlive it."""
    for _ in range(20):
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not left:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"tasks still running: {[t.get_name() for t in left]}")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=TOKEN) as fake:
        seed(fake)
        yield fake


@pytest.fixture
async def h(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> AsyncIterator[Harness]:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack)
    async with running(settings, slack, cometapi) as harness:
        yield harness


# --- the serving shell -------------------------------------------------------------------------


async def test_health_and_readiness(h: Harness) -> None:
    async with h.http.get(h.base + "/healthz") as res:
        assert (res.status, await res.json()) == (200, {"status": "ok"})
    async with h.http.get(h.base + "/readyz") as res:
        body = await res.json()
        assert res.status == 200
        assert body["status"] == "ready"
    assert [c.method for c in h.slack.calls] == ["auth.test"]


async def test_url_verification_challenge(h: Harness) -> None:
    challenge = h.p.url_verification()
    status, body = await h.post(h.slack.signer.json_request(challenge))
    assert status == 200
    assert challenge["challenge"] in body


async def test_forged_or_stale_signatures_are_refused_and_do_nothing(h: Harness) -> None:
    before = len(h.slack.calls)
    mention = h.slack.mention(GENERAL, ALICE, "hello")
    forged = SlackSigner("not-the-signing-secret").json_request(mention)
    assert (await h.post(forged))[0] == 401
    stale = h.slack.signer.json_request(mention, timestamp=int(time.time()) - 10 * 60)
    assert (await h.post(stale))[0] == 401
    unsigned = SignedRequest(forged.body, {"Content-Type": "application/json"})
    assert (await h.post(unsigned))[0] == 401
    fields = h.p.slash_command("/forget", "", user_id=ALICE, channel_id=GENERAL)
    bad_form = SlackSigner("wrong").form_request(fields)
    assert (await h.post(bad_form))[0] == 401
    await h.settle()
    assert h.slack.calls[before:] == []
    assert h.cometapi.requests == []
    assert len(h.replies(GENERAL, mention["event"]["ts"])) == 0


async def test_ack_is_immediate_even_when_the_model_is_slow(h: Harness) -> None:
    h.cometapi.script(GPT, Reply("thought about it", delay=1.5))
    mention = h.slack.mention(GENERAL, ALICE, "take your time")
    started = time.monotonic()
    status = await h.send(mention)
    elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed < 0.5  # Slack retries after 3 s
    await h.settle()
    [answer] = h.replies(GENERAL, mention["event"]["ts"])
    assert answer.text == "thought about it"
    h.assert_clean()


async def test_shutdown_waits_for_answers_in_flight(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack)
    cometapi.script(GPT, Reply("finished after shutdown began", delay=0.6))
    async with running(settings, slack, cometapi) as harness:
        mention = slack.mention(GENERAL, ALICE, "answer slowly")
        assert await harness.send(mention) == 200
        await asyncio.sleep(0.1)
        assert harness.bot.engine.in_flight == 1
    # The block ended: run_slack returned only after the answer was delivered.
    [answer] = [m for m in slack.thread(GENERAL, mention["event"]["ts"]) if m.user == BOT]
    assert answer.text == "finished after shutdown began"


async def test_events_during_shutdown_are_left_for_slack_to_retry(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack)
    cometapi.script(GPT, Reply("slow", delay=0.6))
    async with running(settings, slack, cometapi) as harness:
        first = slack.mention(GENERAL, ALICE, "first")
        await harness.send(first)
        await asyncio.sleep(0.05)
        harness.stop.set()  # SIGTERM
        await asyncio.sleep(0.05)
        late = slack.mention(GENERAL, BOB, "too late")
        assert await harness.send(late) == 503  # not acknowledged: Slack will retry it
        async with harness.http.get(harness.base + "/readyz") as res:
            assert res.status == 503
        async with harness.http.get(harness.base + "/healthz") as res:
            assert res.status == 200
    assert [m.text for m in slack.thread(GENERAL, first["event"]["ts"]) if m.user == BOT] == [
        "slow"
    ]
    assert [m for m in slack.thread(GENERAL, late["event"]["ts"]) if m.user == BOT] == []


async def test_with_health_port_the_events_port_serves_events_alone(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    health_port = _free_port()
    settings = slack_settings(redis_url, key_prefix, cometapi, slack, health_port=health_port)
    health = f"http://127.0.0.1:{health_port}"
    async with running(settings, slack, cometapi) as harness:
        for path in ("/metrics", "/healthz", "/readyz"):
            async with harness.http.get(harness.base + path) as res:
                assert res.status == 404, path
            async with harness.http.get(health + path) as res:
                assert res.status == 200, path
        async with harness.http.get(health + "/metrics") as res:
            assert "# TYPE teambot_replies_total counter" in await res.text()
        async with harness.http.post(health + "/slack/events", data=b"{}") as res:
            assert res.status == 404
        challenge = harness.p.url_verification()
        status, body = await harness.post(harness.slack.signer.json_request(challenge))
        assert (status, challenge["challenge"] in body) == (200, True)
        cometapi.script(GPT, Reply("slow", delay=0.6))
        assert await harness.send(slack.mention(GENERAL, ALICE, "answer slowly")) == 200
        await asyncio.sleep(0.05)
        harness.stop.set()  # SIGTERM: the health port says so while the answer finishes
        await asyncio.sleep(0.05)
        async with harness.http.get(health + "/readyz") as res:
            assert res.status == 503


async def test_health_port_and_events_port_must_differ(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    port = _free_port()
    settings = slack_settings(redis_url, key_prefix, cometapi, slack, health_port=port)
    with pytest.raises(ConfigError, match=f"HEALTH_PORT {port} is also the events port"):
        await run_slack(settings, http=True, host="127.0.0.1", port=port)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_busy_port_is_a_plain_error(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    settings = slack_settings(redis_url, key_prefix, cometapi, slack)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"Cannot listen on 127.0.0.1:{port}"):
            await run_slack(settings, http=True, host="127.0.0.1", port=port)


async def test_start_up_errors_are_plain_sentences(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    base = {"redis_url": redis_url, "redis_key_prefix": key_prefix}
    base["cometapi_base_url"] = cometapi.base_url
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN is not set"):
        await run_slack(make_settings(**base), http=True)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET is not set"):
        await run_slack(make_settings(**base, slack_bot_token=TOKEN), http=True)
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN is not set"):
        await run_slack(make_settings(**base, slack_bot_token=TOKEN))
    wrong = slack_settings(redis_url, key_prefix, cometapi, slack, slack_bot_token="xoxb-wrong")
    with pytest.raises(ConfigError, match=r"Slack refused SLACK_BOT_TOKEN \(invalid_auth\)"):
        await run_slack(wrong, http=True, host="127.0.0.1", port=0)


# --- Socket Mode ---------------------------------------------------------------------------------


class SocketModeStandIn:
    """Slack's side of Socket Mode on loopback: `apps.connections.open` (app token only)
    hands out a ws:// URL whose server says hello, pushes envelopes and records acks; every
    other Web API call is passed through to the fake Slack."""

    def __init__(self, slack: FakeSlack, app_token: str) -> None:
        self.slack = slack
        self.app_token = app_token
        self.acks: list[dict[str, Any]] = []
        self.acked = asyncio.Event()
        self.opened = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._connected = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> SocketModeStandIn:
        app = web.Application()
        app.router.add_post("/api/apps.connections.open", self._open)
        app.router.add_route("*", "/api/{method}", self._forward)
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _open(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.app_token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        self.opened += 1
        url = self.base.replace("http://", "ws://") + "/link"
        return web.json_response({"ok": True, "url": url})

    async def _forward(self, request: web.Request) -> web.Response:
        target = self.slack.api_url + request.match_info["method"]
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method,
                target,
                params=request.query,
                data=await request.read(),
                headers=headers,
            ) as res,
        ):
            body = await res.read()
            return web.Response(body=body, status=res.status, content_type=res.content_type)

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {}})
        self._connected.set()
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.acks.append(json.loads(message.data))
                self.acked.set()
        return ws

    async def push(self, payload: Mapping[str, Any], kind: str = "events_api") -> str:
        await asyncio.wait_for(self._connected.wait(), 5)
        envelope_id = f"env-{len(self.acks)}-{time.monotonic_ns()}"
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "accepts_response_payload": False,
                "retry_attempt": 0,
                "retry_reason": "",
                "payload": dict(payload),
            }
        )
        return envelope_id


async def test_socket_mode_connects_and_answers_without_a_public_url(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    async with SocketModeStandIn(slack, APP_TOKEN) as stand_in:
        settings = slack_settings(
            redis_url,
            key_prefix,
            cometapi,
            slack,
            slack_api_url=stand_in.base + "/api/",
            slack_app_token=APP_TOKEN,
            slack_signing_secret=None,
        )
        stop = asyncio.Event()
        ready: asyncio.Future[SlackBot] = asyncio.get_running_loop().create_future()

        def on_start(bot: SlackBot, port: int | None) -> None:
            assert port is None
            ready.set_result(bot)

        task = asyncio.create_task(run_slack(settings, stop=stop, started=on_start))
        try:
            bot = await asyncio.wait_for(asyncio.shield(ready), 10)
            mention = slack.mention(GENERAL, ALICE, "over the socket")
            envelope_id = await stand_in.push(mention)
            await asyncio.wait_for(stand_in.acked.wait(), 5)
            assert stand_in.acks[0]["envelope_id"] == envelope_id
            await bot.engine.idle()
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 10) == 0
    await assert_no_tasks_left()
    assert stand_in.opened == 1
    [answer] = [m for m in slack.thread(GENERAL, mention["event"]["ts"]) if m.user == BOT]
    assert answer.text == "Echo: [Alice] over the socket"
    assert answer.streamed


async def test_socket_mode_refuses_a_bad_app_token_at_start(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI, slack: FakeSlack
) -> None:
    async with SocketModeStandIn(slack, APP_TOKEN) as stand_in:
        settings = slack_settings(
            redis_url,
            key_prefix,
            cometapi,
            slack,
            slack_api_url=stand_in.base + "/api/",
            slack_app_token="xapp-wrong",
        )
        with pytest.raises(ConfigError, match=r"Slack refused SLACK_APP_TOKEN \(invalid_auth\)"):
            await run_slack(settings)


async def test_secrets_stay_out_of_the_logs(
    redis_url: str,
    key_prefix: str,
    cometapi: FakeCometAPI,
    slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = slack_settings(redis_url, key_prefix, cometapi, slack)
    slack.refuse_streaming()
    async with running(settings, slack, cometapi) as harness:
        mention = slack.mention(GENERAL, ALICE, "hello")
        await harness.send(mention)
        await harness.settle()
    assert harness.replies(GENERAL, mention["event"]["ts"])
    for secret in (TOKEN, slack.signing_secret):
        assert secret not in caplog.text
    assert TOKEN not in repr(settings)
    assert TOKEN not in repr(harness.bot) and TOKEN not in repr(vars(harness.bot))
    assert "entering paragraph" not in caplog.text  # the Markdown parser's chatter


async def test_start_up_is_quiet_with_tokens_in_the_environment(
    redis_url: str,
    key_prefix: str,
    cometapi: FakeCometAPI,
    slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Deployments set SLACK_BOT_TOKEN / SLACK_SIGNING_SECRET as environment variables,
    # which Bolt reads on its own too.
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", slack.signing_secret)
    settings = slack_settings(redis_url, key_prefix, cometapi, slack)
    async with running(settings, slack, cometapi):
        pass
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
