"""/healthz, /readyz and /metrics as a load balancer and Prometheus see them."""

from __future__ import annotations

import httpx

from bots.health import HealthServer
from core.engine import Engine


async def test_health_ready_and_metrics(engine: Engine) -> None:
    server = HealthServer(engine)
    port = await server.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "ready"
            page = await client.get("/metrics")
            assert page.headers["content-type"].startswith("text/plain")
            assert "# TYPE teambot_replies_total counter" in page.text
            await engine.drain(0)
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await server.stop()


async def test_not_ready_when_redis_is_gone(engine: Engine) -> None:
    server = HealthServer(engine)
    port = await server.start("127.0.0.1", 0)
    await engine.store.redis.aclose()
    engine.store.redis.connection_pool.connection_kwargs.update(port=1, host="127.0.0.1")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["problems"] == ["memory store: not answering"]
    finally:
        await server.stop()
