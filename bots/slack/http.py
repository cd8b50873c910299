"""HTTP mode's server: `POST /slack/events`, checked before Bolt sees it, and the health
endpoints when no `HEALTH_PORT` serves them (see `SlackHttpServer`)."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier

from bots.health import health_routes, serve
from bots.slack.bot import SlackBot
from core import metrics

__all__ = ["EVENTS_PATH", "MAX_BODY_BYTES", "SlackHttpServer", "well_formed_body"]

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
# The signature headers as Slack sends them; anything else is refused before the SDK sees it.
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}", re.ASCII)
MAX_BODY_BYTES = 2 * 1024 * 1024  # a larger request body is refused with 413


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
        self._runner = await serve(self.web, host, port)
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        self.draining = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
