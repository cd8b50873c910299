"""Facts for `teambot doctor`: what the Redis server is and keeps, and whether each model
target answers. Data only; the doctor turns it into advice.

Nothing here retries or falls back: a diagnosis wants the first failure as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from core.providers.base import ModelRequest, ProviderError, Target, TextDelta
from core.router import Router
from core.settings import Settings
from core.types import ChatMessage

if TYPE_CHECKING:
    from core.tools.mcp_servers.manager import ServerReport

__all__ = [
    "GatewayReport",
    "ProbeResult",
    "RedisReport",
    "inspect_mcp",
    "inspect_redis",
    "list_models",
    "probe_targets",
    "redis_location",
]


@dataclass(frozen=True, slots=True)
class RedisReport:
    location: str  # host:port/db or a socket path; never the password
    error: str | None = None
    version: str | None = None
    aof: bool = False
    snapshots: bool | None = None  # None: the server does not let us read its save config
    eviction: str | None = None  # maxmemory-policy


def redis_location(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    db = parts.path.strip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}" + (
        " (TLS)" if parts.scheme == "rediss" else ""
    )


async def inspect_redis(url: str, wait: float = 5.0) -> RedisReport:
    """Ping the server at `url` once (no retries) and read its version, persistence and
    eviction policy."""
    location = redis_location(url)
    client = Redis.from_url(
        url,
        socket_connect_timeout=wait,
        socket_timeout=wait,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    try:
        async with asyncio.timeout(wait * 2):
            await client.ping()
            server = await client.info("server")
            persistence = await client.info("persistence")
            memory = await client.info("memory")
            snapshots: bool | None
            try:
                save = await client.config_get("save")
                snapshots = bool(str(save.get("save", "")).strip())
            except ResponseError:  # CONFIG is often disabled on managed Redis
                snapshots = None
    except (RedisError, OSError, TimeoutError) as error:
        detail = str(error) or type(error).__name__
        return RedisReport(location, error=f"{type(error).__name__}: {detail}")
    finally:
        await client.aclose()
    return RedisReport(
        location,
        version=str(server.get("redis_version") or "unknown"),
        aof=str(persistence.get("aof_enabled", "0")) == "1",
        snapshots=snapshots,
        eviction=str(memory.get("maxmemory_policy") or "") or None,
    )


@dataclass(frozen=True, slots=True)
class GatewayReport:
    url: str
    status: int | None = None  # None: no HTTP answer at all
    models: frozenset[str] = frozenset()
    error: str | None = None


async def list_models(settings: Settings, client: httpx.AsyncClient) -> GatewayReport:
    """GET /v1/models: the gateway answers, takes the key, and lists its models (free)."""
    url = f"{settings.base_url}/v1/models"
    key = settings.cometapi_api_key.get_secret_value() if settings.cometapi_api_key else ""
    try:
        response = await client.get(url, headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as error:
        return GatewayReport(url, error=f"{type(error).__name__}: {error}".rstrip(": "))
    if response.status_code != 200:
        return GatewayReport(url, response.status_code, error=response.text[:200])
    try:
        data = response.json().get("data", [])
        ids = frozenset(str(item.get("id")) for item in data if isinstance(item, dict))
    except (ValueError, AttributeError):
        return GatewayReport(url, 200, error="the answer is not a model list")
    return GatewayReport(url, 200, ids)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    target: Target
    routes: tuple[str, ...]  # "dialogue", "summary": the routes whose chain holds it
    first: tuple[str, ...] = ()  # the routes it is the first choice of
    seconds: float = 0.0
    error: ProviderError | None = None
    text: str = ""
    extra: dict[str, str] = field(default_factory=dict)


async def _probe(
    router: Router, target: Target, routes: tuple[str, ...], first: tuple[str, ...]
) -> ProbeResult:
    request = ModelRequest(
        system="Answer with one word.",
        messages=[ChatMessage(role="user", content="Say OK.")],
        max_output_tokens=1,
        thinking_level="minimal" if target.protocol == "gemini" else None,
    )
    provider = router.providers[target.protocol]
    started = time.monotonic()
    text = ""
    try:
        async for event in provider.stream(target, request):
            if isinstance(event, TextDelta):
                text += event.text
    except ProviderError as error:
        return ProbeResult(target, routes, first, time.monotonic() - started, error)
    return ProbeResult(target, routes, first, time.monotonic() - started, text=text)


async def probe_targets(settings: Settings, client: httpx.AsyncClient) -> list[ProbeResult]:
    """A one-token completion on every distinct target of the dialogue and summary routes
    (each a fraction of a cent), concurrently; in route order."""
    router = Router.from_settings(settings, client)
    order: list[Target] = []
    routes: dict[str, list[str]] = {}
    first: dict[str, list[str]] = {}
    for route, targets in router.routes.items():
        for index, target in enumerate(targets):
            if target.name not in routes:
                order.append(target)
            routes.setdefault(target.name, []).append(route)
            if index == 0:
                first.setdefault(target.name, []).append(route)
    return list(
        await asyncio.gather(
            *(
                _probe(
                    router,
                    target,
                    tuple(routes[target.name]),
                    tuple(first.get(target.name, ())),
                )
                for target in order
            )
        )
    )


async def inspect_mcp(settings: Settings) -> list[ServerReport]:
    """Start the MCP servers of MCP_CONFIG, wait until each connected or failed once, and
    report them (name, transport, status, tools). ConfigError for a bad file; [] without
    MCP_CONFIG. The SDK is imported only here, when MCP is configured."""
    if settings.mcp_config is None:
        return []
    from core.tools.mcp_servers import McpManager

    manager = McpManager.from_settings(settings)
    if manager is None:
        return []
    manager.start()
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.mcp_connect_timeout + 1):
                await manager.settle()
        return manager.report()
    finally:
        await manager.stop()
