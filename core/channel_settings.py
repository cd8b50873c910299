"""Per-channel and per-workspace settings that admins change without a redeploy.

Precedence: the channel's setting, else the workspace's, else the environment. Every
change is one JSON log line with who, what, the old and the new value.

Keys:

    P:cs:{C}        string  a channel's settings (JSON), C its channel key
    P:cs:{W}        string  a workspace's settings (JSON), W = platform:workspace:*:*
    P:csidx:T       set     channels of tenant T with settings of their own
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, ValidationError

from core.settings import ConfigError, Settings
from core.store import Store
from core.types import ConversationKey

__all__ = ["ChannelSettings", "Effective", "SettingsStore", "workspace_key"]

log = logging.getLogger("teambot.settings")

AnswerMode = Literal["follow", "mentions"]
INSTRUCTIONS_MAX = 2000


class ChannelSettings(BaseModel):
    """What admins may set; None (or a missing tool) means "as the level above"."""

    instructions: str | None = Field(default=None, max_length=INSTRUCTIONS_MAX)
    answer_mode: AnswerMode | None = None
    model: str | None = None
    summary_language: str | None = Field(default=None, max_length=40)
    #: "builtin" (the built-in tools) or "mcp:NAME" (one MCP server's tools) → on / off
    tools: dict[str, bool] = Field(default_factory=dict)

    def is_empty(self) -> bool:
        return not any(
            (
                self.instructions,
                self.answer_mode,
                self.model,
                self.summary_language,
                self.tools,
            )
        )


@dataclass(frozen=True, slots=True)
class Effective:
    """The settings that apply in one channel, after precedence."""

    instructions: str
    answer_mode: AnswerMode
    model: str  # the dialogue model to use first
    summary_language: str  # "" = the conversation's own language
    tools: dict[str, bool]

    def tool_allowed(self, name: str) -> bool:
        """Built-ins and each MCP server's tools (named `SERVER__tool`) can be switched off."""
        group = f"mcp:{name.split('__', 1)[0]}" if "__" in name else "builtin"
        return self.tools.get(group, True)


def workspace_key(key: ConversationKey) -> ConversationKey:
    return ConversationKey(key.platform, key.workspace, "*", "*")


