"""Token estimates and history fitting.

Estimates are characters / 4 (both vendors' tokenizers land near that for
English chat); media parts count a fixed amount by kind and size.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.types import ChatMessage, MediaPart

__all__ = [
    "estimate_message",
    "estimate_messages",
    "estimate_text",
    "group_turns",
    "split_for_budget",
]

MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 800


def estimate_text(text: str) -> int:
    return (len(text) + 3) // 4


def _estimate_part(part: MediaPart) -> int:
    if part.kind == "image":
        return IMAGE_TOKENS
    if part.kind == "pdf":
        return max(IMAGE_TOKENS, len(part.data) // 60)
    if part.kind == "audio":
        # ~32 tokens per second; compressed speech is ~2 KB per second
        return max(100, len(part.data) // 64)
    # video: ~260 tokens per second at ~100 KB per second of compressed video
    return max(1000, len(part.data) // 380)


def estimate_message(message: ChatMessage) -> int:
    tokens = MESSAGE_OVERHEAD + estimate_text(message.speaker_text())
    for call in message.tool_calls:
        tokens += estimate_text(call.name) + estimate_text(call.arguments) + MESSAGE_OVERHEAD
    for part in message.parts:
        tokens += _estimate_part(part)
    return tokens


def estimate_messages(messages: Sequence[ChatMessage]) -> int:
    return sum(estimate_message(m) for m in messages)


def group_turns(messages: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Split history into groups that must stay together.

    A group starts at a user message (or at the start) and runs until the next
    user message, so an assistant tool call and its tool results are never
    separated from each other.
    """
    groups: list[list[ChatMessage]] = []
    for message in messages:
        if not groups or (message.role == "user" and _closed(groups[-1])):
            groups.append([message])
        else:
            groups[-1].append(message)
    return groups


def _closed(group: list[ChatMessage]) -> bool:
    """A group is closed when it has no tool call still waiting for its result."""
    pending: set[str] = set()
    for message in group:
        for call in message.tool_calls:
            pending.add(call.id)
        if message.tool_call_id:
            pending.discard(message.tool_call_id)
    return not pending


def split_for_budget(
    messages: Sequence[ChatMessage], budget: int, target: int
) -> tuple[list[ChatMessage], list[ChatMessage]]:
    """Return (to_fold, to_keep).

    Nothing is folded while the history fits `budget`. Once it does not, the
    oldest whole turn groups are folded until what stays fits `target`
    (a fraction of the budget, so folding happens in batches, not every turn).
    The newest group is always kept.
    """
    if estimate_messages(messages) <= budget:
        return [], list(messages)
    groups = group_turns(messages)
    kept: list[list[ChatMessage]] = []
    total = 0
    for group in reversed(groups):
        size = estimate_messages(group)
        if kept and total + size > target:
            break
        kept.append(group)
        total += size
    kept.reverse()
    n_fold = len(groups) - len(kept)
    fold = [m for g in groups[:n_fold] for m in g]
    keep = [m for g in kept for m in g]
    return fold, keep
