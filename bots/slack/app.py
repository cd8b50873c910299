"""`teambot slack`: the Bolt app, its HTTP endpoint or Socket Mode connection, and shutdown.

* Socket Mode (`SLACK_APP_TOKEN` set, no `--http`): no public URL needed.
* HTTP (`--http`): `POST /slack/events` takes the Events API, slash commands and
  interactivity, each checked against `SLACK_SIGNING_SECRET` (forged or stale: 401) on
  the events port (`--port`, default 3000). `GET /healthz` says the process is up,
  `GET /readyz` that Redis answers and Slack accepted the token, `GET /metrics` is the
  Prometheus page: on `HEALTH_PORT` when it is set (as in deploy/), so the public port
  serves `/slack/events` alone; without it, on the events port too (local use only).

Listeners only hand work to `SlackBot`, which starts it in the background, so every
request is acknowledged at once (`process_before_response=True` makes Bolt answer when the
listener returns, and keeps Bolt from starting untracked tasks of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.health import HealthServer, health_routes
from bots.slack.bot import SlackBot
from bots.slack.format import (
    APPROVE_ACTION,
    DENY_ACTION,
    FEEDBACK_ACTION,
    FEEDBACK_REASON_VIEW,
    SHARE_ACTION,
    safe_mrkdwn,
)
from bots.slack.history import Identity
from bots.slack.panels import SETTINGS_VIEW
from bots.slack.summaries import SUMMARIZE_SHORTCUT, parse_window
from core import ConfigError, Engine, Settings, metrics

__all__ = [
    "SlackHttpServer",
    "build_bolt_app",
    "make_client",
    "run_slack",
    "whoami",
]

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
# The signature headers as Slack sends them; anything else is refused before the SDK sees it.
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}", re.ASCII)
EVENTS_PORT = 3000  # HTTP mode's events port when --port is not given
MAX_BODY_BYTES = 2 * 1024 * 1024  # a larger request body is refused with 413


def retry_handlers() -> list[AsyncRetryHandler]:
    """Connection resets, HTTP 429 (waits `Retry-After`), HTTP 500/503."""
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=5),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]


def make_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The process's one Web API client: bot token, `SLACK_API_URL`, retry handlers."""
    settings.require("slack_bot_token")
    assert settings.slack_bot_token is not None
    base_url = settings.slack_api_url
    if not base_url.endswith("/"):
        base_url += "/"
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=base_url,
        session=session,
        timeout=30,
        retry_handlers=retry_handlers(),
    )


async def whoami(client: AsyncWebClient, bot_name: str) -> Identity:
    """`auth.test`: the bot's ids; a refused token becomes a plain ConfigError."""
    try:
        response = await client.auth_test()
    except SlackApiError as error:
        code = error.response.get("error")
        raise ConfigError(
            f"Slack refused SLACK_BOT_TOKEN ({code}): check that it is the app's Bot User "
            "OAuth Token (xoxb-...) and that the app is installed in the workspace."
        ) from None
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
        raise ConfigError(f"Slack's Web API at SLACK_API_URL is unreachable: {error}.") from None
    return Identity(
        team_id=str(response.get("team_id") or ""),
        bot_user_id=str(response.get("user_id") or ""),
        bot_id=str(response.get("bot_id") or ""),
        name=str(response.get("user") or bot_name),
    )


