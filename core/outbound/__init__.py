"""Outbound: what every adapter sends goes through here.

* `pages`: one fence-aware, prefix-stable Markdown splitter (`split_pages`, `settled_pages`,
  `PageStream`).
* `mentions`: mention safety on the exact bytes sent (`defuse`, `MentionGuard` for streams).
* `pacing`: one write budget per channel, learned from the platform (`WritePacer`).
"""

from core.outbound.mentions import WORD_JOINER, MentionGuard, Resolver, defuse
from core.outbound.pacing import Kind, Permit, Rate, RateReport, WritePacer
from core.outbound.pages import (
    MIN_LIMIT,
    Fence,
    Page,
    PageStream,
    open_fence,
    paginate,
    settled_pages,
    split_pages,
)
from core.outbound.stream import NativeStream, PagedReply, Surface, SurfaceExpired

__all__ = [
    "MIN_LIMIT",
    "WORD_JOINER",
    "Fence",
    "Kind",
    "MentionGuard",
    "NativeStream",
    "Page",
    "PageStream",
    "PagedReply",
    "Permit",
    "Rate",
    "RateReport",
    "Resolver",
    "Surface",
    "SurfaceExpired",
    "WritePacer",
    "defuse",
    "open_fence",
    "paginate",
    "settled_pages",
    "split_pages",
]
