"""Text both ways between the model and Slack.

Out (model Markdown → Slack):

* `to_mrkdwn` for `text` / `chat.update` (Slack's own mrkdwn dialect, through the maintained
  `slackify-markdown` converter), `safe_markdown` for the streaming API's `markdown_text`
  (Slack renders standard Markdown there). Both neutralise broadcast pings: `<!channel>`,
  `<!here>`, `<!everyone>`, `<!subteam^…>` and the plain `@channel` / `@here` / `@everyone`.
* `split_markdown` cuts a long answer into message-sized parts without breaking a code
  block (a block cut in two is closed at the end of one part and reopened at the start of
  the next, with its language).
* `held_back` tells a streaming sender how much of the tail to keep until more text arrives,
  so a ping split across two deltas (`<!he` + `re>`) is still recognised.

In (Slack → model): `mention_ids` and `to_plain` turn Slack's markup (`<@U…>`, `<#C…|name>`,
`<url|label>`, `&amp;`) into the plain text the model reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from slackify_markdown import slackify_markdown  # type: ignore[import-untyped]

__all__ = [
    "Fence",
    "held_back",
    "mention_ids",
    "open_fence",
    "safe_markdown",
    "split_markdown",
    "to_mrkdwn",
    "to_plain",
]

# U+2060 WORD JOINER: invisible, keeps the word together, and breaks Slack's parsing of a
# ping without changing what the reader sees.
_JOIN = "\u2060"
_PINGS = ("channel", "here", "everyone")
_SPECIAL = re.compile(r"<!([^>\n]*)>")
_PLAIN_PING = re.compile(r"(?<![\w@])@(channel|here|everyone)\b", re.IGNORECASE)


def _no_plain_pings(text: str) -> str:
    return _PLAIN_PING.sub(lambda m: "@" + _JOIN + m.group(1), text)


def safe_markdown(text: str) -> str:
    """Markdown for `markdown_text`, with every broadcast ping made inert."""
    text = _SPECIAL.sub(lambda m: "<" + _JOIN + "!" + m.group(1) + ">", text)
    return _no_plain_pings(text)


_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Standard Markdown (as models write it) → Slack mrkdwn, pings neutralised.

    The converter escapes `&`, `<` and `>` in text but keeps Slack control sequences such
    as `<!here>` and leaves code as it is; here the special sequences are shown as text and
    code is escaped too (Slack unescapes it for display)."""
    if not markdown.strip():
        return ""
    specials: list[str] = []

    def keep(match: re.Match[str]) -> str:
        specials.append(match.group(1))
        return f"\ue000{len(specials) - 1}\ue001"

    source = _SPECIAL.sub(keep, markdown.replace("\ue000", "").replace("\ue001", ""))
    converted = cast(str, slackify_markdown(source)).strip("\n")
    converted = _CODE.sub(lambda m: _escape(m.group(0)), converted)
    converted = _PLACEHOLDER.sub(
        lambda m: "&lt;!" + _escape(specials[int(m.group(1))]) + "&gt;", converted
    )
    return _no_plain_pings(converted)


def held_back(text: str) -> int:
    """How many characters at the end of `text` to keep back while streaming: the start of
    something that could still become a ping once the next delta arrives."""
    tail_start = max(0, len(text) - 80)
    tail = text[tail_start:]
    hold = 0
    angle = tail.rfind("<")
    if angle != -1 and ">" not in tail[angle:] and "\n" not in tail[angle:]:
        hold = len(tail) - angle
    at = tail.rfind("@")
    if at != -1:
        word = tail[at + 1 :].lower()
        if any(p.startswith(word) for p in _PINGS):
            hold = max(hold, len(tail) - at)
    return hold


# --- code-fence aware splitting ------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True, slots=True)
class Fence:
    """An open code fence: its marker (```` ``` ```` or `~~~`, possibly longer) and info."""

    marker: str
    info: str

    @property
    def opening(self) -> str:
        return f"{self.marker}{self.info}"

    @property
    def closing(self) -> str:
        return self.marker