def build_bolt_app(bot: SlackBot, *, signing_secret: str | None) -> AsyncApp:
    """The Bolt app: signature checks (HTTP mode), self-event filtering, and listeners that
    hand everything to `bot` and return."""
    identity = bot.identity

    async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        # The identity is known from auth.test at start-up: no Web API call per request,
        # so the first event is acknowledged as fast as the others.
        return AuthorizeResult(
            enterprise_id=enterprise_id,
            team_id=team_id or identity.team_id,
            bot_user_id=identity.bot_user_id,
            bot_id=identity.bot_id,
            bot_token=bot.client.token,
        )

    bolt_logger = logging.getLogger("teambot.slack.bolt")
    # Given the process's client and `authorize`, Bolt warns that a token (the client's, or
    # SLACK_BOT_TOKEN read from the environment) is unused: expected here, and confusing.
    unused_token = _DropMessages("`token` will be unused", "will be ignored")
    bolt_logger.addFilter(unused_token)
    try:
        app = AsyncApp(
            client=bot.client,
            authorize=authorize,
            signing_secret=signing_secret or "",
            request_verification_enabled=signing_secret is not None,
            process_before_response=True,
            attaching_conversation_kwargs_enabled=False,
            logger=bolt_logger,
        )
    finally:
        bolt_logger.removeFilter(unused_token)

    @app.middleware
    async def count(body: dict[str, Any], next: Callable[[], Awaitable[Any]]) -> Any:
        metrics.EVENTS.labels("slack", _kind(body)).inc()
        return await next()

    def team(body: dict[str, Any], context: dict[str, Any]) -> str:
        found = context.get("team_id") or body.get("team_id") or (body.get("team") or {}).get("id")
        return str(found or bot.identity.team_id)

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await bot.on_app_mention(event, team(body, context))

    @app.event("message")
    async def on_message(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await bot.on_message(event, team(body, context))

    @app.event("assistant_thread_started")
    async def on_thread_started(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        bot.spawn(
            bot.agent.on_assistant_thread_started(event, team(body, context)),
            name="slack:agent-thread",
        )

    @app.event("assistant_thread_context_changed")
    async def on_context_changed(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await bot.agent.on_assistant_context_changed(event, team(body, context))

    @app.event("agent_session_stopped")
    async def on_session_stopped(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await bot.on_session_stopped(event, team(body, context))

    @app.action(FEEDBACK_ACTION)
    async def on_feedback(
        ack: Callable[..., Awaitable[None]],
        body: dict[str, Any],
        action: dict[str, Any],
        context: Any,
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        bot.spawn(
            bot.on_feedback(
                team(body, context),
                user,
                str(action.get("value") or ""),
                body.get("trigger_id"),
            ),
            name="slack:feedback",
        )

    @app.view(FEEDBACK_REASON_VIEW)
    async def on_feedback_reason(
        ack: Callable[..., Awaitable[None]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        bot.spawn(bot.on_feedback_reason(user, view), name="slack:feedback-reason")

    @app.command("/summarize")
    async def on_summarize(
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        try:
            window = parse_window(str(command.get("text") or ""))
        except ValueError as error:
            await ack(text=safe_mrkdwn(str(error)), response_type="ephemeral")
            return
        note = await bot.intake.command_limit(
            "slack", team(command, context), str(command.get("user_id") or "")
        )
        if note is not None:
            await ack(text=safe_mrkdwn(note), response_type="ephemeral")
            return
        where = f"<#{window.channel}>" if window.channel else "this conversation"
        await ack(text=safe_mrkdwn(f"Reading {where} ({window.label})…"), response_type="ephemeral")
        bot.spawn(
            bot.summaries.summarize_channel(
                team(command, context),
                str(command["user_id"]),
                str(command["channel_id"]),
                window,
                respond,
                asked_from_name=str(command.get("channel_name") or ""),
            ),
            name=f"slack:/summarize:{command['channel_id']}",
            respond=respond,
        )

    @app.command("/recap")
    async def on_recap(
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        await ack()

        async def recap() -> None:
            reply = await bot.knowledge.recap(
                team(command, context),
                str(command["user_id"]),
                str(command["channel_id"]),
                str(command.get("text") or ""),
            )
            await respond(text=reply, response_type="ephemeral")

        bot.spawn(recap(), name=f"slack:/recap:{command['channel_id']}", respond=respond)

    @app.command("/teambot")
    async def on_teambot(
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        words = str(command.get("text") or "").lower().split()
        if not words or words[0] != "settings":
            await ack(
                text="Usage: `/teambot settings` (this channel) or "
                "`/teambot settings workspace` (admins).",
                response_type="ephemeral",
            )
            return
        await ack()
        bot.spawn(
            bot.admin.open_settings(
                team(command, context),
                str(command["user_id"]),
                str(command.get("channel_id") or ""),
                str(command.get("trigger_id") or ""),
                workspace="workspace" in words[1:],
            ),
            name="slack:/teambot-settings",
            respond=respond,
        )

    @app.view(SETTINGS_VIEW)
    async def on_settings_saved(
        ack: Callable[..., Awaitable[None]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        user = str((body.get("user") or {}).get("id") or "")
        errors = await bot.admin.save_settings(user, view)
        if errors:
            await ack(response_action="errors", errors=errors)
        else:
            await ack()

    @app.event("app_home_opened")
    async def on_home(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        bot.spawn(
            bot.admin.publish_home(team(body, context), str(event["user"])), name="slack:home"
        )

    @app.command("/forget")
    async def on_forget(
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        await ack()
        bot.spawn(
            bot.forget_channel(
                team(command, context),
                str(command.get("user_id") or ""),
                str(command["channel_id"]),
                respond,
            ),
            name=f"slack:/forget:{command['channel_id']}",
            respond=respond,
        )

    @app.shortcut(SUMMARIZE_SHORTCUT)
    async def on_shortcut(
        ack: Callable[..., Awaitable[None]],
        shortcut: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
        context: Any,
    ) -> None:
        await ack()
        message = shortcut.get("message") or {}
        channel = str((shortcut.get("channel") or {}).get("id") or "")
        root = str(message.get("thread_ts") or message.get("ts") or shortcut.get("message_ts"))
        user = str((shortcut.get("user") or {}).get("id") or "") or None
        bot.spawn(
            bot.summaries.summarize_thread(
                team(shortcut, context), channel, root, user=user, respond=respond
            ),
            name=f"slack:shortcut:{channel}:{root}",
            respond=respond,
        )

    def decision_listener(approve: bool) -> Callable[..., Awaitable[None]]:
        # Bolt passes listeners only the arguments it knows by name: `approve` is bound here.
        async def on_decision(
            ack: Callable[..., Awaitable[None]],
            body: dict[str, Any],
            action: dict[str, Any],
            respond: Callable[..., Awaitable[Any]],
        ) -> None:
            await ack()
            user = str((body.get("user") or {}).get("id") or "")
            bot.spawn(
                bot.on_approval(str(action.get("value") or ""), user, respond, approve=approve),
                name="slack:approval",
                respond=respond,
            )

        return on_decision

    app.action(APPROVE_ACTION)(decision_listener(True))
    app.action(DENY_ACTION)(decision_listener(False))

    @app.action(SHARE_ACTION)
    async def on_share(
        ack: Callable[..., Awaitable[None]],
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id") or "")
        bot.spawn(
            bot.summaries.share_summary(str(action.get("value") or ""), user, respond),
            name="slack:share-summary",
            respond=respond,
        )

    return app


def well_formed_body(body: str, content_type: str) -> bool:
    """The outer shape of what Slack posts: a JSON object whose `type` is a string and
    whose `event`, if any, is an object; or a form whose `payload`, if any, is a JSON
    object. Checked before Bolt sees the request (Bolt's middleware assumes it). JSON
    nested deeper than the parser's recursion limit is malformed too."""
    try:
        if content_type == "application/json":
            data = json.loads(body)
            return (
                isinstance(data, dict)
                and isinstance(data.get("type"), str)
                and isinstance(data.get("event", {}), dict)
            )
        fields = urllib.parse.parse_qs(body, strict_parsing=bool(body))
        if "payload" in fields:
            payload = json.loads(fields["payload"][0])
            return isinstance(payload, dict) and isinstance(payload.get("type"), str)
        return "command" in fields or "ssl_check" in fields
    except (ValueError, RecursionError):
        return False


def _kind(body: dict[str, Any]) -> str:
    """A short label for what Slack sent: the event type, `command`, `shortcut`, ..."""
    kind = str(body.get("type") or ("command" if "command" in body else "other"))
    if kind == "event_callback":
        event = body.get("event") or {}
        kind = str(event.get("subtype") or event.get("type") or kind)
    return kind[:40]


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


class SlackHttpServer:
    """aiohttp server for HTTP mode: `/slack/events`, and with `with_health` also
    `/healthz`, `/readyz` and `/metrics` (only when no `HEALTH_PORT` serves those; any
    other path is 404).

    Every request to `/slack/events` is checked against the signing secret before its
    body is parsed: forged, stale or unsigned ones, and signature headers that are not
    Slack's (non-ASCII, malformed, repeated), get 401 and nothing else happens; a signed
    body that is not JSON or a form Slack sends (or nests deeper than the parser goes) gets
    400; over 2 MB, 413. Bad input is never a 500."""

    def __init__(
        self,
        app: AsyncApp,
        bot: SlackBot,
        *,
        signing_secret: str,
        path: str = EVENTS_PATH,
        with_health: bool = True,
    ) -> None:
        self.app = app
        self.bot = bot
        self.verifier = SignatureVerifier(signing_secret)
        self.draining = False
        self.web = web.Application(client_max_size=MAX_BODY_BYTES)
        self.web.add_routes([web.post(path, self._events)])
        if with_health:
            self.web.add_routes(health_routes(bot.engine, draining=lambda: self.draining))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _events(self, request: web.Request) -> web.Response:
        if self.draining:
            # Not acknowledged, so Slack delivers it again (to another replica, or to this
            # one once it is back) rather than losing it.
            return web.json_response({"error": "shutting down"}, status=503)
        started = time.perf_counter()
        raw = await request.read()
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Slack signs UTF-8 text: a body that is not cannot pass the signature check.
            return web.json_response({"error": "unverifiable request body"}, status=401)
        if not self._signed(body, request):
            return web.json_response({"error": "invalid request signature"}, status=401)
        if not well_formed_body(body, request.content_type):
            log.info("malformed Slack request refused")
            return web.json_response({"error": "malformed request"}, status=400)
        try:
            bolt_request = await to_bolt_request(request)
            bolt_response = await self.app.async_dispatch(bolt_request)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            log.info("malformed Slack request refused: %s", type(error).__name__)
            return web.json_response({"error": "malformed request"}, status=400)
        if bolt_response.status >= 500:
            # Our listeners only hand work over and cannot fail; a 5xx from Bolt means a
            # signed request it could not make sense of (e.g. an event that is null).
            log.info("malformed Slack request refused (Bolt answered %d)", bolt_response.status)
            return web.json_response({"error": "malformed request"}, status=400)
        metrics.ACK_SECONDS.labels("slack").observe(time.perf_counter() - started)
        return await to_aiohttp_response(bolt_response)

    def _signed(self, body: str, request: web.Request) -> bool:
        """The signature headers are exactly as Slack sends them (one of each, ASCII: a
        decimal timestamp, `v0=` and 64 hex digits) and the signature matches. Anything
        else is refused here: the SDK's check raises on non-ASCII headers (a 500)."""
        timestamps = request.headers.getall("X-Slack-Request-Timestamp", [])
        signatures = request.headers.getall("X-Slack-Signature", [])
        if len(timestamps) != 1 or len(signatures) != 1:
            return False
        [timestamp], [signature] = timestamps, signatures
        if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
            return False
        try:
            return self.verifier.is_valid(body, timestamp, signature)
        except (ValueError, TypeError):  # not expected after the checks above
            return False

    async def start(self, host: str, port: int) -> int:
        runner = web.AppRunner(self.web, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        return self.port

    async def stop(self) -> None:
        self.draining = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def run_slack(
    settings: Settings,
    *,
    http: bool = False,
    host: str = "0.0.0.0",
    port: int | None = None,
    stop: asyncio.Event | None = None,
    started: Callable[[SlackBot, int | None], None] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or `stop` is set); then wait for answers in flight.

    HTTP mode serves `/slack/events` on `port` (default 3000), and `/healthz`, `/readyz`
    and `/metrics` on `HEALTH_PORT`; without `HEALTH_PORT`, on `port` as well (for local
    use: a public port should not serve metrics). Socket Mode serves the last three on
    `port` or `HEALTH_PORT` when either is set. `started(bot, port)` is called once
    serving, with the events port in HTTP mode (tests use it with `stop`)."""
    settings.require("slack_bot_token")
    if http:
        settings.require("slack_signing_secret")
    elif settings.slack_app_token is None or not settings.slack_app_token.get_secret_value():
        raise ConfigError(
            "SLACK_APP_TOKEN is not set: set it (xapp-..., with connections:write) to use "
            "Socket Mode, or run `teambot slack --http` with SLACK_SIGNING_SECRET."
        )
    stop = stop or asyncio.Event()
    # The Markdown parser logs every block rule it tries at DEBUG: keep LOG_LEVEL=DEBUG useful.
    logging.getLogger("markdown_it").setLevel(max(logging.INFO, logging.getLogger().level))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)

    engine = await Engine.start(settings)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        client = make_client(settings, session)
        identity = await whoami(client, settings.bot_name)
        bot = SlackBot(settings, engine, client, identity)
        if http:
            assert settings.slack_signing_secret is not None
            app = build_bolt_app(
                bot, signing_secret=settings.slack_signing_secret.get_secret_value()
            )
            wanted = port if port is not None else EVENTS_PORT
            health_port = settings.health_port
            if health_port is not None and health_port == wanted:
                raise ConfigError(
                    f"HEALTH_PORT {health_port} is also the events port: give --port "
                    "another one (the events port must not serve /metrics)."
                )
            server = SlackHttpServer(
                app,
                bot,
                signing_secret=settings.slack_signing_secret.get_secret_value(),
                with_health=health_port is None,
            )
            health = HealthServer(engine, draining=lambda: server.draining)
            try:
                bound = await server.start(host, wanted)
                if health_port is not None:
                    health_port = await health.start(host, health_port)
            except OSError as error:
                await server.stop()
                failed = wanted if server.port is None else health_port
                raise ConfigError(f"Cannot listen on {host}:{failed}: {error.strerror}.") from None
            log.info("serving Slack events on http://%s:%d%s", host, bound, EVENTS_PATH)
            if health_port is not None:
                log.info("serving /healthz, /readyz, /metrics on port %d", health_port)
            if started is not None:
                started(bot, bound)
            await stop.wait()
            # New events get 503 (Slack retries them), /readyz says so; answers in flight
            # are finished before the ports close.
            server.draining = True
            await bot.shutdown(settings.shutdown_grace_seconds)
            await server.stop()
            await health.stop()
        else:
            assert settings.slack_app_token is not None
            app = build_bolt_app(bot, signing_secret=None)
            handler = await connect_socket_mode(
                app, client, settings.slack_app_token.get_secret_value()
            )
            log.info("connected to Slack in Socket Mode as %s", identity.name)
            health = HealthServer(engine)
            health_port = port or settings.health_port
            if health_port is not None:
                try:
                    health_port = await health.start(host, health_port)
                except OSError as error:
                    await handler.close_async()  # type: ignore[no-untyped-call]
                    raise ConfigError(
                        f"Cannot listen on {host}:{health_port}: {error.strerror}."
                    ) from None
                log.info("serving /healthz, /readyz, /metrics on port %d", health_port)
            if started is not None:
                started(bot, health_port)
            try:
                await stop.wait()
            finally:
                # Stop taking events first, then let the answers in flight finish.
                await handler.close_async()  # type: ignore[no-untyped-call]
                await bot.shutdown(settings.shutdown_grace_seconds)
                await health.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
        await session.close()
        await engine.close()
    return 0


async def connect_socket_mode(
    app: AsyncApp, client: AsyncWebClient, app_token: str
) -> AsyncSocketModeHandler:
    """Open the Socket Mode connection. The first WebSocket URL is asked for here, so a bad
    app token is a clear error at start-up rather than endless reconnect attempts."""
    try:
        opened = await client.apps_connections_open(app_token=app_token)
    except SlackApiError as error:
        code = error.response.get("error")
        raise ConfigError(
            f"Slack refused SLACK_APP_TOKEN ({code}): it must be an app-level token "
            "(xapp-...) with the connections:write scope, and Socket Mode must be on."
        ) from None
    handler = AsyncSocketModeHandler(app, app_token, web_client=client)
    handler.client.wss_uri = str(opened["url"])
    await handler.connect_async()  # type: ignore[no-untyped-call]
    return handler
