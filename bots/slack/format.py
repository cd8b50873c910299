"""Text both ways between the model and Slack.

Out (model Markdown → Slack): `to_mrkdwn` converts to Slack's mrkdwn dialect (for `text`
and `chat.update`, through the maintained `slackify-markdown` converter); `summary_blocks`
renders a summary (data) as Block Kit. Pages, pacing and mention safety are core's
(`core.PagedReply`, `core.defuse`), applied on the exact text sent; `safe_mrkdwn` is that
last step for the few texts that are not a streamed reply (ephemeral answers).

In (Slack → model): `mention_ids` and `to_plain` turn Slack's markup (`<@U…>`, `<#C…|name>`,
`<url|label>`, `&amp;`) into the plain text the model reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from slackify_markdown import slackify_markdown  # type: ignore[import-untyped]

from core import ApprovalCard, Summary, defuse, split_pages

__all__ = [
    "APPROVE_ACTION",
    "DENY_ACTION",
    "SHARE_ACTION",
    "approval_blocks",
    "mention_ids",
    "safe_mrkdwn",
    "summary_blocks",
    "to_mrkdwn",
    "to_plain",
]

SHARE_ACTION = "share_summary"
APPROVE_ACTION = "teambot_approve"
DENY_ACTION = "teambot_deny"

_SPECIAL = re.compile(r"<!([^>\n]*)>")
_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Standard Markdown (as models write it) → Slack mrkdwn.

    The converter escapes `&`, `<` and `>` in text but keeps Slack control sequences such
    as `<!here>` and leaves code as it is; here the special sequences are shown as text and
    code is escaped too (Slack unescapes it for display). This is formatting only: mention
    safety is applied after it, on the exact text sent (`core.defuse`)."""
    if not markdown.strip():
        return ""
    specials: list[str] = []

    def keep(match: re.Match[str]) -> str:
        specials.append(match.group(1))
        return f"\ue000{len(specials) - 1}\ue001"

    source = _SPECIAL.sub(keep, markdown.replace("\ue000", "").replace("\ue001", ""))
    converted = cast(str, slackify_markdown(source)).strip("\n")
    converted = _CODE.sub(lambda m: _escape(m.group(0)), converted)
    return _PLACEHOLDER.sub(
        lambda m: "&lt;!" + _escape(specials[int(m.group(1))]) + "&gt;", converted
    )


def safe_mrkdwn(markdown: str, user: str | None = None) -> str:
    """Markdown as Slack text that pings nobody (but `user`): for ephemeral answers and
    the like that do not go through a streamed reply."""
    return defuse(to_mrkdwn(markdown), [user] if user else [])


# --- summaries as Block Kit ----------------------------------------------------------------

_SECTION_MAX = 2900  # Slack allows 3,000 characters of text in a section


def _sections(markdown: str) -> list[dict[str, Any]]:
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": safe_mrkdwn(page)}}
        for page in split_pages(markdown, _SECTION_MAX - 300)
    ]


def summary_blocks(
    summary: Summary,
    notes: Sequence[str] = (),
    *,
    share_id: str | None = None,
    shared_by: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """A summary (data) as Block Kit: a header, TL;DR, decisions, action items and open
    questions as sections, notes as context, and a "Share in channel" button when
    `share_id` is given. Returns (fallback text, blocks)."""
    data = summary.data
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": defuse(summary.title)[:150]}}
    ]
    blocks += _sections(f"**TL;DR:** {data.tldr}")
    if data.decisions:
        blocks += _sections("**Decisions**\n" + "\n".join(f"- {d}" for d in data.decisions))
    if data.action_items:
        items = [
            f"- **{a.owner or 'Someone'}**: {a.task}" + (f" (due {a.due})" if a.due else "")
            for a in data.action_items
        ]
        blocks += _sections("**Action items**\n" + "\n".join(items))
    if data.open_questions:
        blocks += _sections(
            "**Open questions**\n" + "\n".join(f"- {q}" for q in data.open_questions)
        )
    if notes:
        allowed = [shared_by] if shared_by else []
        text = defuse(" ".join(_escape(n) if "<@" not in n else n for n in notes), allowed)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
    if share_id is not None:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": SHARE_ACTION,
                        "text": {"type": "plain_text", "text": "Share in channel"},
                        "style": "primary",
                        "value": share_id,
                    }
                ],
            }
        )
    # The message's text (notifications, search, screen readers) is the whole summary.
    markdown = summary.markdown() + "".join(f"\n\n_{note}_" for note in notes)
    fallback = defuse(to_mrkdwn(markdown), [shared_by] if shared_by else [])
    return fallback, blocks[:50]


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
    return f"@{kind}" if kind in ("channel", "here", "everyone") else ""


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


def approval_blocks(
    card: ApprovalCard, outcome: str | None = None, by: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """An approval request as Block Kit: what would run, and Approve / Deny buttons (or,
    once decided, how it ended). Returns (fallback text, blocks)."""
    text = safe_mrkdwn(card.markdown(), card.asker_id)
    blocks: list[dict[str, Any]] = _sections(card.markdown())
    if outcome is None:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"approval:{card.id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": card.id,
                    },
                    {
                        "type": "button",
                        "action_id": DENY_ACTION,
                        "text": {"type": "plain_text", "text": "Deny"},
                        "style": "danger",
                        "value": card.id,
                    },
                ],
            }
        )
    else:
        said = safe_mrkdwn(card.settled(outcome, by))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": said}]})
        text = said
    return text, blocks


# --- feedback ------------------------------------------------------------------------------

FEEDBACK_ACTION = "teambot_feedback"
FEEDBACK_REASON_VIEW = "teambot_feedback_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
_WIRE_SECTION_MAX = 3000  # Slack: a section's text is at most 3,000 characters


def feedback_block(answer_id: str) -> dict[str, Any]:
    """👍/👎 under an answer: a `context_actions` block with `feedback_buttons`
    (docs.slack.dev, Block Kit reference). Each value carries the rating and the answer."""
    return {
        "type": "context_actions",
        "block_id": f"feedback:{answer_id}",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": "👍"},
                    "accessibility_label": "Good answer",
                    "value": f"up:{answer_id}",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "👎"},
                    "accessibility_label": "Not helpful",
                    "value": f"down:{answer_id}",
                },
            }
        ],
    }


def answer_blocks(wire: str, answer_id: str) -> list[dict[str, Any]]:
    """A posted answer page (already mrkdwn) with 👍/👎 under it: with `blocks`, Slack
    shows the blocks and keeps `text` as the notification fallback."""
    sections = [
        {"type": "section", "text": {"type": "mrkdwn", "text": wire[i : i + _WIRE_SECTION_MAX]}}
        for i in range(0, len(wire), _WIRE_SECTION_MAX)
    ]
    return [*sections, feedback_block(answer_id)]


def feedback_reason_view(answer_id: str, tenant: str) -> dict[str, Any]:
    """The modal a 👎 opens: an optional one-line reason."""
    return {
        "type": "modal",
        "callback_id": FEEDBACK_REASON_VIEW,
        "private_metadata": json.dumps({"answer": answer_id, "tenant": tenant}),
        "title": {"type": "plain_text", "text": "What went wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason (optional, one line)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": False,
                    "max_length": 300,
                },
            }
        ],
    }
