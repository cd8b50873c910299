"""Downloading a file attached to a message, capped in size: one GET, no redirects."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

__all__ = ["capped_download"]


async def capped_download(
    http: httpx.AsyncClient,
    url: str,
    max_bytes: int,
    *,
    headers: Mapping[str, str] | None = None,
    refuse_html: bool = False,
) -> bytes:
    """The file at `url`, streamed; reading stops as soon as more than `max_bytes` have come.

    A file over the cap comes back cut there (longer than `max_bytes`, by at most one
    chunk), so the document reader notes it as too large, as it does a file whose size was
    known up front. Anything but HTTP 200 (a redirect, which is not followed, included)
    raises `ValueError`, and so does a web page when `refuse_html` is set (a sign-in page in
    place of the file)."""
    async with http.stream("GET", url, headers=headers, follow_redirects=False) as response:
        if response.status_code != 200:
            raise ValueError(f"download answered HTTP {response.status_code}")
        kind = response.headers.get("content-type", "")
        if refuse_html and kind.startswith("text/html"):
            raise ValueError("download answered a web page instead of the file")
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data.extend(chunk)
            if len(data) > max_bytes:
                break
        return bytes(data)
