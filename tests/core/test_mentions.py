"""Mention safety: whatever the model writes (raw, entity-encoded at any depth, any label
length, cut into any chunks), the bytes sent hold no live broadcast, group or non-asker
ping — judged by an independent detector that decodes HTML entities again and again."""

from __future__ import annotations

import html
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.outbound import WORD_JOINER, MentionGuard, defuse
from tests.core.ping_detector import live_pings

ASKER = "U0ASKER"
ALLOWED = (ASKER, "42")
NAMES = {"U0BOB": "Bob Smith", "U0EVIL": "<!channel> &lt;!here&gt;", "7": "here"}

# --- how a character can be written --------------------------------------------------------

_NAMED = {"<": ["lt", "LT"], ">": ["gt", "GT"], "!": ["excl"], "@": ["commat"], "&": ["amp"]}


@st.composite
def _encoded(draw: st.DrawFn, char: str, depth: int = 0) -> str:
    """`char` as written raw or as one of its HTML entities, maybe encoded again."""
    forms = ["raw", "decimal", "hex"] + (["named"] if char in _NAMED else [])
    form = draw(st.sampled_from(forms))
    if form == "raw" or depth > 2:
        return char
    if form == "decimal":
        body = "#" + "0" * draw(st.integers(0, 3)) + str(ord(char))
    elif form == "hex":
        body = draw(st.sampled_from(["#x", "#X"])) + format(ord(char), draw(st.sampled_from("xX")))
    else:
        body = draw(st.sampled_from(_NAMED[char]))
    semicolon = draw(st.booleans()) or (form == "named" and body not in ("lt", "gt", "amp"))
    entity = "&" + body + (";" if semicolon else "")
    if draw(st.integers(0, 3)) == 0:  # encode the ampersand again: &amp;lt; &#38;#60; …
        return draw(_encoded("&", depth + 1)) + entity[1:]
    return entity


@st.composite
def _written(draw: st.DrawFn, text: str, letters: bool = False) -> str:
    """`text` with its special characters (and maybe letters) in random encodings."""
    out = []
    for char in text:
        if char in "<>!@&" or (letters and draw(st.integers(0, 4)) == 0):
            out.append(draw(_encoded(char)))
        else:
            out.append(char)
    return "".join(out)


_label = st.text(alphabet="abcdefgh @-_.", min_size=0, max_size=220)
_mention = st.one_of(
    st.sampled_from(["<!channel>", "<!here>", "<!everyone>", "<!subteam^S123>", "<!here|here>"]),
    st.builds(lambda label: f"<!channel|{label}>", _label),
    st.builds(lambda label: f"<!subteam^S0DEVS|@{label}>", _label),
    st.sampled_from(["<@U0BOB>", "<@W0BOB>", "<@123>", "<@!123>", "<@&456>", "<@U0EVIL>"]),
    st.sampled_from(["<@7>", f"<@{ASKER}>", "<@!42>", "<@U0NOBODY>", "<@>", "<@U1"]),
    st.builds(lambda label: f"<@U0BOB|{label}>", _label),
    st.sampled_from(["@everyone", "@here", "@channel", "@Here", "@EVERYONE", "x@here", "(@here)"]),
).flatmap(lambda m: _written(m, letters=True))

_benign_token = st.sampled_from(
    [
        "hello", "the", "deploy", "is", "done.", "a < b", "x > y", "R&D", "AT&T", "Q&A",
        "me@example.com", "me@here.com", "@hereford", "@alice", "@channels", "#channel",
        "&amp;", "&lt;b&gt;", "a &amp;&amp; b", "&#8217;", "&copy;", "<#C0GENERAL|general>",
        "<https://example.com|docs>", "`code`", "<b>bold</b>", "1 < 2 > 0", "here", "@",
        "<", ">", "&", "&&", "&lt;", "&gt;", "a<b", "email: x@y.z", "\n", "\n\n```\n", "  ",
    ]
)  # fmt: skip
_benign = st.lists(_benign_token, max_size=40).map(" ".join)
_hostile = st.lists(st.one_of(_benign_token, _mention), max_size=30).map(" ".join)


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    edges = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(edges)]


def _streamed(text: str, cuts: list[int], allowed: tuple[str, ...] = ALLOWED) -> tuple[str, int]:
    guard = MentionGuard(allowed, NAMES.get)
    out, most_held = [], 0
    for chunk in _chunks(text, cuts):
        out.append(guard.feed(chunk))
        most_held = max(most_held, len(guard.held))
    out.append(guard.end())
    return "".join(out), most_held


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_hostile, st.lists(st.integers(0, 10_000), max_size=30))
def test_nothing_sent_can_ping_and_streaming_changes_nothing(text: str, cuts: list[int]) -> None:
    whole = defuse(text, ALLOWED, NAMES.get)
    assert live_pings(whole, ALLOWED) == []
    streamed, most_held = _streamed(text, cuts)
    assert streamed == whole
    assert most_held <= 200  # only what is undecided is held, never a long label
    assert defuse(whole, ALLOWED, NAMES.get) == whole  # nothing left to do


@_SETTINGS
@given(_benign, st.lists(st.integers(0, 10_000), max_size=10))
def test_text_without_pings_passes_through_byte_for_byte(text: str, cuts: list[int]) -> None:
    assert live_pings(text) == []
    assert defuse(text) == text
    assert _streamed(text, cuts)[0] == text


