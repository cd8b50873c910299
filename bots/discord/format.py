"""Text shaping for Discord: 2,000-character pages that never break a word or a code
block, status lines, thread names.

`split_message` is greedy and prefix-stable: once the text is long enough to need a new
page, the earlier pages never change as more text is appended. A streamed answer can
therefore finish a page, move on to the next message and never touch the old one again.
"""

from __future__ import annotations

import re

__all__ = [
    "MESSAGE_LIMIT",
    "PAGE_LIMIT",
    "close_fence",
    "open_fence",
    "quote_prompt",
    "split_message",
    "status_line",
    "thread_name",
]

#: Discord's limit for a message's content.
MESSAGE_LIMIT = 2000
#: Text per page: the rest is room for a status line and a closing fence while streaming.
PAGE_LIMIT = 1900
_FENCE = "```"
_CLOSE = "\n```"
_LANGUAGE = re.compile(r"[\w+#.-]*")
_MIN_LIMIT = 64


def _fence_after(state: str | None, line: str) -> str | None:
    """The code-fence state after `line`: None outside a code block, else the open
    block's language ("" when it has none)."""
    index = 0
    while True:
        found = line.find(_FENCE, index)
        if found < 0:
            return state
        end = found + len(_FENCE)
        while end < len(line) and line[end] == "`":
            end += 1
        if state is None:
            rest = line[end:].strip()
            language = _LANGUAGE.fullmatch(rest)
            state = rest if language is not None else ""
        else:
            state = None
        index = end


def open_fence(text: str) -> str | None:
    """The language of the code block still open at the end of `text`, or None."""
    state: str | None = None
    for line in text.splitlines():
        state = _fence_after(state, line)
    return state


def close_fence(text: str) -> str:
    """`text` with its open code block (if any) closed, for display."""
    return text + _CLOSE if open_fence(text) is not None else text


def _reopen(state: str | None) -> str:
    return "" if state is None else f"{_FENCE}{state}\n"


class _Pager:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pages: list[str] = []
        self.page = ""
        self.state: str | None = None
        self.header = ""  # the reopened fence the current page starts with
        self.paragraph = 0  # end of the last blank line outside code in `page`
        self.block = 0  # where the open code block began in `page` (0: before the page)

    def fits(self, line: str) -> bool:
        after = _fence_after(self.state, line)
        closing = len(_CLOSE) if after is not None else 0
        return len(self.page) + len(line) + closing <= self.limit

    def has_text(self) -> bool:
        return bool(self.page[len(self.header) :].strip())

    def add(self, line: str) -> None:
        before = self.state
        self.state = _fence_after(before, line)
        if before is None and self.state is not None:
            self.block = len(self.page)
        self.page += line
        if self.state is None and not line.strip() and self.page.strip():
            self.paragraph = len(self.page)

    def _emit(self, text: str, state: str | None) -> None:
        text = text.rstrip()
        body = text[len(self.header) :] if text.startswith(self.header) else text
        if not body.strip():
            return
        self.pages.append(text + _CLOSE if state is not None else text)

    def _restart(self, tail: str, state_at_cut: str | None) -> None:
        self.header = _reopen(state_at_cut)
        self.page = ""
        self.state = state_at_cut
        self.paragraph = 0
        self.block = 0
        if self.header:
            self.page = self.header
        for line in tail.splitlines(keepends=True):
            self.add(line)

    def flush(self) -> None:
        """Close the current page, at the best place: before a code block that started
        on it, else after its last paragraph if that is past half a page, else here."""
        page = self.page
        if self.state is not None and self.block > len(self.header):
            head, tail = page[: self.block], page[self.block :]
            self._emit(head, None)
            self._restart(tail, None)
            return
        if self.state is None and self.paragraph > self.limit // 2 and self.paragraph < len(page):
            head, tail = page[: self.paragraph], page[self.paragraph :]
            self._emit(head, None)
            self._restart(tail, None)
            return
        self._emit(page, self.state)
        self._restart("", self.state)

    def cut_long_line(self, line: str) -> str:
        """Put as much of a line too long for any page on this page as fits, breaking at
        a space when there is one; returns the rest."""
        room = self.limit - len(self.page) - len(_CLOSE)
        room = max(room, 1)
        piece = line[:room]
        space = piece.rfind(" ")
        if space > room // 2:
            head, rest = line[:space], line[space + 1 :]
        else:
            head, rest = piece, line[room:]
        self.add(head)
        self._emit(self.page, self.state)
        self._restart("", self.state)
        return rest

    def finish(self) -> list[str]:
        last = self.page.rstrip()
        if last.strip() and last != self.header.rstrip():
            self.pages.append(last)
        return self.pages


def split_message(text: str, limit: int = PAGE_LIMIT) -> list[str]:
    """Split `text` into pages of at most `limit` characters.

    Pages break between lines, preferring a paragraph boundary past half a page and
    the start of a code block over the middle of one; a line longer than a page breaks
    at a space (a single "word" longer than a page is cut). A code block that must span
    pages is closed at the end of one and reopened, with its language, on the next.
    """
    if limit < _MIN_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_LIMIT}")
    text = text.strip("\n").rstrip()
    if not text.strip():
        return []
    if len(text) <= limit:
        return [text]
    pager = _Pager(limit)
    for line in text.splitlines(keepends=True):
        rest = line
        while rest:
            if pager.fits(rest):
                pager.add(rest)
                break
            if pager.has_text():
                pager.flush()
                continue
            rest = pager.cut_long_line(rest)
    return pager.finish()


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