class SettingsStore:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.keys = store.keys
        self.defaults = settings
        choices = [entry.partition(":")[2] for entry in settings.dialogue_model_choices]
        self.models = list(dict.fromkeys([settings.dialogue_model, *choices]))

    def _key(self, scope: ConversationKey) -> str:
        return self.keys.of("cs", scope)

    async def get(self, scope: ConversationKey) -> ChannelSettings:
        """The settings stored for a channel or a workspace (not merged)."""
        raw = await self.store.redis.get(self._key(scope))
        if not raw:
            return ChannelSettings()
        try:
            return ChannelSettings.model_validate_json(raw)
        except ValidationError:
            log.warning("unreadable settings for %s ignored", scope)
            return ChannelSettings()

    async def effective(self, key: ConversationKey) -> Effective:
        """What applies in `key`'s channel: channel, then workspace, then environment."""
        channel = await self.get(key.channel_key())
        workspace = await self.get(workspace_key(key))
        tools = {**workspace.tools, **channel.tools}
        model = channel.model or workspace.model or self.defaults.dialogue_model
        if model not in self.models:
            model = self.defaults.dialogue_model  # a choice removed since it was set
        return Effective(
            instructions="\n\n".join(
                text for text in (workspace.instructions, channel.instructions) if text
            ),
            answer_mode=channel.answer_mode or workspace.answer_mode or "follow",
            model=model,
            summary_language=channel.summary_language or workspace.summary_language or "",
            tools=tools,
        )

    async def update(
        self, scope: ConversationKey, changes: dict[str, Any], *, by: str
    ) -> ChannelSettings:
        """Change some settings of a channel (or a workspace: `workspace_key`); "" or None
        clears one. ConfigError with a plain sentence for a bad value."""
        old = await self.get(scope)
        merged = old.model_dump()
        for name, value in changes.items():
            if name not in ChannelSettings.model_fields:
                raise ConfigError(f"There is no setting called {name!r}.")
            if name == "tools" and isinstance(value, dict):
                merged["tools"] = {**merged["tools"], **value}
            elif name == "tools" and value in ("", None):  # cleared: as the level above
                merged["tools"] = {}
            else:
                merged[name] = value if value not in ("", None) else None
        if merged.get("model") and merged["model"] not in self.models:
            raise ConfigError(
                f"{merged['model']} is not one of the models this bot offers "
                f"({', '.join(self.models)}; see DIALOGUE_MODEL_CHOICES)."
            )
        try:
            new = ChannelSettings.model_validate(merged)
        except ValidationError as error:
            first = error.errors()[0]
            raise ConfigError(
                f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}."
            ) from None
        index = self.keys.plain("csidx", scope.tenant)
        pipe = self.store.redis.pipeline(transaction=False)
        if new.is_empty():
            pipe.delete(self._key(scope))
            pipe.srem(index, str(scope))
        else:
            pipe.set(self._key(scope), new.model_dump_json())
            pipe.sadd(index, str(scope))
        await pipe.execute()
        before, after = old.model_dump(), new.model_dump()
        for name in ChannelSettings.model_fields:
            if before[name] != after[name]:
                log.info(
                    "setting changed",
                    extra={
                        "scope": str(scope),
                        "setting": name,
                        "old": json.dumps(before[name]),
                        "new": json.dumps(after[name]),
                        "by": by,
                    },
                )
        return new

    async def customized(self, tenant: str) -> list[ConversationKey]:
        """Channels (and the workspace) of `tenant` with settings of their own."""
        raw = cast(set[str], await self.store.redis.smembers(self.keys.plain("csidx", tenant)))
        return sorted((ConversationKey.parse(item) for item in raw), key=str)

    # --- shown to people, changed by name (Discord /settings, console /settings) --------

    async def describe(self, key: ConversationKey, where: str = "this channel") -> str:
        """The settings that apply in `key`'s channel, in Markdown, with those set for the
        channel itself marked."""
        effective = await self.effective(key)
        own = (await self.get(key.channel_key())).model_dump()

        def mark(name: str) -> str:
            return " _(set here)_" if own.get(name) not in (None, {}, "") else ""

        instructions = effective.instructions or "none"
        if len(instructions) > 500:
            instructions = instructions[:500] + "…"
        mode = "follow threads" if effective.answer_mode == "follow" else "mentions only"
        groups = {"builtin": True, **effective.tools}
        tools = ", ".join(
            f"{'built-in' if group == 'builtin' else group} {'on' if on else 'off'}"
            for group, on in groups.items()
        )
        language = effective.summary_language or "the conversation's own"
        return "\n".join(
            [
                f"**Settings for {where}**",
                f"- Extra instructions: {instructions}{mark('instructions')}",
                f"- Answer mode: {mode}{mark('answer_mode')}",
                f"- Dialogue model: {effective.model}{mark('model')}"
                + (f" (choices: {', '.join(self.models)})" if len(self.models) > 1 else ""),
                f"- Tools: {tools}{mark('tools')}",
                f"- Summary language: {language}{mark('summary_language')}",
            ]
        )

    def change(self, name: str, value: str) -> dict[str, Any]:
        """A change as people type it (`mode mentions`, `tools off`, `language French`,
        `model NAME`, `instructions TEXT`; `default` clears one) for `update`."""
        name = _ALIASES.get(name.strip().lower().replace("-", "_"), name.strip().lower())
        value = value.strip()
        cleared = value.lower() in ("", "default", "clear", "none", "-")
        if name == "answer_mode" and not cleared:
            mode = _MODES.get(value.lower())
            if mode is None:
                raise ConfigError("Answer mode is `follow` (threads) or `mentions` (only).")
            return {"answer_mode": mode}
        if name == "tools":
            switch = _SWITCH.get(value.lower().split()[-1] if value else "on")
            if switch is None:
                raise ConfigError("Tools are `on` or `off`.")
            group = value.split()[0] if len(value.split()) > 1 else "builtin"
            return {"tools": {group: switch}}
        if name not in ChannelSettings.model_fields:
            raise ConfigError(
                f"There is no setting called {name!r} (instructions, mode, model, tools, language)."
            )
        return {name: None if cleared else value}


_ALIASES = {
    "mode": "answer_mode",
    "answer": "answer_mode",
    "language": "summary_language",
    "summary": "summary_language",
    "instruction": "instructions",
}
_MODES: dict[str, AnswerMode] = {
    "follow": "follow",
    "follow threads": "follow",
    "threads": "follow",
    "mentions": "mentions",
    "mentions only": "mentions",
}
_SWITCH = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}
