"""Pages: one fence-aware Markdown splitter for every platform.

`split_pages(text, limit)` cuts an answer into messages of at most `limit` characters:

* Code fences follow CommonMark: backticks or tildes, any length of three or more, up to
  three spaces of indent; a closing fence uses the same character, is at least as long and
  has no info string. A code block that has to span pages is closed at the end of one page
  and reopened, with its marker and info string, at the start of the next.
* A cut never lands inside a word (unless the word alone is longer than a page), inside a
  code line when a line boundary will do, or inside a link (`[label](url)`, `<https://…|…>`,
  `<@U…|label>`, an inline code span) unless the link alone is longer than a page. It
  prefers, in order: the start of a code block that began on the page, a paragraph break, a
  line break, a space (each in the second half of the page), then any of them anywhere.
* Prefix-stable: the splitter is an online algorithm. It walks the text and closes a page at
  the first character that no longer fits, choosing the cut only from the text seen up to
  that character. So for any text T and any extension T+S, every page of `split_pages(T)`
  but the last is a page of `split_pages(T+S)`: pages already shown never change while an
  answer streams in. `settled_pages` and `PageStream` give a streamer the pages that are
  final and the tail that may still change.
* Every page is within `limit` (fence lines included), none is blank, and the pages' bodies
  are slices of the text in order, separated only by whitespace: nothing is lost.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "MIN_LIMIT",
    "Fence",
    "Page",
    "PageStream",
    "open_fence",
    "paginate",
    "settled_pages",
    "split_pages",
]

#: The smallest page the splitter accepts.
MIN_LIMIT = 64

_OPENER = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_CLOSER = re.compile(r" {0,3}(`{3,}|~{3,})\s*")
_FENCE_RUN = re.compile(r" {0,3}(`+|~+)")
# A line that is, or could still grow into, a fence line: no cut inside it.
_FENCE_LIKE = re.compile(r" {0,3}(`{3,}|~{3,})")
_FENCE_PREFIX = re.compile(r" {0,3}(`{1,2}|~{1,2})?")
# Where a span that must stay whole starts: `<@U1|label>`, `<!here>`, `<#C1|name>`,
# `<https://…|label>`.
_ANGLE = re.compile(r"<(?:[@#!]|[A-Za-z][A-Za-z0-9+.-]{1,31}:)")
_BLANKS = " \t"


@dataclass(frozen=True, slots=True)
class Fence:
    """An open code block: its fence marker (```` ``` ````, `~~~~`, …) and info string."""

    marker: str
    info: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page: `opening` (a reopened fence line, or ""), `body` (= `text[start:end]` of the
    source text) and `closing` (the fence that closes a block cut here, or "")."""

    opening: str
    body: str
    closing: str
    start: int
    end: int

    @property
    def text(self) -> str:
        return self.opening + self.body + self.closing


def _opens(line: str) -> Fence | None:
    match = _OPENER.fullmatch(line)
    if match is None:
        return None
    marker, info = match.group(2), match.group(3).strip()
    if marker[0] == "`" and "`" in info:
        return None  # not a fence: a backtick fence's info string has no backticks
    return Fence(marker, info)


def _closes(line: str, fence: Fence) -> bool:
    match = _CLOSER.fullmatch(line)
    if match is None:
        return False
    run = match.group(1)
    return run[0] == fence.marker[0] and len(run) >= len(fence.marker)


def _after(state: Fence | None, line: str) -> Fence | None:
    """The fence state after `line` (without its newline), given the state before it."""
    if state is None:
        return _opens(line)
    return None if _closes(line, state) else state


def open_fence(text: str) -> Fence | None:
    """The code block still open at the end of `text` (its last line counts as complete)."""
    state: Fence | None = None
    for line in text.split("\n"):
        state = _after(state, line)
    return state


def _rstrip_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


@dataclass(slots=True)
class _Line:
    ls: int  # start of the line (or of the page, on its first line)
    le: int  # end of what is seen of it (its newline, or the overflow point)
    before: Fence | None  # fence state at its start
    after: Fence | None  # state after it (a partial line counts as complete)
    complete: bool  # its newline is within the text seen


@dataclass(frozen=True, slots=True)
class _Cut:
    end: int  # the page body ends here
    resume: int  # the next page starts here (after skipping blanks)
    mid_line: bool
    fence: Fence | None  # the block open at the cut, reopened on the next page


def _resume(text: str, pos: int, mid_line: bool, fence: Fence | None) -> tuple[int, Fence | None]:
    """Where the page after a cut at `pos` starts, and the fence open there: blanks at the
    cut are dropped; so is the block's closing fence if it comes next (no page holds an
    empty reopened block); outside code, so are blank lines, but not the next line's indent.
    The text's last line counts as complete: if it grows, the page started here was the
    last one anyway."""
    n = len(text)
    if mid_line:
        while pos < n and text[pos] in _BLANKS:
            pos += 1
        if pos >= n or text[pos] != "\n":
            return pos, fence
        pos += 1
    if fence is not None:
        newline = text.find("\n", pos)
        if not _closes(text[pos : n if newline == -1 else newline], fence):
            return pos, fence
        fence = None
        pos = n if newline == -1 else newline + 1
    while True:
        newline = text.find("\n", pos)
        if newline == -1 or text[pos:newline].strip():
            return pos, None
        pos = newline + 1


def _run_end(text: str, start: int, stop: int, length: int, open_end: bool) -> int:
    """The end of the next backtick run of exactly `length` in `text[start:stop]`, or -1."""
    k = start
    while True:
        k = text.find("`", k, stop)
        if k == -1:
            return -1
        end = k
        while end < stop and text[end] == "`":
            end += 1
        if end - k == length and not (end == stop and open_end):
            return end
        k = end


def _bracket_end(text: str, i: int, stop: int, opening: str, closing: str) -> int:
    """The index just past the bracket matching `text[i]`, or -1 before `stop`."""
    depth = 0
    k = i
    while k < stop:
        char = text[k]
        if char == "\\":
            k += 2
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return k + 1
        k += 1
    return -1


def _link_end(text: str, i: int, stop: int, open_end: bool) -> int:
    """The end of a Markdown link whose label starts at `text[i] == "["`; `stop` when it may
    still become one (`open_end`: the line goes on past what is seen); -1 if it is none."""
    maybe = stop if open_end else -1
    label = _bracket_end(text, i, stop, "[", "]")
    if label == -1:
        return maybe
    if label >= stop:
        return maybe
    follow = text[label]
    if follow == "(":
        target = _bracket_end(text, label, stop, "(", ")")
        return maybe if target == -1 else target
    if follow == "[":
        reference = text.find("]", label, stop)
        return maybe if reference == -1 else reference + 1
    return -1


def _protected(text: str, start: int, stop: int, open_end: bool) -> list[tuple[int, int]]:
    """Spans of `text[start:stop]` (one line, outside code) that a cut must not split:
    inline code, links, `<…>` mentions and labelled URLs. `open_end`: the line goes on past
    `stop`, so a span still open at `stop` may yet close, and is kept whole too."""
    spans: list[tuple[int, int]] = []
    i = start
    while i < stop:
        char = text[i]
        if char == "`":
            j = i
            while j < stop and text[j] == "`":
                j += 1
            end = _run_end(text, j, stop, j - i, open_end)
            if end != -1:
                spans.append((i, end))
                i = end
                continue
            if open_end:
                spans.append((i, stop))
                break
            i = j
            continue
        if char == "[" or (char == "!" and text.startswith("[", i + 1) and i + 1 < stop):
            end = _link_end(text, i if char == "[" else i + 1, stop, open_end)
            if end != -1:
                spans.append((i, end))
                i = end
                continue
        elif char == "<" and _ANGLE.match(text, i, stop):
            close = text.find(">", i, stop)
            if close != -1:
                spans.append((i, close + 1))
                i = close + 1
                continue
            if open_end:
                spans.append((i, stop))
                break
        i += 1
    return spans


class _Splitter:
    def __init__(self, text: str, limit: int) -> None:
        if limit < MIN_LIMIT:
            raise ValueError(f"a page limit must be at least {MIN_LIMIT}")
        self.text = text
        self.limit = limit

    # --- fences on a page ----------------------------------------------------------------

    def _decor(self, fence: Fence | None) -> tuple[str, str]:
        """The line reopening `fence` on a page and the one closing it. A very long info
        string is cut to its first word; a fence too long for any page is not carried."""
        if fence is None:
            return "", ""
        cap = self.limit // 4
        info = fence.info
        if len(fence.marker) + len(info) > cap:
            words = info.split()
            info = words[0][: max(0, cap - len(fence.marker))] if words else ""
        opening, closing = f"{fence.marker}{info}\n", f"\n{fence.marker}"
        if self.limit - len(opening) - len(closing) < 24:
            return "", ""
        return opening, closing

    def _closing(self, fence: Fence | None) -> int:
        return len(self._decor(fence)[1])

    # --- where a page overflows ------------------------------------------------------------

    def _content(self, start: int, end: int) -> int:
        """Length of `text[start:end]` without trailing whitespace."""
        return _rstrip_end(self.text, start, end) - start

    def _measure(self, start: int, ls: int, q: int, state: Fence | None) -> int:
        """Length of the page `text[start:q]` (its last line taken as complete) would need,
        without its opening line."""
        after = _after(state, self.text[ls:q])
        return self._content(start, q) + self._closing(after)

    def _scan(self, start: int, fence: Fence | None, budget: int) -> tuple[int | None, list[_Line]]:
        """The first `q` where `text[start:q]` cannot be a page (None: the rest fits) and
        the lines seen up to there."""
        text = self.text
        lines: list[_Line] = []
        state = fence
        ls = start
        while True:
            newline = text.find("\n", ls)
            le = len(text) if newline == -1 else newline
            line = text[ls:le]
            if state is not None:
                bound = self._closing(state)
            else:
                run = _FENCE_RUN.match(line)
                bound = 1 + len(run.group(1)) if run and len(run.group(1)) >= 3 else 0
            if le > ls and self._content(start, le) + bound > budget:
                # Some prefix of this line may overflow: find the first one.
                q = max(ls + 1, start + budget - bound + 1)
                while q <= le:
                    if self._measure(start, ls, q, state) > budget:
                        part = _after(state, text[ls:q])
                        lines.append(_Line(ls, q, state, part, complete=False))
                        return q, lines
                    q += 1
            after = _after(state, line)
            lines.append(_Line(ls, le, state, after, complete=newline != -1))
            if newline == -1:
                return None, lines
            state = after
            ls = newline + 1

    # --- where to cut -----------------------------------------------------------------------

    def _fence_like(self, line: _Line) -> bool:
        visible = self.text[line.ls : line.le]
        if _FENCE_LIKE.match(visible):
            return True
        return not line.complete and _FENCE_PREFIX.fullmatch(visible) is not None

    def _starts_fence(self, n: int, high: int, complete: bool) -> bool:
        """Whether text from `n` (a line's rest, after a cut) is, or may grow into, a fence."""
        text = self.text
        if text[n] not in "`~":
            return False
        run = n
        while run < high and text[run] == text[n]:
            run += 1
        return run - n >= 3 or (run == high and not complete)

    def _choose(self, start: int, q: int, lines: list[_Line], budget: int) -> _Cut:
        text = self.text
        first = start
        while text[first].isspace():
            first += 1
        half = budget // 2

        def fits(end: int, fence: Fence | None) -> bool:
            return end - start + self._closing(fence) <= budget

        # 1. Before a code block that began on this page, if the overflow is inside it.
        if lines[-1].after is not None:
            for line in reversed(lines):
                if line.before is None:
                    if line.ls > first:
                        end = _rstrip_end(text, start, line.ls)
                        if fits(end, None):
                            return _Cut(end, line.ls, False, None)
                    break

        breaks: list[tuple[_Cut, bool]] = []  # line boundaries (True: a paragraph break)
        for previous, line in itertools.pairwise(lines):
            fence = line.before
            if line.ls <= first:
                continue
            if fence is not None and previous.before is None:
                continue  # the block would be empty on this page
            end = _rstrip_end(text, start, line.ls)
            if fits(end, fence):
                blank = not text[previous.ls : previous.le].strip()
                breaks.append((_Cut(end, line.ls, False, fence), fence is None and blank))

        spaces: list[tuple[_Cut, int]] = []  # mid-line cuts: 0 text, 1 code, 2 in a link
        for line in lines:
            low, high = max(line.ls, first + 1), line.le
            if high - low < 1 or self._fence_like(line):
                continue
            in_code = line.before is not None
            spans = [] if in_code else _protected(text, line.ls, high, not line.complete)
            closing = self._closing(line.before)
            for p in range(low, high):
                if text[p] not in _BLANKS or text[p - 1] in _BLANKS:
                    continue
                if p - start + closing > budget:
                    break
                n = p
                while n < high and text[n] in _BLANKS:
                    n += 1
                if n >= high or self._starts_fence(n, high, line.complete):
                    continue  # the rest is unseen, or would start with a fence
                rank = 1 if in_code else 0
                if rank == 0 and any(a < p < b for a, b in spans):
                    rank = 2
                spaces.append((_Cut(p, p, True, line.before), rank))

        def latest(cuts: list[_Cut]) -> _Cut | None:
            return max(cuts, key=lambda cut: cut.resume) if cuts else None

        late = [cut for cut, _ in breaks if cut.end - start >= half]
        text_spaces = [cut for cut, rank in spaces if rank == 0]
        for option in (
            [cut for cut, paragraph in breaks if paragraph and cut.end - start >= half],
            late,
            [cut for cut in text_spaces if cut.end - start >= half],
            [cut for cut, _ in breaks],
            text_spaces,
            [cut for cut, rank in spaces if rank == 1],
            [cut for cut, rank in spaces if rank == 2],
        ):
            chosen = latest(option)
            if chosen is not None:
                return chosen
        return self._hard_cut(start, q, first, lines, budget)

    def _hard_cut(self, start: int, q: int, first: int, lines: list[_Line], budget: int) -> _Cut:
        """Cut inside a word (or link) too long for any page."""
        text = self.text
        for line in reversed(lines):
            low = max(line.ls, first + 1)
            high = min(line.le, q - 1, start + budget - self._closing(line.before))
            if high < low:
                continue
            at = high
            for k in range(high, max(low, high - 8) - 1, -1):
                if text[k] not in "`~":
                    at = k
                    break
            return _Cut(_rstrip_end(text, start, at), at, True, line.before)
        at = max(first + 1, min(q - 1, start + budget))  # never reached with sane fences
        return _Cut(at, at, True, None)

    # --- pages ---------------------------------------------------------------------------

    def page(self, start: int, fence: Fence | None) -> tuple[Page | None, _Cut | None]:
        """The page starting at `start` (with `fence` open there) and where it was cut
        (None: it is the last page, which may still grow)."""
        opening, _ = self._decor(fence)
        budget = self.limit - len(opening)
        q, lines = self._scan(start, fence, budget)
        if q is None:
            end = _rstrip_end(self.text, start, len(self.text))
            return self._make(opening, start, end, lines[-1].after), None
        cut = self._choose(start, q, lines, budget)
        return self._make(opening, start, cut.end, cut.fence), cut

    def _make(self, opening: str, start: int, end: int, fence: Fence | None) -> Page | None:
        body = self.text[start:end]
        if not body.strip():
            return None
        return Page(opening, body, self._decor(fence)[1], start, end)

    def pages(self, position: tuple[int, bool, Fence | None]) -> Iterator[tuple[Page, _Cut | None]]:
        """Pages from a resume `position` (cut, cut mid-line, fence open there) on."""
        pos, mid_line, fence = position
        while True:
            start, fence = _resume(self.text, pos, mid_line, fence)
            if start >= len(self.text):
                return
            page, cut = self.page(start, fence)
            if page is not None:
                yield page, cut
            if cut is None:
                return
            pos, mid_line, fence = cut.resume, cut.mid_line, cut.fence


_START: tuple[int, bool, Fence | None] = (0, False, None)


def paginate(text: str, limit: int) -> list[Page]:
    """The pages of `text` with their structure (see `Page`)."""
    return [page for page, _ in _Splitter(text, limit).pages(_START)]


def split_pages(text: str, limit: int) -> list[str]:
    """Split Markdown into pages of at most `limit` (≥ 64) characters."""
    return [page.text for page in paginate(text, limit)]


def settled_pages(text: str, limit: int) -> tuple[list[str], str]:
    """For a text still streaming in: the pages that are final (they never change, whatever
    is appended) and the open tail (the last page so far, "" if none), which may."""
    final: list[str] = []
    tail = ""
    for page, cut in _Splitter(text, limit).pages(_START):
        if cut is None:
            tail = page.text
        else:
            final.append(page.text)
    return final, tail


class PageStream:
    """Pages of a growing text, without splitting it again from the start on every delta.

    `feed(delta)` returns the pages settled by it (show them as finished messages);
    `tail` is the last page so far, which may still change; `pages` is everything."""

    def __init__(self, limit: int) -> None:
        _Splitter("", limit)  # validates the limit
        self.limit = limit
        self.text = ""
        self.settled: list[str] = []
        self.tail = ""
        self._position = _START

    def feed(self, delta: str) -> list[str]:
        self.text += delta
        fresh: list[str] = []
        self.tail = ""
        for page, cut in _Splitter(self.text, self.limit).pages(self._position):
            if cut is None:
                self.tail = page.text
                break
            fresh.append(page.text)
            self._position = (cut.resume, cut.mid_line, cut.fence)
        self.settled.extend(fresh)
        return fresh

    @property
    def pages(self) -> list[str]:
        return [*self.settled, self.tail] if self.tail else list(self.settled)
