"""Pages of at most 2,000 characters that never break a word or a code block, and the
per-channel edit budget."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.discord.format import (
    MESSAGE_LIMIT,
    PAGE_LIMIT,
    close_fence,
    open_fence,
    quote_prompt,
    split_message,
    status_line,
    thread_name,
)
from bots.discord.sink import EditPacer

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.,!?-", min_size=1, max_size=24)
_prose = st.lists(_word, min_size=1, max_size=40).map(" ".join)
_code = st.tuples(
    st.sampled_from(["", "python", "js", "c++"]),
    st.lists(st.lists(_word, max_size=8).map(" ".join), min_size=1, max_size=60),
).map(lambda t: f"```{t[0]}\n" + "\n".join(t[1]) + "\n```")
_block = st.one_of(_prose, _prose, _code, st.just(""))
_documents = st.lists(_block, min_size=1, max_size=60).map("\n\n".join)


def _words(text: str) -> list[str]:
    return [w for w in text.split() if not w.startswith("```")]


@settings(max_examples=150, deadline=None)
@given(_documents, st.sampled_from([120, 300, PAGE_LIMIT]))
def test_pages_fit_keep_every_word_and_close_every_code_block(text: str, limit: int) -> None:
    pages = split_message(text, limit)
    assert all(len(page) <= limit for page in pages)
    assert all(page.strip() for page in pages)
    assert all(open_fence(page) is None for page in pages)
    assert _words("\n".join(pages)) == _words(text)


@settings(max_examples=150, deadline=None)
@given(_documents, st.floats(min_value=0.05, max_value=0.95))
def test_earlier_pages_never_change_as_text_streams_in(text: str, fraction: float) -> None:
    full = split_message(text, 200)
    partial = split_message(text[: int(len(text) * fraction)], 200)
    assert partial[:-1] == full[: max(len(partial) - 1, 0)]


def test_a_code_block_is_moved_whole_to_the_next_page_when_it_fits_there() -> None:
    intro = "Some words. " * 10
    code = "```python\n" + "\n".join(f"x = {i}" for i in range(20)) + "\n```"
    pages = split_message(f"{intro}\n\n{code}", 200)
    assert pages[0] == intro.strip()
    assert pages[1].startswith("```python\nx = 0")


def test_a_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "```js\n" + "\n".join(f"let v{i} = {i};" for i in range(100)) + "\n```"
    pages = split_message(code, 300)
    assert len(pages) > 3
    for page in pages:
        assert page.startswith("```js\n") and page.endswith("\n```")


def test_a_paragraph_boundary_is_preferred_past_half_a_page() -> None:
    first = " ".join(["alpha"] * 30)  # 179 characters
    second = " ".join(["beta"] * 30)
    pages = split_message(f"{first}\n\n{second}", 250)
    assert pages == [first, second]


def test_a_word_longer_than_a_page_is_the_only_thing_cut() -> None:
    url = "https://example.com/" + "x" * 400
    pages = split_message(f"see {url} ok", 150)
    assert all(len(p) <= 150 for p in pages)
    assert "".join(pages).replace(" ", "") == f"see{url}ok"


def test_short_and_empty_texts() -> None:
    assert split_message("") == []
    assert split_message("\n\n  \n") == []
    assert split_message("hello  \n") == ["hello"]
    assert split_message("x" * MESSAGE_LIMIT, MESSAGE_LIMIT) == ["x" * MESSAGE_LIMIT]
    with pytest.raises(ValueError, match="at least"):
        split_message("text", 10)


def test_fences_and_labels() -> None:
    assert open_fence("```py\nprint(1)") == "py"
    assert open_fence("```py\nprint(1)\n```") is None
    assert open_fence("inline ```code``` here") is None
    assert close_fence("```\nx") == "```\nx\n```"
    assert status_line("Using   current_time…") == "-# Using current_time…"
    assert len(status_line("y" * 500)) <= 93
    assert thread_name("<@123> What's the **plan** for `deploy`?") == "What's the plan for deploy?"
    assert thread_name("   ") == "Conversation"
    assert len(thread_name("word " * 100)) <= 90
    assert quote_prompt("a *b* `c`", "Ann_B") == "> **Ann\\_B:** a \\*b\\* \\`c\\`\n\n"


async def test_the_pacer_spaces_writes_per_channel_and_lets_final_text_first() -> None:
    pacer = EditPacer(0.1)
    order: list[str] = []
    spans: list[tuple[float, float]] = []

    async def write(name: str, channel: int, *, urgent: bool = False) -> None:
        async with pacer.slot(channel, urgent=urgent):
            started = time.monotonic()
            await asyncio.sleep(0.03)  # the request to Discord
            order.append(name)
            spans.append((started, time.monotonic()))

    await write("first", 1)
    waiting = [
        asyncio.create_task(write("interim", 1)),
        asyncio.create_task(write("final", 1, urgent=True)),
    ]
    await asyncio.sleep(0)
    other = asyncio.create_task(write("other channel", 2))
    await asyncio.gather(*waiting, other)
    assert order == ["first", "other channel", "final", "interim"]
    same = [span for name, span in zip(order, spans, strict=True) if name != "other channel"]
    # each write starts a full interval after the previous one finished
    assert all(b[0] - a[1] >= 0.095 for a, b in itertools.pairwise(same))
    await pacer.close()


async def test_a_cancelled_waiter_does_not_take_a_slot() -> None:
    pacer = EditPacer(0.05)
    async with pacer.slot(7):
        pass
    cancelled = asyncio.create_task(pacer.slot(7).__aenter__())
    await asyncio.sleep(0)
    cancelled.cancel()
    started = time.monotonic()
    async with pacer.slot(7):
        assert 0.03 <= time.monotonic() - started < 0.1
    await pacer.close()
