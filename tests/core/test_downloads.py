"""Capped downloads of attached files, against a real local HTTP server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from core.documents import DocumentLimits, read_attachments
from core.downloads import capped_download
from core.types import Attachment

CHUNK = 16 * 1024
BIG = 64 * CHUNK  # 1 MiB


class Files:
    """A small file server: a few fixed answers, and what each request carried."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, request.headers.get("Authorization")))
        if request.path == "/small.txt":
            return web.Response(body=b"hello", content_type="text/plain")
        if request.path == "/big.txt":
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):  # the reader may hang up early
                for _ in range(BIG // CHUNK):
                    await response.write(b"x" * CHUNK)
                await response.write_eof()
            return response
        if request.path == "/moved":
            raise web.HTTPFound(f"{self.base}/small.txt")
        if request.path == "/signin":
            return web.Response(text="<html>sign in</html>", content_type="text/html")
        raise web.HTTPNotFound()


@pytest.fixture
async def files() -> AsyncIterator[Files]:
    served = Files()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    served.base = f"http://127.0.0.1:{port}"
    try:
        yield served
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def test_a_small_file_comes_whole_with_the_headers_sent(
    files: Files, http: httpx.AsyncClient
) -> None:
    data = await capped_download(
        http, f"{files.base}/small.txt", 100, headers={"Authorization": "Bearer xoxb-1"}
    )
    assert data == b"hello"
    assert files.requests == [("/small.txt", "Bearer xoxb-1")]


async def test_a_file_over_the_cap_is_cut_just_past_it_and_noted_as_too_large(
    files: Files, http: httpx.AsyncClient
) -> None:
    cap = 100_000
    data = await capped_download(http, f"{files.base}/big.txt", cap)
    assert cap < len(data) < BIG  # reading stopped soon after the cap
    assert len(data) <= cap + 64 * 1024  # by at most one network read

    async def fetch() -> bytes:
        return await capped_download(http, f"{files.base}/big.txt", cap)

    # a platform that under-reports the size: the reader says the file is too large
    liar = Attachment("big.txt", "text/plain", 10, fetch)
    result = await read_attachments([liar], DocumentLimits(max_bytes=cap))
    assert result.text == ""
    [note] = result.notes
    assert note.startswith("I skipped big.txt: it is 0.")
    assert note.endswith("MB, over my 0.1 MB limit.")


async def test_exactly_the_cap_is_not_over_it(files: Files, http: httpx.AsyncClient) -> None:
    assert await capped_download(http, f"{files.base}/small.txt", 5) == b"hello"


async def test_a_redirect_is_not_followed(files: Files, http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="HTTP 302"):
        await capped_download(http, f"{files.base}/moved", 100)
    assert [path for path, _auth in files.requests] == ["/moved"]


async def test_an_error_status_raises(files: Files, http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="HTTP 404"):
        await capped_download(http, f"{files.base}/gone.txt", 100)


async def test_a_web_page_is_refused_only_when_asked(files: Files, http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="web page"):
        await capped_download(http, f"{files.base}/signin", 100, refuse_html=True)
    assert await capped_download(http, f"{files.base}/signin", 100) == b"<html>sign in</html>"
