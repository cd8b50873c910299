"""What the user reads when an answer cannot be given: one or two plain sentences."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from core.providers.base import ProviderError
from core.queue import LeaseLost, Ticket
from core.sink import ReplySink
from core.summaries import BrokenSummary

T = TypeVar("T")

log = logging.getLogger(__name__)

__all__ = [
    "LOST_TURN",
    "MEMORY_DOWN",
    "RESTARTING",
    "BudgetExceeded",
    "error_class",
    "failure_message",
    "fenced",
    "guard",
    "oops",
    "reported",
    "safe_fail",
]

RESTARTING = "I'm restarting, so I couldn't finish this answer. Please send your message again."

MEMORY_DOWN = (
    "I can't reach my memory store right now, so I couldn't answer. Please try again in a minute."
)

LOST_TURN = (
    "I lost contact with my memory store while answering, so I stopped here. "
    "Please send your message again."
)


def oops(error_id: str) -> str:
    return f"Something went wrong on my side (error {error_id}). Please try again."


class BudgetExceeded(Exception):
    def __init__(self, spent: float, budget: float) -> None:
        super().__init__(f"daily budget reached: ${spent:.2f} of ${budget:.2f}")
        self.spent = spent
        self.budget = budget


def error_class(error: Exception) -> str:
    """A short label for metrics."""
    if isinstance(error, ProviderError):
        return f"model_{error.category}"
    if isinstance(error, BudgetExceeded):
        return "budget"
    return "summary_unreadable"


def failure_message(error: Exception) -> str:
    """One plain sentence or two for the user."""
    if isinstance(error, BudgetExceeded):
        return (
            f"This workspace has used its daily AI budget (${error.spent:.2f} of "
            f"${error.budget:.2f}). It resets at midnight UTC."
        )
    if isinstance(error, BrokenSummary):
        return "The summary model returned something I couldn't read. Please try again."
    assert isinstance(error, ProviderError)
    category = error.category
    if category == "auth":
        return (
            "The AI service refused my API key, so I can't answer. "
            "An admin should check COMETAPI_API_KEY."
        )
    if category == "too_large":
        return (
            "This is more than my models can read at once. "
            "Try a shorter request or start a new thread."
        )
    if category == "unsupported_media":
        return "None of my models can read that kind of file."
    if category in ("blocked",):
        return "The model declined to answer this message."
    if category == "bad_request":
        return (
            "The AI service rejected the request. Please rephrase it; if this keeps "
            "happening, tell an admin."
        )
    if category == "quota":
        return "The AI service's quota is used up, so I can't answer right now."
    return "The AI service isn't answering right now. Please try again in a minute."


async def fenced(work: Coroutine[Any, Any, T], ticket: Ticket) -> T:
    """Run `work` while `ticket`'s lease is ours; LeaseLost (and `work` cancelled) as soon
    as it is not."""
    task = asyncio.ensure_future(work)
    lost = asyncio.ensure_future(ticket.lost.wait())
    try:
        await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise
    finally:
        lost.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise LeaseLost(ticket.key)
    return task.result()


async def guard(work: Coroutine[Any, Any, Any], name: str) -> None:
    try:
        await work
    except asyncio.CancelledError:
        log.warning("%s was cancelled", name)
        raise
    except Exception:
        log.exception("%s failed", name)


async def safe_fail(sink: ReplySink, message: str, *, shielded: bool = False) -> bool:
    """Deliver a failure message; False if even that failed. `shielded` lets it finish
    while the reply is being cancelled (shutdown), within a few seconds."""
    try:
        if shielded:
            await asyncio.wait_for(asyncio.shield(sink.fail(message)), timeout=5)
        else:
            await sink.fail(message)
    except (Exception, asyncio.CancelledError):
        log.exception("could not deliver the failure message either")
        return False
    return True


async def reported(
    work: Awaitable[T], tell: Callable[[str], Awaitable[Any]], what: str
) -> T | None:
    """Run a command's background work so its user is never left without an answer: an
    error is logged with a short id and told in one sentence (`oops`), a shutdown that
    cancels it is told as RESTARTING (within a few seconds), and a failure to tell is
    only logged. None when `work` did not finish."""
    try:
        return await work
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(tell(RESTARTING)), timeout=5)
        raise
    except Exception:
        error_id = secrets.token_hex(3)
        log.exception("%s failed (error %s)", what, error_id)
        try:
            await tell(oops(error_id))
        except Exception as error:
            log.warning("could not tell the user that %s failed: %s", what, error)
        return None
