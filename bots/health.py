"""`/healthz`, `/readyz` and `/metrics` for every mode, on aiohttp.

They are served on a port of their own (`HEALTH_PORT`; for Socket Mode and Discord also
`--port`), never on Slack's public events port, except in Slack HTTP mode without
`HEALTH_PORT` (local use), where the events server adds these routes.

* `/healthz`: the process and its event loop answer (liveness).
* `/readyz`: it can serve: not shutting down, Redis answers, and the adapter's own
  checks pass (e.g. every Discord shard connected). 503 with the problems otherwise.
* `/metrics`: Prometheus text format.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from core import Engine, metrics

__all__ = ["HealthServer", "health_routes", "serve"]

Checks = Callable[[], list[str]]


def health_routes(
    engine: Engine,
    *,
    draining: Callable[[], bool] = lambda: False,
    checks: Checks | None = None,
) -> list[web.RouteDef]:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        problems: list[str] = []
        if draining() or not engine.accepting:
            problems.append("shutting down")
        if checks is not None:
            problems.extend(checks())
        if not await engine.ready():
            problems.append("memory store: not answering")
        body = {
            "status": "not ready" if problems else "ready",
            "problems": problems,
            "in_flight": engine.in_flight,
        }
        return web.json_response(body, status=503 if problems else 200)

    async def metrics_page(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = metrics.CONTENT_TYPE
        return response

    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_page),
    ]


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve `app` on `host:port` (0: a free port); the runner, cleaned up if binding
    fails. `runner.addresses[0][1]` is the port it got."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class HealthServer:
    """A small server with only the health routes, on `HEALTH_PORT` (or `--port` for Slack
    Socket Mode and Discord)."""

    def __init__(
        self,
        engine: Engine,
        *,
        draining: Callable[[], bool] = lambda: False,
        checks: Checks | None = None,
    ) -> None:
        self.app = web.Application()
        self.app.add_routes(health_routes(engine, draining=draining, checks=checks))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        self._runner = await serve(self.app, host, port)
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
