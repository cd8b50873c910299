"""Block Kit for the admin surfaces: the `/teambot settings` modal and the App Home tab.

Pure functions from data to views; `admin.SlackAdmin` fetches the data and calls Slack."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "SETTINGS_VIEW",
    "home_view",
    "settings_changes",
    "settings_view",
]

SETTINGS_VIEW = "teambot_settings"
INSTRUCTIONS_MAX = 2000
_INHERIT = "inherit"
_MODES = {
    "follow": "Follow threads (answer replies in threads I'm in)",
    "mentions": "Mentions only",
}


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:150] or " "}


def _section(markdown: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": markdown[:3000] or " "}}


def _option(value: str, label: str) -> dict[str, Any]:
    return {"text": _text(label[:75]), "value": value}


def _select(
    block_id: str, label: str, options: Sequence[tuple[str, str]], current: str
) -> dict[str, Any]:
    choices = [_option(value, text) for value, text in options]
    element: dict[str, Any] = {
        "type": "static_select",
        "action_id": block_id,
        "options": choices,
    }
    chosen = next((c for c in choices if c["value"] == current), choices[0])
    element["initial_option"] = chosen
    return {"type": "input", "block_id": block_id, "label": _text(label), "element": element}


def settings_view(
    *,
    where: str,
    stored: Any,
    described: str,
    models: Sequence[str],
    editable: bool,
    metadata: Mapping[str, str],
    above: str,
) -> dict[str, Any]:
    """The settings modal for a channel or the workspace: inputs for who may change them,
    the settings in force (`described`, core's text in mrkdwn) for everyone else."""
    if not editable:
        lines = [
            described,
            "",
            "_Only workspace admins and owners, and the channel's creator, can change them._",
        ]
        return {
            "type": "modal",
            "callback_id": SETTINGS_VIEW,
            "title": _text("teambot settings"),
            "close": _text("Close"),
            "private_metadata": json.dumps(dict(metadata)),
            "blocks": [_section("\n".join(lines))],
        }
    instructions: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": "instructions",
        "multiline": True,
        "max_length": INSTRUCTIONS_MAX,
    }
    if stored.instructions:
        instructions["initial_value"] = stored.instructions
    language: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": "summary_language",
        "max_length": 40,
    }
    if stored.summary_language:
        language["initial_value"] = stored.summary_language
    inherit = (_INHERIT, f"As {above}")
    blocks = [
        _section(f"Settings for {where}. Empty or *As {above}* uses {above}'s setting."),
        {
            "type": "input",
            "block_id": "instructions",
            "optional": True,
            "label": _text("Extra instructions (added to the system prompt)"),
            "element": instructions,
        },
        _select(
            "answer_mode",
            "Answer mode",
            [inherit, *_MODES.items()],
            stored.answer_mode or _INHERIT,
        ),
        _select(
            "model",
            "Dialogue model",
            [inherit, *((m, m) for m in models)],
            stored.model or _INHERIT,
        ),
        _select(
            "tools",
            "Tools",
            [inherit, ("on", "On"), ("off", "Off")],
            {True: "on", False: "off"}.get(stored.tools.get("builtin"), _INHERIT),
        ),
        {
            "type": "input",
            "block_id": "summary_language",
            "optional": True,
            "label": _text("Summary language (empty: the conversation's own)"),
            "element": language,
        },
    ]
    return {
        "type": "modal",
        "callback_id": SETTINGS_VIEW,
        "title": _text("teambot settings"),
        "submit": _text("Save"),
        "close": _text("Cancel"),
        "private_metadata": json.dumps(dict(metadata)),
        "blocks": blocks,
    }


def settings_changes(values: Mapping[str, Any]) -> dict[str, Any]:
    """The submitted modal's state → `SettingsStore.update` changes ("" / None clears)."""

    def field(block: str) -> Mapping[str, Any]:
        return (values.get(block) or {}).get(block) or {}

    def chosen(block: str) -> str:
        option = field(block).get("selected_option") or {}
        value = str(option.get("value") or _INHERIT)
        return "" if value == _INHERIT else value

    tools = chosen("tools")
    return {
        "instructions": str(field("instructions").get("value") or "").strip(),
        "answer_mode": chosen("answer_mode"),
        "model": chosen("model"),
        "summary_language": str(field("summary_language").get("value") or "").strip(),
        "tools": {"builtin": tools == "on"} if tools else {},
    }


def home_view(
    *, admin: bool, help_text: str, usage: str = "", customized: Sequence[str] = ()
) -> dict[str, Any]:
    """The Home tab: what the bot does for everyone; for admins also core's usage report
    (today, this week, feedback; in mrkdwn) and the channels with their own settings."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _text("teambot")},
        _section(help_text),
    ]
    if admin:
        custom = ["*Channels with their own settings*"]
        custom += [f"• {name}" for name in customized] or ["• none"]
        blocks += [
            {"type": "divider"},
            {"type": "header", "text": _text("Usage")},
            _section(usage),
            _section("\n".join(custom)),
        ]
    return {"type": "home", "blocks": blocks}
