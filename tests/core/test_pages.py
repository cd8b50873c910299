"""The one Markdown splitter: pages within the limit, fences balanced on every page (checked
with markdown-it, an independent CommonMark parser), no word or link broken, nothing lost,
and pages already shown never change as the text grows."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from core.outbound import PageStream, open_fence, paginate, settled_pages, split_pages
from core.outbound.pages import Page

_COMMONMARK = MarkdownIt("commonmark")
_CLOSING = re.compile(r" {0,3}(`{3,}|~{3,})\s*")

# --- random Markdown ---------------------------------------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.,!?-'", min_size=1, max_size=12)
_long_word = st.text(alphabet="abcdefghij", min_size=40, max_size=300)
_label = st.lists(_word, min_size=1, max_size=5).map(" ".join)
_url = _word.map(lambda w: f"https://example.com/{w}")
_link = st.one_of(
    st.builds(lambda label, url: f"[{label}]({url})", _label, _url),
    st.builds(lambda label, url: f"<{url}|{label}>", _label, _url),
    _url,
)
_inline_code = _label.map(lambda words: f"`{words}`")
_token = st.one_of(_word, _word, _word, _word, _link, _inline_code, _long_word)
_line = st.lists(_token, min_size=1, max_size=14).map(" ".join)
_paragraph = st.lists(_line, min_size=1, max_size=4).map("\n".join)

_marker = st.sampled_from(["```", "````", "~~~", "~~~~", "`````"])
_info = st.sampled_from(["", "python", "js", " c++ ", "md title=x", "sh"])
_code_line = st.one_of(
    st.lists(_word, max_size=8).map(" ".join),
    st.builds(lambda n, line: " " * n + line, st.integers(0, 8), _line),
    st.sampled_from(["", "```", "~~~", "```py", "    ```"]),  # shorter fences inside
)


@st.composite
def _code_block(draw: st.DrawFn) -> str:
    marker = draw(_marker)
    lines = draw(st.lists(_code_line, min_size=0, max_size=25))
    lines = [ln for ln in lines if not _closes(ln, marker)]  # shorter inner fences stay
    closing = draw(st.sampled_from([marker, marker, marker + marker[0], None]))
    block = [marker + draw(_info), *lines]
    if closing is not None:
        block.append(closing)
    return "\n".join(block)


def _closes(line: str, marker: str) -> bool:
    match = _CLOSING.fullmatch(line)
    if match is None:
        return False
    run = match.group(1)
    return run[0] == marker[0] and len(run) >= len(marker)


_block = st.one_of(_paragraph, _paragraph, _code_block())
_document = st.lists(
    st.tuples(_block, st.sampled_from(["\n\n", "\n\n", "\n", "\n\n\n"])), min_size=1, max_size=12
).map(lambda parts: "".join(block + sep for block, sep in parts).rstrip("\n"))
_limit = st.one_of(st.integers(64, 200), st.sampled_from([300, 2000]))


# --- what every split must satisfy -------------------------------------------------------


def _fences_closed(page: str) -> bool:
    """markdown-it's view: every code block on the page is closed on the page."""
    lines = page.split("\n")
    for token in _COMMONMARK.parse(page):
        if token.type != "fence":
            continue
        assert token.map is not None
        start, end = token.map
        last = lines[end - 1] if end - 1 < len(lines) else ""
        match = _CLOSING.fullmatch(last)
        if end - 1 <= start or match is None:
            return False
        run = match.group(1)
        if run[0] != token.markup[0] or len(run) < len(token.markup):
            return False
    return True


def _check(text: str, limit: int, pages: list[Page]) -> None:
    for page in pages:
        assert len(page.text) <= limit
        assert page.body.strip()
        assert page.body == text[page.start : page.end]
        assert _fences_closed(page.text), page.text
        assert open_fence(page.text) is None
    # Nothing lost: the bodies cover the text in order, with only whitespace between (or a
    # block's closing fence, when the page before closed the block already).
    edges = [0] + [x for page in pages for x in (page.start, page.end)] + [len(text)]
    closed = [False] + [bool(page.closing) for page in pages]
    for gap_start, gap_end, fenced in zip(edges[::2], edges[1::2], closed, strict=True):
        assert gap_start <= gap_end
        gap = text[gap_start:gap_end].strip()
        assert not gap or (fenced and _CLOSING.fullmatch(gap)), gap
    # No word broken but one too long for a page.
    for before, after in itertools.pairwise(pages):
        if before.end == after.start and not text[before.end - 1].isspace():
            word_start = text.rfind(" ", 0, before.end) + 1
            word_end = min(i for i in (text.find(" ", after.start), len(text)) if i >= 0)
            word = text[word_start:word_end].split("\n")
            assert max(len(w) for w in word) > limit // 2, (before.text, after.text)
    # No link broken but one too long for a page.
    for match in re.finditer(r"\[[^\]\n]*\]\([^)\s]*\)|<https://[^>\n]*>", text):
        if match.end() - match.start() > limit * 3 // 4 or open_fence(text[: match.start()]):
            continue  # too long for a page, or code (not a link)
        assert any(p.start <= match.start() and match.end() <= p.end for p in pages), match[0]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_document, _limit)
