"""Mention safety on the exact bytes sent, one rule set for every platform.

Applied last, after every conversion (Markdown → mrkdwn, paging), to whatever text goes out.
The output holds

* no broadcast or special sequence: `<!channel>`, `<!here>`, `<!everyone>`,
  `<!subteam^S…|@label>` — no `<!` of any kind;
* no role or group ping (`<@&123>`), and a user ping (`<@U…>`, `<@W…>`, `<@123>`,
  `<@!123>`, with or without `|label`) only for the allowed ids (the person being
  answered); other users become `@` + their display name (an optional resolver; the id
  when it has none);
* no plain `@channel`, `@here` or `@everyone` (any case, at a word boundary);

and that holds for the text as sent and for every form of it after HTML entities are
decoded, any number of times: `&lt;!channel&gt;`, `&#60;!here&#62;`, `&#x3C;@U1&#x3E;`,
`&amp;lt;!everyone&amp;gt;`, `&#64;here`, `@&#104;ere`, and entities that only form after an
earlier round of decoding (`&&#108;t;`) are all made inert.

How: the text is read as *units*, each one character or one entity together with what it
decodes to after every round of decoding. Patterns are matched on the decoded values, and
made inert by inserting U+2060 WORD JOINER (invisible) between two units — between `<` and
`!`/`@`, between `@` and `here` — which stops them at every stage of decoding, since no
entity can form across a word joiner. An `&` that could still combine into a new entity in
a later round gets a word joiner after it too. A user mention not allowed is rewritten to
`@⁠Name`. Nothing else changes: text without pings passes through byte for byte.

`MentionGuard` does the same on a stream: `feed(delta)` returns the part that is decided
(final, never to be changed) and holds back only what is not yet (a trailing `<`, a partial
entity, `@every`, an unfinished `<@U…` id), a bounded amount whatever the text. For any
chunking, the pieces joined equal `defuse(full_text)`.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.entities import html5
from typing import Final

__all__ = ["WORD_JOINER", "MentionGuard", "Resolver", "defuse"]

log = logging.getLogger(__name__)

#: U+2060 WORD JOINER: invisible, and breaks every ping syntax it sits in.
WORD_JOINER: Final = "\u2060"

#: Display name for a user id, or None when unknown.
Resolver = Callable[[str], "str | None"]

_BROADCASTS = ("channel", "here", "everyone")
_ID_MAX = 32  # longer "ids" are no mention of anyone known
_DIGITS_MAX = 16  # a numeric entity with more digits is made inert outright
_CHAIN_MAX = 64  # so is an encoded ampersand chain longer than this (`&amp;amp;amp;…`)
_NAME_MAX = 32  # html.unescape reads at most this many characters of a named entity
_SPECIAL = re.compile(r"[<@&]")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_START = _ALNUM | {"#", ";"}  # what can extend an entity name or number
_CRITICAL = frozenset("<>@!&#;|")
_UNSAFE_IN_NAMES = re.compile(r"[<>&@|`\x00-\x1f\x7f\u2028\u2029]")


def _is_word(char: str) -> bool:
    """Python's `\\w` for one character."""
    return char.isalnum() or char == "_"


@dataclass(frozen=True, slots=True)
class _Unit:
    end: int  # index just past the unit
    value: str  # what it is after every round of HTML decoding
    raw: bool  # a plain character, not an entity
    barrier: bool = False  # needs a word joiner after it (it could still form an entity)


class _More(Exception):
    """More text is needed to decide (raised only while streaming)."""


_NONE: Final = (-1, "")  # no entity here: the `&` stays a literal ampersand


