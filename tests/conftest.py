"""Shared fixtures: a real Redis (started here when none answers), settings isolated from
the developer's environment, and an engine wired to the fake CometAPI."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis

from core.engine import Engine
from core.settings import Settings
from tests.support import API_KEY, make_settings

if TYPE_CHECKING:
    from tests.fakes.cometapi import FakeCometAPI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL (default redis://127.0.0.1:6379/0) if it answers; otherwise a
    `redis-server` started for this test session and stopped at its end."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if _answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            f"No Redis answers on {url} and redis-server is not installed "
            "(Debian/Ubuntu: apt-get install redis-server).",
            returncode=3,
        )
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="teambot-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.exit(f"redis-server did not start on port {port}", returncode=3)
        time.sleep(0.05)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A local 3-master Redis Cluster, started once for the test session (the memory and
    intake tests run on it as well as on a single server)."""
    from tests.stores import local_cluster

    with local_cluster() as url:
        yield url


@pytest.fixture(params=["server", "cluster"])
def store_url(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """Redis for the tests that must hold on a single server and on a Redis Cluster alike;
    keys under this test's own prefix are deleted afterwards."""
    if request.param == "server":
        yield redis_url
        return
    from tests.stores import cluster_cleanup

    url = str(request.getfixturevalue("redis_cluster_url"))
    prefix = str(request.getfixturevalue("key_prefix"))
    try:
        yield url
    finally:
        cluster_cleanup(url, prefix)


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"teambot-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def cometapi() -> AsyncIterator[FakeCometAPI]:
    from tests.fakes.cometapi import FakeCometAPI

    async with FakeCometAPI(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def settings(redis_url: str, key_prefix: str, cometapi: FakeCometAPI) -> Settings:
    return make_settings(
        redis_url=redis_url, redis_key_prefix=key_prefix, cometapi_base_url=cometapi.base_url
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[Engine]:
    engine = await Engine.start(settings)
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
def engine_with(
    redis_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> Callable[..., contextlib.AbstractAsyncContextManager[Engine]]:
    """`async with engine_with(history_token_budget=600) as engine:` — an engine on this
    test's Redis prefix and fake CometAPI, with some settings changed."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Engine]:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "redis_key_prefix": key_prefix,
            "cometapi_base_url": cometapi.base_url,
        }
        values.update(overrides)
        async with await Engine.start(make_settings(**values)) as engine:
            yield engine

    return start
