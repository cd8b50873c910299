"""A person's approval before a tool that changes something runs.

When the model calls a tool that needs approval (`Tool.needs_approval`: MCP tools unless
the server marks them read-only, as its `approval` setting says), the turn pauses: the
person who asked sees what would run, with Approve / Deny (the adapter's `ApprovalUI`),
and the conversation's later messages wait behind it.

Everything needed to finish the turn is kept in Redis, so the click may reach any
process, even after the one that asked was restarted: while that process lives it waits
for the decision and goes on; if it is gone, the process that receives the click takes
the paused turn over (`core.intake.Intake.decide`) and finishes it.

Keys (`K` the conversation, in its Redis Cluster slot):

    P:ap:{K}:ID      string  the paused turn (JSON), until decided or expired
    P:ap:{K}:ID:d    string  the decision, "approved|USER" or "denied|USER" (first click wins)
    P:apid:ID        string  K, so a button that carries only ID finds its conversation
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from core.queue import Line, Ticket
from core.settings import Settings
from core.store import Store, honour_cancel
from core.types import ChatMessage, ConversationKey, ToolCall

__all__ = [
    "APPROVED",
    "DENIED",
    "EXPIRED",
    "ApprovalCard",
    "ApprovalUI",
    "Approvals",
    "Decision",
    "PausedTurn",
    "declined_result",
]

Outcome = Literal["approved", "denied", "expired"]
APPROVED: Outcome = "approved"
DENIED: Outcome = "denied"
EXPIRED: Outcome = "expired"


@dataclass(frozen=True, slots=True)
class ApprovalCard:
    """What the person is asked: which tools would run, with which arguments."""

    id: str
    key: ConversationKey
    asker_id: str
    asker_name: str
    calls: tuple[tuple[str, str], ...]  # (tool name, description with the arguments)
    expires_at: float  # epoch seconds

    def markdown(self) -> str:
        """The request in neutral Markdown (adapters add their buttons)."""
        lines = ["**Approval needed**: I'd like to run"]
        for name, description in self.calls:
            lines.append(f"`{name}`\n```\n{description}\n```")
        minutes = max(1, round((self.expires_at - time.time()) / 60))
        lines.append(
            f"Only {self.asker_name} (or an admin) can decide; later messages here wait "
            f"until then. This request expires in {minutes} minute{'s' if minutes != 1 else ''}."
        )
        return "\n".join(lines)

    @staticmethod
    def settled(outcome: str, by: str | None) -> str:
        """How the request ended, in one line (the card's last line once decided)."""
        return _SETTLED.get(outcome, outcome).format(by=by or "someone")


_SETTLED = {
    "approved": "✅ Approved by {by}: it ran.",
    "denied": "⛔ Denied by {by}: it did not run.",
    "expired": "⌛ Nobody decided in time: it did not run.",
}


@runtime_checkable
class ApprovalUI(Protocol):
    """An adapter's way to ask (buttons) and to say how it ended."""

    async def show(self, card: ApprovalCard) -> Mapping[str, str]:
        """Post the card with Approve / Deny; returns where it is (kept with the paused
        turn, so any process can update it)."""

    async def settle(
        self, card: ApprovalCard, outcome: Outcome, by: str | None, where: Mapping[str, str]
    ) -> None:
        """The card now says how it ended; its buttons are gone."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a click did."""

    outcome: Outcome | None  # None: refused (not the asker), or no such request
    message: str  # for the person who clicked
    resumed_here: bool = False
    not_the_asker: bool = False  # refused: someone else asked (an admin may still decide)


@dataclass
class PausedTurn:
    """A turn waiting for approval: enough to finish it in any process."""

    id: str
    key: ConversationKey
    event_id: str
    member: str  # its place in the conversation's line
    author_id: str
    author_name: str
    user_message: ChatMessage
    turn_messages: list[ChatMessage]
    shown: str
    round_number: int
    calls: list[ToolCall]  # the round's calls, all of them
    needing: list[str]  # ids of the calls that wait for the person
    card: ApprovalCard
    reply: dict[str, str] = field(default_factory=dict)  # where the adapter answers

    def dump(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "key": str(self.key),
                "event_id": self.event_id,
                "member": self.member,
                "author_id": self.author_id,
                "author_name": self.author_name,
                "user_message": self.user_message.model_dump(mode="json"),
                "turn_messages": [m.model_dump(mode="json") for m in self.turn_messages],
                "shown": self.shown,
                "round_number": self.round_number,
                "calls": [c.model_dump(mode="json") for c in self.calls],
                "needing": self.needing,
                "card": {
                    "calls": [list(c) for c in self.card.calls],
                    "expires_at": self.card.expires_at,
                },
                "reply": self.reply,
            }
        )

    @classmethod
    def load(cls, raw: str) -> PausedTurn:
        data: dict[str, Any] = json.loads(raw)
        key = ConversationKey.parse(data["key"])
        card = ApprovalCard(
            data["id"],
            key,
            data["author_id"],
            data["author_name"],
            tuple((str(a), str(b)) for a, b in data["card"]["calls"]),
            float(data["card"]["expires_at"]),
        )
        return cls(
            id=data["id"],
            key=key,
            event_id=data["event_id"],
            member=data["member"],
            author_id=data["author_id"],
            author_name=data["author_name"],
            user_message=ChatMessage.model_validate(data["user_message"]),
            turn_messages=[ChatMessage.model_validate(m) for m in data["turn_messages"]],
            shown=data["shown"],
            round_number=int(data["round_number"]),
            calls=[ToolCall.model_validate(c) for c in data["calls"]],
            needing=list(data["needing"]),
            card=card,
            reply={str(k): str(v) for k, v in data.get("reply", {}).items()},
        )


