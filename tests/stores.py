"""Redis servers the tests start themselves: a 3-master Redis Cluster on free ports.

`redis-server --cluster-enabled yes` three times, then `redis-cli --cluster create`;
every process is stopped and its directory removed at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis
from redis.cluster import RedisCluster

__all__ = ["cluster_cleanup", "local_cluster"]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(count: int) -> list[int]:
    """Ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 < 65536 and _free(port + 10000) and port not in ports:
            ports.append(port)
    return ports


@contextlib.contextmanager
def local_cluster(masters: int = 3) -> Iterator[str]:
    """A Redis Cluster of `masters` nodes on loopback; yields the URL of its first node."""
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are needed for a local Redis Cluster")
    workdir = tempfile.mkdtemp(prefix="teambot-cluster-")
    processes: list[subprocess.Popen[bytes]] = []
    for attempt in range(3):
        ports = _cluster_ports(masters)
        processes = [
            subprocess.Popen(
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in ports
        ]
        try:
            _wait_ping(ports)
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=30,
            )
            _wait_ok(ports[0])
            break
        except BaseException:
            _stop(processes)
            if attempt == 2:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
    try:
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        _stop(processes)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ping(ports: list[int], within: float = 10) -> None:
    deadline = time.monotonic() + within
    for port in ports:
        while True:
            try:
                client = redis.Redis(port=port, socket_connect_timeout=0.5)
                client.ping()
                client.close()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on {port} did not start") from None
                time.sleep(0.05)


def _wait_ok(port: int, within: float = 20) -> None:
    deadline = time.monotonic() + within
    client = redis.Redis(port=port, decode_responses=True)
    try:
        while _state(client.execute_command("CLUSTER INFO")) != "ok":
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not become ready")
            time.sleep(0.1)
    finally:
        client.close()


def _state(info: object) -> str:
    if isinstance(info, dict):
        return str(info.get("cluster_state"))
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "ok" if "cluster_state:ok" in text else "not ok"


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cluster_cleanup(url: str, prefix: str) -> None:
    """Delete every key under `prefix` on every node."""
    client = RedisCluster.from_url(url)
    try:
        for name in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
            client.delete(name)
    finally:
        client.close()
