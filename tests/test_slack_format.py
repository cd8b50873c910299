"""Text conversion both ways, splitting, and the parsers of commands and arguments."""

from __future__ import annotations

import re

import pytest

from bots.slack.bot import Window, parse_window
from bots.slack.format import safe_mrkdwn, to_mrkdwn, to_plain
from core import parse_command


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and *italic* and ~~gone~~", "*bold* and _italic_ and ~gone~"),
        ("- one\n- **two**", "•   one\n•   *two*"),
        ("1. first\n2. second", "1.  first\n2.  second"),
        ("[docs](https://example.com/a_(b)?x=1&y=2)", "<https://example.com/a_(b)?x=1&y=2|docs>"),
        ("# Title\n\nbody", "*Title*\n\nbody"),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("`x<y>`", "`x&lt;y&gt;`"),
        ("```python\nif a < b:\n    pass\n```", "```\nif a &lt; b:\n    pass\n```"),
        ("snake_case_name", "snake_case_name"),
    ],
)
def test_markdown_becomes_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    "text",
    [
        "<!channel> hi",
        "<!here>",
        "<!everyone> <!here|here>",
        "<!subteam^S0123ABC|@devs> please",
        "@channel @here @everyone @Here",
        "code: `<!channel>` and\n```\n@here <!everyone>\n```",
    ],
)
def test_the_bot_cannot_ping_a_crowd(text: str) -> None:
    out = safe_mrkdwn(text)
    assert not re.search(r"<!(channel|here|everyone|subteam)", out)
    assert not re.search(r"(?<![\w@])@(channel|here|everyone)\b", out, re.IGNORECASE)


def test_people_and_links_survive() -> None:
    text = "Ask <@U0ALICE0001> about [this](https://example.com) in <#C0GENERAL01|general>"
    assert "<@U0ALICE0001>" in safe_mrkdwn(text, "U0ALICE0001")  # the asker may be pinged
    assert "<@U0ALICE0001>" not in safe_mrkdwn(text)  # nobody else
    assert "<https://example.com|this>" in safe_mrkdwn(text)
    assert safe_mrkdwn("email me@here.com or @hereford") == "email me@here.com or @hereford"


def test_slack_text_becomes_what_the_model_reads() -> None:
    names = {"U0ALICE0001": "Alice"}
    text = (
        "<@U0BOT000001> ask <@U0ALICE0001> and <@U0NOBODY001|nobody> in <#C0GENERAL01|general> "
        "about <https://example.com|the docs>, <https://x.io>, <mailto:a@b.co|a@b.co> &amp; "
        "<!here> &lt;3"
    )
    assert to_plain(text, names, strip_leading="U0BOT000001") == (
        "ask @Alice and @nobody in #general about the docs (https://example.com), "
        "https://x.io, a@b.co & @here <3"
    )


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("summarize", "summarize"),
        ("Summarize this thread, please!", "summarize"),
        ("tl;dr", "summarize"),
        ("forget", "forget"),
        ("forget everything", "forget"),
        ("help", "help"),
        ("summarize the attached article about tax law", None),
        ("can you forget about the deadline and focus", None),
        ("", None),
    ],
)
def test_commands_are_whole_messages(text: str, command: str | None) -> None:
    assert parse_command(text) == command


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("", Window(None, 24.0)),
        ("8", Window(None, 8.0)),
        ("48h", Window(None, 48.0)),
        ("2 days", Window(None, 48.0)),
        ("<#C0GENERAL01|general>", Window("C0GENERAL01", 24.0)),
        ("<#C0GENERAL01|general> 12 hours", Window("C0GENERAL01", 12.0)),
        # whole hours, rounded up, so near-identical windows share one cached summary
        ("0.5 <#G0PRIVATE01>", Window("G0PRIVATE01", 1.0)),
        ("23.9", Window(None, 24.0)),
        ("1.2 days", Window(None, 29.0)),
    ],
)
def test_summarize_arguments(text: str, window: Window) -> None:
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["banana", "#general", "0", "1000", "24 25"])
def test_bad_summarize_arguments_explain_themselves(text: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        parse_window(text)


def test_slack_positions_order_as_people_wrote() -> None:
    from bots.slack.bot import slack_position

    stamps = ["1712345678.000009", "1712345678.000010", "1712345679.000001", "1712345679.1"]
    assert sorted(reversed(stamps), key=slack_position) == stamps
    assert slack_position(stamps[0]) == 1712345678_000009
