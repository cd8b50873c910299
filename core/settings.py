"""Configuration: one pydantic-settings class read from the environment and a `.env` file.

Every field here is documented in `.env.example`. The file is `.env` in the current
directory, or the one `TEAMBOT_ENV_FILE` names. The environment wins over the file, an
empty variable included: `REDIS_URL= teambot console` runs without Redis whatever the file
says. An empty value anywhere means the default. A missing or invalid value becomes a
`ConfigError` whose message is one plain sentence naming the variable (and the file read),
never a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    AnyHttpUrl,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = ["ENV_FILE_VARIABLE", "ConfigError", "Settings", "env_file_path", "load_settings"]

#: Names the settings file to read instead of `.env` in the current directory.
ENV_FILE_VARIABLE = "TEAMBOT_ENV_FILE"

ThinkingLevel = Literal["minimal", "low", "medium", "high"]

DEFAULT_SYSTEM_PROMPT = (
    "You are teambot, a helpful assistant in a team chat. Several people may speak in one "
    "conversation; each user message starts with the speaker's name in square brackets. "
    "Answer the latest message, be concise, use Markdown sparingly, and never invent facts "
    "about the team. When you are unsure, say so."
)


class ConfigError(Exception):
    """A configuration problem, explained in one sentence for a human."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """All of teambot's settings. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        env_ignore_empty=True,
    )

    # --- model gateway -------------------------------------------------------------
    cometapi_api_key: SecretStr | None = None
    cometapi_base_url: AnyHttpUrl = AnyHttpUrl("https://api.cometapi.com")
    dialogue_model: str = "gpt-5.3-chat-latest"
    summary_model: str = "gemini-3.1-flash-lite"
    summary_thinking_level: ThinkingLevel = "low"
    dialogue_thinking_level: ThinkingLevel = "minimal"
    # Optional explicit route chains: "protocol:model,protocol:model".
    dialogue_route: Annotated[list[str], NoDecode] = Field(default_factory=list)
    summary_route: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dialogue_max_output_tokens: int = Field(default=4096, ge=256, le=65536)
    summary_max_output_tokens: int = Field(default=4096, ge=256, le=65536)

    # prices in USD per million tokens, by model role
    dialogue_price_input: float = Field(default=1.75, ge=0)
    dialogue_price_output: float = Field(default=14.00, ge=0)
    # input tokens served from the provider's prompt cache; None: a tenth of the input price
    dialogue_price_cached_input: float | None = Field(default=None, ge=0)
    summary_price_input: float = Field(default=0.25, ge=0)
    summary_price_output: float = Field(default=1.50, ge=0)
    summary_price_cached_input: float | None = Field(default=None, ge=0)
    daily_budget_usd: float | None = Field(default=None, gt=0)

    # timeouts (seconds) and retries
    connect_timeout: float = Field(default=10.0, gt=0)
    first_token_timeout: float = Field(default=60.0, gt=0)
    idle_timeout: float = Field(default=30.0, gt=0)
    total_timeout: float = Field(default=300.0, gt=0)
    retry_attempts: int = Field(default=3, ge=1, le=10)
    retry_max_wait: float = Field(default=20.0, ge=0)
    retry_base_delay: float = Field(default=0.5, ge=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown: float = Field(default=60.0, ge=0)

    # --- memory -----------------------------------------------------------------------
    redis_url: SecretStr | None = None
    redis_key_prefix: str = Field(default="teambot", min_length=1)
    redis_max_connections: int = Field(default=64, ge=4, le=10_000)
    memory_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    history_max_messages: int = Field(default=10_000, ge=10)
    history_token_budget: int = Field(default=6000, ge=500)
    history_fold_ratio: float = Field(default=0.33, gt=0.1, lt=1.0)
    lock_ttl_seconds: float = Field(default=30.0, ge=1)
    redis_cluster: bool | None = None
    dedupe_ttl_seconds: int = Field(default=24 * 3600, ge=60)

    # --- behaviour --------------------------------------------------------------------
    bot_name: str = "teambot"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    tool_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_tool_rounds: int = Field(default=4, ge=0, le=20)
    tool_max_calls_per_round: int = Field(default=8, ge=1, le=128)
    tool_max_calls_per_turn: int = Field(default=16, ge=1, le=512)
    tool_timeout_seconds: float = Field(default=20.0, gt=0)
    tool_result_max_chars: int = Field(default=12_000, ge=200)
    approval_timeout_seconds: float = Field(default=600.0, ge=1, le=86_400)
    # models a channel may choose for dialogue ("protocol:model"); empty = DIALOGUE_MODEL alone
    dialogue_model_choices: Annotated[list[str], NoDecode] = Field(default_factory=list)
    feedback_retention_days: int = Field(default=90, ge=1, le=3650)
    summary_chunk_tokens: int = Field(default=120_000, ge=500)
    max_attachment_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    # answers and commands one process works on at once (SLACK_CONCURRENCY: its old name)
    reply_concurrency: int = Field(
        default=32,
        ge=1,
        le=1000,
        validation_alias=AliasChoices("reply_concurrency", "slack_concurrency"),
    )
    max_document_pages: int = Field(default=100, ge=1, le=5000)
    max_document_chars: int = Field(default=120_000, ge=1000)
    attachment_fetch_timeout_seconds: float = Field(default=30.0, gt=0)
    document_parse_timeout_seconds: float = Field(default=20.0, gt=0)

    # --- team knowledge: scheduled recaps, answers from channel history ------------------
    recap_min_interval_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    recap_timezone: str = "UTC"
    history_search_max_messages: int = Field(default=5000, ge=10, le=50_000)

    # --- MCP servers (tools from the Model Context Protocol) ------------------------------
    mcp_config: Path | None = None
    mcp_connect_timeout: float = Field(default=20.0, gt=0)
    mcp_retry_initial: float = Field(default=1.0, gt=0)
    mcp_retry_max: float = Field(default=60.0, gt=0)
    mcp_refresh_seconds: float = Field(default=60.0, gt=0)

    # --- Slack ------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_answer_bots: bool = False
    # prompts offered in a new Slack agent thread, separated by "|" (at most 4)
    slack_suggested_prompts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "Summarize the channel I'm viewing",
            "Catch me up on what I missed",
            "I have a question",
        ]
    )

    # --- Discord ----------------------------------------------------------------------
    discord_bot_token: SecretStr | None = None
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None
    discord_shard_count: int | None = Field(default=None, ge=1)
    discord_shard_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_command_cooldown: float = Field(default=5.0, ge=0)
    # messages and model-calling commands answered per person and workspace, across
    # processes ("20/minute", "5/10 seconds", "off"); the console is exempt
    user_rate_limit: str = "20/minute"
    # summaries, recaps and other slow commands run at most this many at once per process,
    # apart from replies, so they never hold up an answer
    summary_concurrency: int = Field(default=4, ge=1, le=100)
    discord_message_content: bool = True
    discord_edit_interval: float = Field(default=1.0, ge=0.05, le=30)
    discord_summary_max_messages: int = Field(default=2000, ge=10, le=20_000)

    # --- operations -------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    health_port: int | None = Field(default=None, ge=1, le=65535)
    shutdown_grace_seconds: float = Field(default=25.0, ge=0, le=600)

    # The .env file these settings were read with (None: there was none); for messages.
    _env_file: Path | None = PrivateAttr(default=None)
    _env_file_wanted: Path | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # An empty variable in the environment still overrides the file (it is dropped,
        # i.e. means the default, by `_empty_means_default` once the sources are merged);
        # an empty value in the file means the default too.
        environment = EnvSettingsSource(settings_cls, env_ignore_empty=False)
        return init_settings, environment, dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and v == "")}
        return data

    @field_validator("cometapi_base_url", mode="before")
    @classmethod
    def _gateway_root(cls, value: Any) -> Any:
        # OpenAI SDK habits put /v1 at the end; the providers add /v1 and /v1beta themselves.
        if isinstance(value, str):
            value = re.sub(r"(/v1(beta)?)?/*$", "", value.strip(), flags=re.IGNORECASE)
        return value

    @field_validator(
        "dialogue_route", "summary_route", "tool_modules", "dialogue_model_choices", mode="before"
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("user_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from core.ratelimit import parse_rate  # ratelimit needs the store, which needs us

        parse_rate(value)  # a ValueError names USER_RATE_LIMIT in the start-up error
        return value

    @field_validator("slack_suggested_prompts", mode="before")
    @classmethod
    def _prompts(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split("|") if part.strip()]
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("Slack shows at most 4 suggested prompts")
        return value

    @field_validator("discord_guild_ids", "discord_shard_ids", mode="before")
    @classmethod
    def _csv_ints(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("dialogue_route", "summary_route", "dialogue_model_choices")
    @classmethod
    def _route_entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            protocol, _, model = entry.partition(":")
            if protocol not in ("openai", "gemini") or not model:
                raise ValueError(
                    f"'{entry}' is not 'openai:<model>' or 'gemini:<model>'",
                )
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value or ":" in value[-1:]:
            raise ValueError("it must not contain '{' or '}' or end with ':'")
        return value

    @field_validator("recap_timezone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "it must be an IANA time zone name such as UTC or Europe/Paris"
            ) from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("it must start with redis://, rediss:// or unix://")
        return value

    @property
    def read_timeout(self) -> float:
        """The longest one read from a peer may wait for its next bytes: a stream's chunks
        come within FIRST_TOKEN_TIMEOUT (the first) or IDLE_TIMEOUT (the others), and
        nothing waits past TOTAL_TIMEOUT. A long answer whose chunks keep coming is not
        cut; a peer that stops sending (a body that stalls, a download that hangs) is
        given up."""
        return min(max(self.first_token_timeout, self.idle_timeout), self.total_timeout)

    @property
    def base_url(self) -> str:
        return str(self.cometapi_base_url).rstrip("/")

    @property
    def env_file(self) -> Path | None:
        """The settings file that was read, or None when there was none."""
        return self._env_file

    def where(self) -> str:
        """Where settings come from, for messages: "/path/.env" or "the environment (no
        /path/.env)"."""
        if self._env_file is not None:
            return str(self._env_file)
        wanted = self._env_file_wanted
        return f"the environment only (no {wanted})" if wanted else "the environment only"

    def missing(self, *names: str) -> list[str]:
        """The variables among `names` (field names) that are unset, upper-case."""
        found = []
        for name in names:
            value = getattr(self, name)
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
                found.append(name.upper())
        return found

    def require(self, *names: str) -> None:
        """Raise one ConfigError naming every one of `names` that is unset."""
        missing = self.missing(*names)
        if not missing:
            return
        if len(missing) == 1:
            subject, verb, pronoun = missing[0], "is", "it"
        else:
            subject = ", ".join(missing[:-1]) + " and " + missing[-1]
            verb, pronoun = "are", "them"
        if self._env_file is not None:
            place = f"put {pronoun} in {self._env_file} or in the environment (see .env.example)"
        else:
            wanted = self._env_file_wanted or Path(".env")
            place = (
                f"put {pronoun} in the environment or in {wanted} "
                f"(there is none yet: cp .env.example {wanted})"
            )
        emptied = [n for n in missing if os.environ.get(n) == ""]
        note = ""
        if emptied and self._env_file is not None:
            note = (
                f"; {', '.join(emptied)} {'is' if len(emptied) == 1 else 'are'} empty in the "
                "environment, which overrides the file"
            )
        raise ConfigError(f"{subject} {verb} not set: {place}{note}.")


_SECRET_FIELDS = {
    name for name, info in Settings.model_fields.items() if "SecretStr" in str(info.annotation)
}


def _explain(error: ValidationError) -> str:
    first = error.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "configuration"
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    raw = first.get("input")
    field = name.lower()
    secret = field in _SECRET_FIELDS
    shown = f" (got {raw!r})" if not secret and isinstance(raw, str | int | float) else ""
    return f"{name} is invalid{shown}: {message[0].lower() + message[1:]}."


def env_file_path() -> Path:
    """The settings file to read: $TEAMBOT_ENV_FILE, else `.env` in the current directory
    (absolute, whether or not it exists)."""
    named = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    if named:
        return Path(named).expanduser().absolute()
    return Path.cwd() / ".env"


def load_settings(**overrides: Any) -> Settings:
    """Read settings; turn validation errors into one plain ConfigError sentence.
    `_env_file=None` reads no file (tests)."""
    if "_env_file" in overrides:
        given = overrides["_env_file"]
        wanted = Path(given).absolute() if given is not None else None
    else:
        wanted = env_file_path()
        if os.environ.get(ENV_FILE_VARIABLE, "").strip() and not wanted.is_file():
            raise ConfigError(f"{ENV_FILE_VARIABLE} names {wanted}, which is not a file.")
        overrides["_env_file"] = wanted
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        where = f" (settings read from {wanted})" if wanted is not None and wanted.is_file() else ""
        raise ConfigError(_explain(error)[:-1] + where + ".") from None
    settings._env_file_wanted = wanted
    settings._env_file = wanted if wanted is not None and wanted.is_file() else None
    return settings