def _body(buf: str, j: int, final: bool) -> tuple[int, str] | None:
    """Decode the entity body at `buf[j:]`, just after an `&`, the way `html.unescape`
    does: `(end, value)`, `_NONE` if none decodes, None if it must be made inert (too long
    to decide)."""
    n = len(buf)
    if j >= n:
        if not final:
            raise _More
        return _NONE
    if buf[j] == "#":
        k = j + 1
        hexa = k < n and buf[k] in "xX"
        k += hexa
        digits = "0123456789abcdefABCDEF" if hexa else "0123456789"
        d = k
        while d < n and buf[d] in digits:
            d += 1
            if d - k > _DIGITS_MAX:
                return None
        if d == n and not final:
            raise _More
        if d == k:
            return _NONE
        end = d + 1 if d < n and buf[d] == ";" else d
        return end, html.unescape("&" + buf[j:end])
    k = j
    while k < n and k - j < _NAME_MAX and buf[k] in _ALNUM:
        k += 1
    if k == n and not final:
        raise _More
    name = buf[j:k]
    if k < n and buf[k] == ";" and name + ";" in html5:
        return k + 1, html5[name + ";"]
    for x in range(len(name), 1, -1):  # the longest known prefix, as html.unescape reads it
        if name[:x] in html5:
            return j + x, html5[name[:x]]
    return _NONE


def _composes(buf: str, j: int, final: bool) -> bool:
    """Whether a literal `&` before `buf[j]` could form an entity in a later round of
    decoding: its name or number runs into an entity that decodes to more of it."""
    n = len(buf)
    k = j
    if k < n and buf[k] == "#":
        k += 1
        if k < n and buf[k] in "xX":
            k += 1
    while k < n and buf[k] in _ALNUM and k - j <= _NAME_MAX + 2:
        k += 1
    if k == n:
        if not final:
            raise _More
        return False
    if buf[k] != "&" or k - j > _NAME_MAX + 2:
        return False
    follower = _amp(buf, k, final, check=False)
    return bool(follower.value) and follower.value[0] in _NAME_START


def _amp(buf: str, i: int, final: bool, *, check: bool = True) -> _Unit:
    """The unit starting with the `&` at `buf[i]`: an entity (possibly an encoded
    ampersand chain such as `&amp;lt;` or `&#38;#60;`, decoded through every round) or a
    literal `&`."""
    j = i + 1
    while True:
        decoded = _body(buf, j, final)
        if decoded is None or j - i > _CHAIN_MAX:
            return _Unit(i + 1, "&", raw=False, barrier=True)  # too long to decide: inert
        end, value = decoded
        if end == -1:
            barrier = check and _composes(buf, j, final)
            return _Unit(j, "&", raw=j == i + 1, barrier=barrier)
        if value == "&":
            j = end  # an encoded ampersand: next round it joins what follows
            continue
        if not value or (len(value) > 1 and _CRITICAL.intersection(value)):
            return _Unit(i + 1, "&", raw=False, barrier=True)  # vanishing or odd: inert
        return _Unit(end, value, raw=False)


def _unit(buf: str, i: int, final: bool) -> _Unit | None:
    """The unit at `buf[i]`; None at the end of the text."""
    if i >= len(buf):
        if not final:
            raise _More
        return None
    char = buf[i]
    if char != "&":
        return _Unit(i + 1, char, raw=True)
    return _amp(buf, i, final)


def _single(unit: _Unit | None) -> str:
    """The unit's value as one ASCII character, or ""."""
    if unit is None or len(unit.value) != 1 or not unit.value.isascii():
        return ""
    return unit.value


