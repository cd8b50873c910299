"""`teambot slack`: the Bolt app, its HTTP endpoint or Socket Mode connection, and shutdown.

* Socket Mode (`SLACK_APP_TOKEN` set, no `--http`): no public URL needed.
* HTTP (`--http`): `POST /slack/events` takes the Events API, slash commands and
  interactivity, each checked against `SLACK_SIGNING_SECRET` (forged or stale: 401) on
  the events port (`--port`, default 3000). `GET /healthz` says the process is up,
  `GET /readyz` that Redis answers and Slack accepted the token, `GET /metrics` is the
  Prometheus page: on `HEALTH_PORT` when it is set (as in deploy/), so the public port
  serves `/slack/events` alone; without it, on the events port too (local use only).

Listeners (`listeners`) only hand work to `SlackBot`, which starts it in the background,
so every request is acknowledged at once (`process_before_response=True` makes Bolt answer
when the listener returns, and keeps Bolt from starting untracked tasks of its own). The
HTTP mode's server is `http.SlackHttpServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bots.health import HealthServer
from bots.slack.bot import SlackBot
from bots.slack.history import Identity
from bots.slack.http import EVENTS_PATH, SlackHttpServer
from bots.slack.listeners import build_bolt_app
from core import ConfigError, Engine, Settings

# `build_bolt_app` and `SlackHttpServer` live in `listeners` and `http`; they stay
# importable from here.
__all__ = [
    "SlackHttpServer",
    "build_bolt_app",
    "make_client",
    "run_slack",
    "whoami",
]

log = logging.getLogger(__name__)

EVENTS_PORT = 3000  # HTTP mode's events port when --port is not given


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
