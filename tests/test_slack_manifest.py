"""The app manifest agrees with the code: every Web API method the adapter calls is allowed by
a scope it asks for (per Slack's public spec), it asks for nothing else, and the commands,
shortcut and events it declares are the ones the Bolt app listens to."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from bots.slack.bot import SHARE_ACTION, SUMMARIZE_SHORTCUT

ROOT = Path(__file__).resolve().parent.parent
MANIFEST: dict[str, Any] = yaml.safe_load((ROOT / "deploy/slack/manifest.yaml").read_text())
SPEC = json.loads((ROOT / "tests/specs/slack-web-openapi-v2.json").read_text())
SOURCES = "\n".join(p.read_text() for p in (ROOT / "bots/slack").glob("*.py"))

# Methods newer than the 2021 spec, with the scope their docs.slack.dev pages name.
NEWER = {
    "chat.startStream": {"chat:write"},
    "chat.appendStream": {"chat:write"},
    "chat.stopStream": {"chat:write"},
    "assistant.threads.setStatus": {"chat:write"},  # "accepts assistant:write or chat:write"
    "apps.connections.open": set(),  # the app-level token (connections:write), not the bot's
    "assistant.threads.setSuggestedPrompts": {"assistant:write"},
    "assistant.threads.setTitle": {"assistant:write"},
    "agents.sessions.setStatus": {"assistant:write", "chat:write"},
}
# Scopes that events and features need rather than a method.
FOR_EVENTS: dict[str, str | None] = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "assistant_thread_started": "assistant:write",
    "assistant_thread_context_changed": "assistant:write",
    "agent_session_stopped": "assistant:write",
    "app_home_opened": None,
}


def methods_called() -> set[str]:
    names = set(re.findall(r"\bclient\.([a-z]+_[A-Za-z_]+)\(", SOURCES))
    return {name.replace("_", ".", 1).replace("_", ".") for name in names}


def scopes_for(method: str) -> set[str]:
    if method in NEWER:
        return NEWER[method]
    operation = SPEC["paths"][f"/{method}"]
    operation = operation.get("post") or operation.get("get")
    scopes: set[str] = set()
    for requirement in operation.get("security", []):
        for scope in requirement.get("slackAuth", []):
            scopes.add(scope.removesuffix(":bot").removesuffix(":user"))
    return scopes - {"none"}


def test_every_method_called_is_granted_and_nothing_more_is_asked() -> None:
    granted = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    called = methods_called()
    assert {"chat.postMessage", "chat.startStream", "conversations.replies"} <= called
    needed: set[str] = set()
    for method in sorted(called):
        options = scopes_for(method)
        if not options:
            continue
        assert options & granted, (method, options)
        needed |= options & granted
    needed |= {
        scope
        for event in MANIFEST["settings"]["event_subscriptions"]["bot_events"]
        if (scope := FOR_EVENTS[event]) is not None
    }
    needed |= {"files:read", "commands"}  # url_private downloads; commands and shortcuts
    assert granted == needed


def test_commands_shortcut_and_events_match_the_app() -> None:
    features = MANIFEST["features"]
    commands = {c["command"] for c in features["slash_commands"]}
    assert commands == {"/summarize", "/recap", "/forget", "/teambot"}
    for command in commands:
        assert f'app.command("{command}")' in SOURCES
    assert next(c for c in features["slash_commands"] if c["command"] == "/summarize")[
        "should_escape"
    ]
    [shortcut] = features["shortcuts"]
    assert (shortcut["type"], shortcut["callback_id"]) == ("message", SUMMARIZE_SHORTCUT)
    assert SHARE_ACTION in SOURCES
    settings = MANIFEST["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"]["is_enabled"] is True
    assert set(settings["event_subscriptions"]["bot_events"]) == set(FOR_EVENTS)
    for event in FOR_EVENTS:
        if "." not in event:
            assert f'app.event("{event}")' in SOURCES, event
    assert features["assistant_view"]["assistant_description"]
    assert features["app_home"]["messages_tab_enabled"] is True
    assert len(MANIFEST["display_information"]["long_description"]) >= 175
