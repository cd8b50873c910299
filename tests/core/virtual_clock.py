"""An asyncio loop on virtual time: when nothing is ready, the clock jumps to the next
timer instead of sleeping. Pacing tests run minutes of simulated traffic in milliseconds,
and their timings are exact."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _Selector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self._loop.now += timeout
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_Selector(self))

    def time(self) -> float:
        return self.now


def run_virtual(main: Coroutine[Any, Any, T], *, limit: float = 3600.0) -> T:
    """Run `main` on virtual time (failing if it is not done after `limit` seconds of it)."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main, limit))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