@_SETTINGS
@given(_hostile, st.lists(st.integers(0, 10_000), max_size=10))
def test_the_askers_own_mention_stays_live(text: str, cuts: list[int]) -> None:
    text = f"<@{ASKER}> {text} <@!42>|"
    out = defuse(text, ALLOWED)
    assert out.startswith(f"<@{ASKER}> ")
    assert out.endswith("<@!42>|")
    assert _streamed(text, cuts)[0] == defuse(text, ALLOWED, NAMES.get)


_fragment = st.sampled_from(
    [
        "&", "&", "#", ";", "<", ">", "!", "@", "|", " ", "lt", "LT", "gt", "amp", "AMP",
        "x3c", "X3C", "x3e", "x26", "x40", "x21", "60", "060", "62", "38", "64", "33", "0",
        "commat", "excl", "here", "channel", "everyone", "U0BOB", ASKER, "42", "l", "t",
        "&#108;", "&#116;", "&amp;", "&#35;", "&#59;", "&lt;", "&#64;", "&#104;", "\n",
    ]
)  # fmt: skip


@_SETTINGS
@given(st.lists(_fragment, max_size=60).map("".join), st.lists(st.integers(0, 999), max_size=20))
def test_no_soup_of_entity_fragments_comes_out_live(text: str, cuts: list[int]) -> None:
    whole = defuse(text, ALLOWED, NAMES.get)
    assert live_pings(whole, ALLOWED) == []
    assert _streamed(text, cuts)[0] == whole


# --- the bypasses reported in the issue, and other examples --------------------------------

_ISSUE = [
    "&lt;!channel&gt;",
    "&#60;!everyone&#62;",
    "&lt;!subteam^S123&gt;",
    "&lt;@U999&gt;",
    "*TL;DR:* &lt;!channel&gt; urgent…",
    "Sure: <!here> deploy is done",
    "&LT;!here&GT; &#060;!here&#062; &#x3c;!here&#x3e; &#X3C;!here&#X3E;",
    "&amp;lt;!channel&amp;gt; &amp;amp;lt;!here&amp;amp;gt; &#38;lt;!everyone&#38;gt;",
    "&#64;here &#x40;channel &commat;everyone @&#104;ere &lt;&excl;channel&gt;",
    "&&#108;t;!here&gt;",  # an entity that only forms after a first round of decoding
    "&#60!channel&#62 &lt!here&gt",  # no semicolons
    "<@&123> <@!999> <@999> @everyone @here",  # Discord's forms
]


@pytest.mark.parametrize("text", _ISSUE)
def test_the_reported_bypasses_are_closed(text: str) -> None:
    assert live_pings(text) != []  # the detector sees the ping…
    out = defuse(text, ALLOWED)
    assert live_pings(out) == []  # …and it is gone
    if "999" not in text:  # no one rewritten: it reads as written
        assert out.replace(WORD_JOINER, "") == text
    for size in (1, 2, 3, 7):
        guard = MentionGuard(ALLOWED)
        pieces = [guard.feed(text[i : i + size]) for i in range(0, len(text), size)]
        assert "".join(pieces) + guard.end() == out


def test_a_ping_with_a_long_label_split_across_chunks_stays_dead() -> None:
    text = "Heads up <!channel|" + "x" * 200 + "> now"
    guard = MentionGuard()
    pieces = []
    for i in range(0, len(text), 80):
        pieces.append(guard.feed(text[i : i + 80]))
        assert len(guard.held) <= 2  # decided at `<!`: the label is never held back
    joined = "".join(pieces) + guard.end()
    assert joined == defuse(text)
    assert live_pings(joined) == []
    assert joined.replace(WORD_JOINER, "") == text  # it reads as written


def test_other_users_become_their_display_names() -> None:
    out = defuse("Ask <@U0BOB>, <@U0NOBODY> or <@U0EVIL>.", ALLOWED, NAMES.get)
    visible = out.replace(WORD_JOINER, "")
    assert visible == "Ask @Bob Smith, @U0NOBODY or @!channel lt;!heregt;."
    assert live_pings(out) == []
    assert defuse("<@7>", resolve=NAMES.get) == f"{WORD_JOINER}@{WORD_JOINER}here"


def test_what_is_held_back_while_streaming() -> None:
    guard = MentionGuard([ASKER])
    assert guard.feed("Hello <") == "Hello "
    assert guard.feed("!") == "<" + WORD_JOINER + "!"
    assert guard.feed("here> and @every") == "here> and "
    assert guard.held == "@every"
    assert guard.feed("one") == ""
    assert guard.feed("!") == "@" + WORD_JOINER + "everyone!"
    assert guard.feed(f" <@{ASKER[:3]}") == " "
    assert guard.feed(ASKER[3:]) == ""
    assert guard.feed("> &l") == f"<@{ASKER}> "
    assert guard.feed("t;") == ""
    assert guard.feed(" ok") == "&lt; ok"
    assert guard.end() == ""


def test_plain_text_details() -> None:
    assert defuse("email me@here.com or @hereford") == "email me@here.com or @hereford"
    assert defuse("a &lt; b &amp;&amp; c &gt; d") == "a &lt; b &amp;&amp; c &gt; d"
    assert defuse("<https://example.com|link> <#C1|general>") == (
        "<https://example.com|link> <#C1|general>"
    )
    assert defuse("@here.") == f"@{WORD_JOINER}here."
    assert html.unescape(defuse("&#0000000000000000060;!here&gt;")) != "<!here>"
