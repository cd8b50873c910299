"""`/healthz`, `/readyz` and `/metrics` for every mode, on aiohttp.

Slack's HTTP mode adds these routes to its events server; Socket Mode and Discord serve
them on their own port (`--port`, or `HEALTH_PORT`)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from core import metrics
from core.engine import Engine

__all__ = ["HealthServer", "health_routes"]


def health_routes(
    engine: Engine, *, draining: Callable[[], bool] = lambda: False
) -> list[web.RouteDef]:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if draining() or not engine.accepting:
            return web.json_response({"status": "shutting down"}, status=503)
        if not await engine.ready():
            return web.json_response({"status": "memory store unavailable"}, status=503)
        return web.json_response({"status": "ready", "in_flight": engine.in_flight})

    async def metrics_page(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = metrics.CONTENT_TYPE
        return response

    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_page),
    ]


class HealthServer:
    """A small server with only the health routes (Socket Mode, Discord)."""

    def __init__(self, engine: Engine, *, draining: Callable[[], bool] = lambda: False) -> None:
        self.app = web.Application()
        self.app.add_routes(health_routes(engine, draining=draining))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
