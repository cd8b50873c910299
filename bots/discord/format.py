"""Text shaping for Discord: summaries in Discord Markdown, status lines, thread names,
quoted questions.

Pages themselves are core's (`core.PagedReply`, fence-aware and prefix-stable).
"""

from __future__ import annotations

import re

from core import Summary, open_fence

__all__ = [
    "MESSAGE_LIMIT",
    "PAGE_LIMIT",
    "close_fence",
    "quote_prompt",
    "status_line",
    "summary_markdown",
    "thread_name",
]

#: Discord's limit for a message's content.
MESSAGE_LIMIT = 2000
#: Text per page: the rest is room for a status line and a closing fence while streaming.
PAGE_LIMIT = 1900


def close_fence(text: str) -> str:
    """`text` with its open code block (if any) closed, for display."""
    fence = open_fence(text)
    return f"{text.rstrip(chr(10))}\n{fence.marker}" if fence is not None else text


def summary_markdown(summary: Summary, footer: str = "") -> str:
    """A summary (data) in Discord's Markdown."""
    data = summary.data
    title = re.sub(r"([\\*_~|`])", r"\\\1", summary.title)
    lines = [f"### 📋 {title}", "", f"**TL;DR:** {data.tldr}"]
    if data.decisions:
        lines += ["", "**✅ Decisions**", *(f"- {d}" for d in data.decisions)]
    if data.action_items:
        lines += ["", "**📌 Action items**"]
        for item in data.action_items:
            due = f" (due {item.due})" if item.due else ""
            lines.append(f"- **{item.owner or 'Someone'}**: {item.task}{due}")
    if data.open_questions:
        lines += ["", "**❓ Open questions**", *(f"- {q}" for q in data.open_questions)]
    if footer:
        lines += ["", footer]
    return "\n".join(lines)


def status_line(text: str, width: int = 90) -> str:
    """A transient status ("Using current_time…") as Discord's small grey subtext."""
    one_line = " ".join(text.split())
    if len(one_line) > width:
        one_line = one_line[: width - 1].rstrip() + "…"
    return f"-# {one_line}"


def _shorten(text: str, width: int) -> str:
    one_line = " ".join(text.split())
    if len(one_line) <= width:
        return one_line
    cut = one_line[: width - 1]
    space = cut.rfind(" ")
    if space > width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "…"


def thread_name(prompt: str, width: int = 90) -> str:
    """A thread title from a question (Discord allows 100 characters)."""
    plain = re.sub(r"<(@[!&]?|#)\d+>", "", prompt)
    plain = re.sub(r"[`*_~|>#]", "", plain)
    name = _shorten(plain, width)
    return name or "Conversation"


def quote_prompt(prompt: str, author: str, attachment: str | None = None, width: int = 300) -> str:
    """The asker's question, quoted above an answer: Discord shows "x used /ask" but
    not the text of the options, so the channel would otherwise see answers without
    their questions."""
    text = _escape(_shorten(prompt, width))
    if attachment:
        text += f" 📎 {_escape(attachment)}"
    return f"> **{_escape(author)}:** {text}\n\n"


def _escape(text: str) -> str:
    return re.sub(r"([\\*_~|>#`\[\]])", r"\\\1", text)