def declined_result(outcome: Outcome, by: str | None) -> str:
    """The tool result the model reads when a call did not run."""
    if outcome == DENIED:
        who = by or "The person"
        return (
            f"Not run: {who} declined this action. Do not try it again in this turn; "
            "answer without it and say it was not done."
        )
    return (
        "Not run: nobody approved this action in time, so it was not done. "
        "Answer without it and say so."
    )


class Approvals:
    """Paused turns and decisions in Redis."""

    def __init__(self, store: Store, line: Line, settings: Settings) -> None:
        self.store = store
        self.keys = store.keys
        self.line = line
        self.timeout = settings.approval_timeout_seconds
        self.lease_s = settings.lock_ttl_seconds

    def _record(self, key: ConversationKey, ident: str) -> str:
        return self.keys.of("ap", key, ident)

    def new_id(self) -> str:
        return secrets.token_urlsafe(9)

    async def pause(self, paused: PausedTurn, ticket: Ticket) -> None:
        """Keep the turn and hold the conversation's line until it is decided or expires
        (a little longer than the timeout, so an expiry is seen by someone)."""
        ttl = int(self.timeout + 120)
        await self.store.redis.set(self.keys.plain("apid", paused.id), str(paused.key), ex=ttl)
        await self.remember(paused)
        await self.line.pause(ticket, self.timeout + self.lease_s)

    async def remember(self, paused: PausedTurn) -> None:
        """Store (or update) the paused turn."""
        ttl_ms = int((self.timeout + 120) * 1000)
        await self.store.redis.set(self._record(paused.key, paused.id), paused.dump(), px=ttl_ms)

    async def wait(self, paused: PausedTurn) -> tuple[Outcome, str | None]:
        """Until the person decides or the request expires (this process holds the turn)."""
        decision = self._record(paused.key, paused.id) + ":d"
        while True:
            honour_cancel()
            raw = await self.store.redis.get(decision)
            if raw:
                outcome, _, by = str(raw).partition("|")
                return outcome, by or None  # type: ignore[return-value]
            left = paused.card.expires_at - time.time()
            if left <= 0:
                if await self.store.redis.set(decision, f"{EXPIRED}|", nx=True, ex=3600):
                    return EXPIRED, None
                continue  # decided at the last moment
            event = self.line.wake_event(paused.key)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await event.wait()

    async def find(self, ident: str) -> PausedTurn | None:
        raw_key = await self.store.redis.get(self.keys.plain("apid", ident))
        if raw_key is None:
            return None
        raw = await self.store.redis.get(self._record(ConversationKey.parse(str(raw_key)), ident))
        return PausedTurn.load(str(raw)) if raw else None

    async def decide(self, paused: PausedTurn, outcome: Outcome, by: str) -> bool:
        """Record a decision; False if there was one already (first click wins)."""
        decision = self._record(paused.key, paused.id) + ":d"
        done = await self.store.redis.set(decision, f"{outcome}|{by}", nx=True, ex=3600)
        if done:
            await self.line.announce(paused.key)
        return bool(done)

    async def decided(self, paused: PausedTurn) -> tuple[Outcome, str | None] | None:
        raw = await self.store.redis.get(self._record(paused.key, paused.id) + ":d")
        if not raw:
            return None
        outcome, _, by = str(raw).partition("|")
        return outcome, by or None  # type: ignore[return-value]

    async def close(self, paused: PausedTurn) -> None:
        """The turn went on: the record goes (the decision stays a while, for late clicks)."""
        await self.store.redis.delete(self._record(paused.key, paused.id))


def needing_approval(calls: Sequence[ToolCall], needs: Any) -> list[ToolCall]:
    """The calls whose tool needs a person's approval (`needs(name) -> bool`)."""
    return [call for call in calls if needs(call.name)]
