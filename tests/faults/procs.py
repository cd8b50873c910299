"""Real processes for the fault tests: `teambot slack --http` children, a redis-server we
may restart, and a round-robin HTTP proxy that puts several replicas behind one address."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BotProcess:
    """`teambot slack --http` in a child process, with its log in a file."""

    def __init__(self, env: Mapping[str, str], *, name: str = "bot") -> None:
        self.env = dict(env)
        self.name = name
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"teambot-{name}-", suffix=".log", delete=False
        )

    @property
    def url(self) -> str:
        """The Slack events port."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        """Where /healthz, /readyz and /metrics are: `HEALTH_PORT` when the environment
        sets it, else the events port."""
        health_port = self.env.get("HEALTH_PORT")
        return f"http://127.0.0.1:{health_port}" if health_port else self.url

    @property
    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    async def start(self, within: float = 30) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots.cli",
            "slack",
            "--http",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            env=self.env,
            cwd=tempfile.gettempdir(),  # no stray .env is read
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited at start-up:\n{self.log}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.health_url + "/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} did not get ready:\n{self.log}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self, within: float = 40) -> int:
        """SIGTERM, as an orchestrator stops it; returns the exit code."""
        code = 0
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(within):
                    code = await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                raise AssertionError(f"{self.name} ignored SIGTERM:\n{self.log}") from None
        elif self.process is not None:
            code = self.process.returncode or 0
        self._log.close()
        return code

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


class RedisServer:
    """A redis-server of our own (AOF on), so a test can restart it."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="teambot-redis-")
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            self.dir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(200):
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.025)
        raise AssertionError("redis-server did not start")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers, as
        when Redis stalls."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def restart(self, down_for: float = 0.5) -> None:
        await self.stop()
        await asyncio.sleep(down_for)
        await self.start()

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def round_robin(backends: list[str]) -> AsyncIterator[str]:
    """One address in front of several replicas: each request goes to the next one."""
    counter = 0
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        nonlocal counter
        backend = backends[counter % len(backends)]
        counter += 1
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with session.request(
            request.method, backend + request.path_qs, data=body, headers=headers
        ) as response:
            return web.Response(
                status=response.status,
                body=await response.read(),
                content_type=response.content_type,
            )

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


def bot_env(**values: Any) -> dict[str, str]:
    """A child's environment: only what teambot needs (nothing from the developer's shell
    configuration leaks in), running this checkout's code."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # bursts from one test user are what these tests send; the limit has its own tests
        "USER_RATE_LIMIT": "off",
        # the code of this checkout, whichever one the installed package points at
        "PYTHONPATH": str(ROOT),
    }
    env.update({key.upper(): str(value) for key, value in values.items()})
    return env