def test_pages_fit_close_their_fences_and_lose_nothing(text: str, limit: int) -> None:
    pages = paginate(text, limit)
    assert [p.text for p in pages] == split_pages(text, limit)
    _check(text, limit, pages)
    # One page when it fits, with room for a closing fence while a block is still open
    # (a longer text whose block is unclosed must be split, so must every text it begins).
    if text.strip() and len(text) + 6 <= limit and open_fence(text) is None:
        assert split_pages(text, limit) == [text.strip("\n").rstrip()]


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_document, _document, _limit, st.data())
def test_pages_already_shown_never_change(
    text: str, more: str, limit: int, data: st.DataObject
) -> None:
    full = text + "\n" + more
    final_pages = split_pages(full, limit)
    cut = data.draw(st.integers(0, len(full)))
    shown = split_pages(full[:cut], limit)
    assert shown[:-1] == final_pages[: max(len(shown) - 1, 0)]
    settled, tail = settled_pages(full[:cut], limit)
    assert settled == final_pages[: len(settled)]
    assert (tail == "") == (not shown or settled == shown)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_document, _limit, st.lists(st.integers(1, 60), min_size=1, max_size=40))
def test_a_page_stream_settles_exactly_the_final_pages(
    text: str, limit: int, sizes: list[int]
) -> None:
    final_pages = split_pages(text, limit)
    stream = PageStream(limit)
    position = 0
    settled: list[str] = []
    for size in sizes * (len(text) // sum(sizes) + 1):
        if position >= len(text):
            break
        fresh = stream.feed(text[position : position + size])
        position += size
        settled += fresh
        assert settled == final_pages[: len(settled)]
        assert stream.pages[: len(settled)] == settled
    assert stream.pages == final_pages


# --- examples ------------------------------------------------------------------------------


def test_a_code_block_moves_whole_to_the_next_page_when_it_starts_late() -> None:
    intro = "Some words. " * 10
    code = "```python\n" + "\n".join(f"x = {i}" for i in range(20)) + "\n```"
    pages = split_pages(f"{intro}\n\n{code}", 200)
    assert pages[0] == intro.strip()
    assert pages[1].startswith("```python\nx = 0")


def test_a_long_code_block_is_closed_and_reopened_with_marker_and_info() -> None:
    code = "~~~~js title=a.js\n" + "\n".join(f"let v{i} = {i};" for i in range(100)) + "\n~~~~"
    pages = split_pages("Intro\n\n" + code + "\n\nOutro", 300)
    assert pages[0] == "Intro"
    assert len(pages) > 4
    for page in pages[1:-1]:
        assert page.startswith("~~~~js title=a.js\n") and page.endswith("\n~~~~")
    assert pages[-1].endswith("~~~~\n\nOutro")


def test_a_shorter_inner_fence_does_not_close_the_block() -> None:
    inner = "\n".join(["```", "inner code", "```"] * 12)
    text = f"````md\n{inner}\n````\nafter"
    pages = split_pages(text, 80)
    assert len(pages) > 2
    for page in pages[:-1]:
        assert page.startswith("````md\n") and page.endswith("\n````")
    assert pages[-1].endswith("````\nafter")


def test_backticks_in_the_info_string_make_no_fence() -> None:
    text = "``` not `a` fence\n" + "word " * 40
    assert open_fence(text) is None
    assert all(not p.endswith("```") for p in split_pages(text, 80))


def test_an_unclosed_block_is_closed_on_the_last_page() -> None:
    assert split_pages("text\n```py\nprint(1)", 100) == ["text\n```py\nprint(1)\n```"]


def test_a_paragraph_boundary_is_preferred_past_half_a_page() -> None:
    first = " ".join(["alpha"] * 30)
    second = " ".join(["beta"] * 30)
    assert split_pages(f"{first}\n\n{second}", 250) == [first, second]


def test_a_link_moves_whole_to_the_next_page() -> None:
    text = "word " * 10 + "[a link with several words](https://example.com/page) end"
    pages = split_pages(text, 80)
    assert any("[a link with several words](https://example.com/page)" in p for p in pages)


def test_a_word_longer_than_a_page_is_the_only_thing_cut() -> None:
    url = "https://example.com/" + "x" * 400
    pages = split_pages(f"see {url} ok", 150)
    assert all(len(p) <= 150 for p in pages)
    assert "".join(pages).replace(" ", "") == f"see{url}ok"


def test_short_and_empty_texts() -> None:
    assert split_pages("", 64) == []
    assert split_pages("\n\n  \n", 64) == []
    assert split_pages("hello  \n", 64) == ["hello"]
    assert split_pages("x" * 2000, 2000) == ["x" * 2000]
    assert settled_pages("hello", 64) == ([], "hello")
    with pytest.raises(ValueError, match="at least 64"):
        split_pages("text", 10)