class MentionGuard:
    """Makes pings inert in a stream of text (see the module's docstring).

    `allowed_users`: ids whose mentions stay live (the person being answered).
    `resolve`: display name for a user id, used when a mention of someone else is
    rewritten."""

    def __init__(self, allowed_users: Iterable[str] = (), resolve: Resolver | None = None) -> None:
        self.allowed = frozenset(allowed_users)
        self.resolve = resolve
        self._buffer = ""
        self._word = False  # the last character sent is a word character

    @property
    def held(self) -> str:
        """The text held back until it is decided."""
        return self._buffer

    def feed(self, delta: str) -> str:
        """Take more text; return the part that is now decided."""
        self._buffer += delta
        return self._drain(final=False)

    def end(self) -> str:
        """The text is complete: return what was held back, decided."""
        out = self._drain(final=True)
        self._word = False
        return out

    def _drain(self, *, final: bool) -> str:
        buf = self._buffer
        out: list[str] = []
        i = 0
        while i < len(buf):
            special = _SPECIAL.search(buf, i)
            stop = special.start() if special else len(buf)
            if stop > i:
                out.append(buf[i:stop])
                self._word = _is_word(buf[stop - 1])
                i = stop
                continue
            try:
                i, text, self._word = self._decide(buf, i, final)
            except _More:
                break
            out.append(text)
        self._buffer = buf[i:]
        return "".join(out)

    def _decide(self, buf: str, i: int, final: bool) -> tuple[int, str, bool]:
        """Decide the unit at `buf[i]`: (where the next one starts, text to send, whether
        that text ends with a word character)."""
        unit = _unit(buf, i, final)
        assert unit is not None
        raw = buf[i : unit.end]
        if unit.barrier:
            return unit.end, raw + WORD_JOINER, False
        if unit.value == "<":
            return self._angle(buf, i, unit, final)
        if unit.value == "@" and not self._word:
            return self._plain(buf, i, unit, final)
        return unit.end, raw, unit.raw and _is_word(unit.value)

    def _angle(self, buf: str, i: int, opener: _Unit, final: bool) -> tuple[int, str, bool]:
        """`<` then: `!` (broadcasts, groups: always inert), `@` (a user or role mention:
        decided at the end of its id), or anything else (plain text)."""
        raw = buf[i : opener.end]
        inert = opener.end, raw + WORD_JOINER, False
        at = _unit(buf, opener.end, final)
        if _single(at) == "!":
            return inert
        if at is None or _single(at) != "@":
            return opener.end, raw, False
        k = at.end
        unit = _unit(buf, k, final)
        bang = _single(unit) == "!"
        plain = True
        if bang:
            assert unit is not None
            plain = unit.raw
            k = unit.end
            unit = _unit(buf, k, final)
        ident: list[str] = []
        while (char := _single(unit)) and char in _ALNUM:
            assert unit is not None
            if len(ident) == _ID_MAX:
                return inert
            ident.append(char)
            plain = plain and unit.raw
            k = unit.end
            unit = _unit(buf, k, final)
        user = "".join(ident)
        closer = _single(unit)
        if not user or closer not in (">", "|"):
            return inert  # a role (`<@&…`), or nothing a platform would read as a mention
        assert unit is not None
        if user in self.allowed and plain and unit.raw:
            return k, buf[i:k], True  # the asker: stays live (the closer is read next)
        if closer != ">":
            return inert  # someone else with a label: shown as written, inert
        name = self._display(user)
        # A word joiner first too: a `&lt` sent just before must not meet this `@`.
        return unit.end, f"{WORD_JOINER}@{WORD_JOINER}{name}", _is_word(name[-1])

    def _plain(self, buf: str, i: int, at: _Unit, final: bool) -> tuple[int, str, bool]:
        """`@` after a non-word character: `@channel`, `@here`, `@everyone` become inert."""
        letters = ""
        k = at.end
        while True:
            unit = _unit(buf, k, final)
            char = _single(unit).lower()
            if char.isalpha() and any(b.startswith(letters + char) for b in _BROADCASTS):
                assert unit is not None
                letters += char
                k = unit.end
                continue
            # An entity after the name may decode to a word character only in a later
            # round: at the stages before, the name ends at a word boundary.
            boundary = unit is None or not (unit.raw and _is_word(unit.value))
            break
        text = buf[i : at.end]
        if letters in _BROADCASTS and boundary:
            text += WORD_JOINER
        return at.end, text, False

    def _display(self, user: str) -> str:
        name: str | None = None
        if self.resolve is not None:
            try:
                name = self.resolve(user)
            except Exception:
                log.exception("could not resolve the display name of %s", user)
        cleaned = " ".join(_UNSAFE_IN_NAMES.sub("", name or "").split())
        return cleaned or user


def defuse(text: str, allowed_users: Iterable[str] = (), resolve: Resolver | None = None) -> str:
    """`text` with every ping made inert but mentions of `allowed_users`."""
    guard = MentionGuard(allowed_users, resolve)
    return guard.feed(text) + guard.end()