def open_fence(text: str, start: Fence | None = None) -> Fence | None:
    """The code fence still open at the end of `text` (None when outside code). `start`
    is the fence already open before `text` begins."""
    fence = start
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if not match:
            continue
        marker, info = match.group(1), match.group(2).strip()
        if fence is None:
            if marker[0] == "`" and "`" in info:
                continue  # not a fence: backticks in a backtick fence's info string
            fence = Fence(marker, info)
        elif marker[0] == fence.marker[0] and len(marker) >= len(fence.marker) and not info:
            fence = None
    return fence


def best_cut(text: str, limit: int, *, floor: int = 0) -> int:
    """Where to cut `text` so the head is at most `limit` long: the last paragraph break,
    else line break, else space in the second half of the window; else exactly `limit`.
    The cut is never before `floor`."""
    if len(text) <= limit:
        return len(text)
    low = max(floor, limit // 2)
    window = text[:limit]
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator, low)
        if at > 0 and at >= floor:
            return at + len(separator)
    return max(limit, floor)


def split_markdown(text: str, limit: int) -> list[str]:
    """Split Markdown into parts of at most `limit` characters (for `limit` ≥ 64), closing a
    code block at the end of a part and reopening it in the next."""
    if limit < 64:
        raise ValueError("limit too small to split Markdown safely")
    parts: list[str] = []
    fence: Fence | None = None
    rest = text
    while True:
        prefix = fence.opening + "\n" if fence is not None else ""
        budget = limit - len(prefix)
        if len(rest) <= budget:
            parts.append(prefix + rest)
            break
        # Room for a closing fence ("\n" + up to a long marker) if the cut lands in code.
        cut = best_cut(rest, budget - 12)
        head, rest = rest[:cut], rest[cut:]
        after = open_fence(head, fence)
        if after is not None:
            head = head.rstrip("\n") + "\n" + after.closing
        else:
            head = head.rstrip()
            rest = rest.lstrip("\n")
        parts.append(prefix + head)
        fence = after
    return [part for part in parts if part.strip()]


# --- Slack → model -----------------------------------------------------------------------

_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_CHANNEL = re.compile(r"<#([CGD][A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL_IN = re.compile(r"<!([a-z]+)(?:\^([^|>]*))?(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto|tel):[^|>]+)(?:\|([^>]*))?>")


def mention_ids(text: str) -> list[str]:
    """User ids mentioned in a Slack message text, in order, without repeats."""
    return list(dict.fromkeys(m.group(1) for m in _USER.finditer(text)))


def _special(match: re.Match[str]) -> str:
    kind, _arg, label = match.group(1), match.group(2), match.group(3)
    if label:
        return label
    return f"@{kind}" if kind in _PINGS else ""


def _link(match: re.Match[str]) -> str:
    url, label = match.group(1), match.group(2)
    if url.startswith("mailto:"):
        return label or url[len("mailto:") :]
    if not label or label == url:
        return url
    return f"{label} ({url})"


def to_plain(text: str, names: Mapping[str, str], *, strip_leading: str | None = None) -> str:
    """Slack message text → what the model reads: mentions as `@Name`, channels as
    `#name`, links as `label (url)`, entities decoded. `strip_leading` drops a leading
    mention of that user id (the bot being addressed)."""
    if strip_leading:
        text = re.sub(rf"^\s*<@{re.escape(strip_leading)}(?:\|[^>]*)?>[\s,:]*", "", text)
    text = _USER.sub(lambda m: "@" + (names.get(m.group(1)) or m.group(2) or m.group(1)), text)
    text = _CHANNEL.sub(lambda m: "#" + (m.group(2) or m.group(1)), text)
    text = _SPECIAL_IN.sub(_special, text)
    text = _LINK.sub(_link, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
