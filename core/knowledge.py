"""The team's knowledge, wired into the Engine: the `search_history` tool and scheduled
recaps.

`Knowledge` is made by the Engine (`engine.knowledge`). An adapter attaches what only it
can do for its platform: a `HistorySource` (read a channel's history with links, tell who
may read it) and a `RecapTarget` (read what was said since a time, post a recap). The rules
live in core: `core.history_search` (who may read, the window, the answer with sources)
and `core.recaps` (schedules in Redis, one post per due time across replicas, catch-up
after a restart). Both call models only through `Engine.summarizer`, the summary route,
so their cost is in the ledger and the daily budget.

    knowledge = engine.knowledge
    knowledge.attach("slack", history=SlackHistory(...), recaps=SlackRecaps(...))
    knowledge.start()                 # the recap scheduler (also started by attach)
    reply = await knowledge.recap_command(channel, "/recap daily 09:00", setter=..., ...)
    await engine.close()              # stops the scheduler
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.history_search import HistorySearch, HistorySource, search_history_tool
from core.recaps import RecapPost, Recaps, RecapScheduler, RecapTarget
from core.types import Author, ConversationKey

if TYPE_CHECKING:
    from core.engine import Engine

__all__ = ["HistorySource", "Knowledge", "RecapPost", "RecapTarget"]

log = logging.getLogger(__name__)

SEARCH_TIME_LIMIT = 120.0


class Knowledge:
    """History search and recaps for one Engine. `clock` gives epoch seconds (tests move
    it); `poll_seconds`: how often the scheduler looks for schedules set elsewhere."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = 30.0,
    ) -> None:
        settings = engine.settings
        self.engine = engine
        self.recaps = Recaps.from_settings(engine.store.redis, settings, clock=clock)
        self.search = HistorySearch(
            {},
            engine.summarizer,
            max_messages=settings.history_search_max_messages,
            clock=clock,
        )
        self.poll_seconds = poll_seconds
        self.targets: dict[str, RecapTarget] = {}
        self.scheduler: RecapScheduler | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tool_added = False

    # --- what adapters give ---------------------------------------------------------------

    def attach(
        self,
        platform: str,
        *,
        history: HistorySource | None = None,
        recaps: RecapTarget | None = None,
        start: bool = True,
    ) -> None:
        """Give core this platform's history reader and recap poster. The `search_history`
        tool is offered to the model from the first history reader on; the recap scheduler
        (re)starts with the platforms attached so far unless `start` is False."""
        if history is not None:
            self.search.sources[platform] = history
            if not self._tool_added:
                self.engine.tools.add(
                    search_history_tool(self.search, time_limit=SEARCH_TIME_LIMIT)
                )
                self._tool_added = True
        if recaps is not None:
            self.targets[platform] = recaps
            if start:
                self.start()

    async def recap_command(
        self,
        channel: ConversationKey,
        text: str,
        *,
        setter: Author,
        may_manage: bool,
        timezone: str | None = None,
    ) -> str:
        """`/recap …` in `channel`: the reply to show the person (see `Recaps.command`)."""
        if self.targets and not self.running:
            self.start()
        return await self.recaps.command(
            channel.channel_key(),
            text,
            setter=setter,
            may_manage=may_manage,
            timezone=timezone,
        )

    # --- the scheduler ----------------------------------------------------------------------

    def start(self) -> None:
        """Run the recap scheduler for the attached platforms (restarted if it runs).
        Outside an event loop nothing starts; the first `/recap` starts it then."""
        if not self.targets:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.scheduler = RecapScheduler(
            self.recaps,
            self.targets,
            self.engine.summarizer,
            max_messages=self.engine.settings.history_search_max_messages,
            poll_seconds=self.poll_seconds,
        )
        old = self._task
        self._stop.set()
        self._stop = asyncio.Event()
        scheduler, stop = self.scheduler, self._stop

        async def run() -> None:
            if old is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await old
            try:
                await scheduler.run(stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the recap scheduler stopped")

        self._task = asyncio.create_task(run(), name="recap-scheduler")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the scheduler: a recap being written gets `grace` seconds to finish."""
        task, self._task = self._task, None
        self._stop.set()
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except asyncio.CancelledError:
            task.cancel()
            raise
