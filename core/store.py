"""The process's one Redis connection: a server, a Redis Cluster, or an in-process store.

Every key teambot writes is named by `Keys`: `PREFIX:kind:{TAG}[:rest]`, where `TAG` is a
conversation key (or a channel key for channel-wide state). Redis Cluster puts keys with
the same `{…}` hash tag in one slot, so every script that touches several keys of one
conversation runs on one node, unchanged on a single server and on a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.settings import ConfigError, Settings
from core.types import ConversationKey

__all__ = [
    "KeyedLocks",
    "Keys",
    "Store",
    "channel_glob",
    "connect_store",
    "honour_cancel",
]

log = logging.getLogger(__name__)

#: Errors after which a command may simply be tried again (the server or the network).
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionResetError)


#: Give back a token lock: delete KEYS[1] only if it still holds ARGV[1] (the holder's
#: token). Returns 1 when released, 0 when it had expired or another holds it.
RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def honour_cancel() -> None:
    """Raise CancelledError when this task was asked to stop and the request was lost on
    the way. Python 3.11's `asyncio.wait_for`, which the Redis client uses to send a
    command, can swallow a cancellation that arrives just as the command is written
    (fixed in 3.12): the task then runs on with the request still counted. Every loop that
    waits on Redis calls this each round, so a shutdown or a Stop always ends it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class KeyedLocks:
    """In-process FIFO locks by name, dropped when nobody holds or waits for them.
    asyncio locks are fair, so work on one name runs in the order it asked."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users <= 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


class Keys:
    """Key names. `tag` is what decides the Redis Cluster slot."""

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ConfigError("REDIS_KEY_PREFIX must not contain '{' or '}'.")
        self.prefix = prefix

    def of(self, kind: str, key: ConversationKey | str, *rest: str) -> str:
        """`PREFIX:kind:{key}[:rest…]`: a key in `key`'s slot."""
        name = f"{self.prefix}:{kind}:{{{key}}}"
        return ":".join((name, *rest)) if rest else name

    def match(self, kind: str, key_glob: str) -> str:
        """A SCAN pattern over `of(kind, …)` keys whose tag matches `key_glob`."""
        return f"{self.prefix}:{kind}:{{{key_glob}}}"

    def tag_of(self, kind: str, name: str) -> str:
        """The tag of a key name built by `of(kind, …)`."""
        start = len(f"{self.prefix}:{kind}:{{")
        return name[start : name.index("}", start)]

    def plain(self, kind: str, *rest: str) -> str:
        """A key that belongs to no conversation (workspace ledgers, small caches)."""
        return ":".join((self.prefix, kind, *rest))


class Store:
    """The Redis client (a server or a cluster) and key names, shared by memory, the line
    and the ledger. `cluster` tells which one it is."""

    def __init__(self, redis: Redis, keys: Keys, *, cluster: bool = False) -> None:
        self.redis = redis
        self.keys = keys
        self.cluster = cluster

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    def pubsub(self) -> Any:
        """A pub/sub connection. On a cluster, classic PUBLISH reaches every node, so a
        subscription on any one node hears every conversation's wake-ups."""
        return self.redis.pubsub(ignore_subscribe_messages=True)

    async def scan(self, pattern: str, count: int = 500) -> AsyncIterator[str]:
        """Every key matching `pattern`, on every node of a cluster."""
        async for name in self.redis.scan_iter(match=pattern, count=count):
            yield str(name)

    async def close(self) -> None:
        await self.redis.aclose()


def channel_glob(channel: ConversationKey) -> str:
    """A SCAN glob over the keys of every conversation in `channel`'s channel."""
    base = str(ConversationKey(channel.platform, channel.workspace, channel.channel, "x"))
    return "".join("\\" + c if c in "*?[]\\" else c for c in base[:-1]) + "*"


class _GatedCluster(RedisCluster):
    """A cluster client whose commands wait for a free connection under a burst (as the
    single-server blocking pool does) instead of failing with MaxConnectionsError."""

    def __init__(self, *args: Any, gate: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = asyncio.Semaphore(gate)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._gate:
            return await super().execute_command(*args, **kwargs)


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=8)


async def _is_cluster(url: str) -> bool:
    """Does the server at `url` run in cluster mode?"""
    probe = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        info = await probe.info("cluster")
        return bool(int(info.get("cluster_enabled", 0)))
    except ResponseError:
        return False  # a server that does not know INFO cluster is not a cluster
    finally:
        await probe.aclose()


async def connect_store(settings: Settings) -> Store:
    """One Redis pool per process: the real server (or cluster) when REDIS_URL is set,
    otherwise an in-process store that runs the same commands and scripts.

    A cluster is detected from the server (`INFO cluster`) or forced with
    `REDIS_CLUSTER=true`."""
    keys = Keys(settings.redis_key_prefix)
    if settings.redis_url is None:
        from fakeredis import FakeAsyncRedis

        log.warning(
            "REDIS_URL is not set: using an in-process store; memory is not persistent "
            "and is not shared between processes"
        )
        return Store(cast(Redis, FakeAsyncRedis(decode_responses=True)), keys)
    url = settings.redis_url.get_secret_value()
    cluster = settings.redis_cluster
    if cluster is None:
        try:
            cluster = await _is_cluster(url)
        except (RedisError, OSError) as error:
            # Not reachable yet: a single server is the common case; readiness reports it.
            log.warning("could not ask Redis whether it is a cluster (%s); assuming not", error)
            cluster = False
    if cluster:
        try:
            client = _GatedCluster.from_url(
                url,
                gate=settings.redis_max_connections,
                decode_responses=True,
                socket_connect_timeout=5,
                socket_timeout=10,
                # per node; commands are gated at REDIS_MAX_CONNECTIONS, so pipelines and
                # pub/sub always find one
                max_connections=settings.redis_max_connections * 2,
                retry=_retry(),
            )
            await client.initialize()
        except RedisError as error:
            raise ConfigError(
                f"REDIS_URL points at a Redis Cluster that could not be used: {error}."
            ) from None
        log.info("connected to a Redis Cluster of %d node(s)", len(client.get_nodes()))
        return Store(cast(Redis, client), keys, cluster=True)
    # A blocking pool: under a burst, a command waits for a free connection instead of
    # failing with "Too many connections".
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=20,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=15,
        retry=_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    )
    return Store(Redis.from_pool(pool), keys)  # the client owns the pool: aclose() closes it
