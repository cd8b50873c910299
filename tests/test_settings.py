"""Configuration: defaults, plain one-sentence errors, secrets never shown."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from bots.cli import main
from core.logs import resolve_format
from core.settings import ConfigError, Settings, load_settings
from tests.config_reference import entries, readme_block, table

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_documented_models_and_prices() -> None:
    settings = load_settings(_env_file=None, cometapi_api_key="k")
    assert settings.base_url == "https://api.cometapi.com"
    assert settings.dialogue_model == "gpt-5.3-chat-latest"
    assert settings.summary_model == "gemini-3.1-flash-lite"
    assert settings.summary_thinking_level == "low"
    assert (settings.summary_price_input, settings.summary_price_output) == (0.25, 1.50)
    assert settings.redis_url is None
    assert settings.daily_budget_usd is None


def test_invalid_value_is_one_sentence_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUMMARY_THINKING_LEVEL", "extreme")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert message.startswith("SUMMARY_THINKING_LEVEL is invalid (got 'extreme')")
    assert "\n" not in message


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://user:hunter2-password@redis:6379")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert "REDIS_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    monkeypatch.delenv("REDIS_URL")
    settings = load_settings(_env_file=None, cometapi_api_key="sk-very-secret-1")
    assert "sk-very-secret-1" not in repr(settings)
    assert "sk-very-secret-1" not in str(settings.model_dump())


def test_missing_key_is_reported_by_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("COMETAPI_API_KEY", raising=False)
    monkeypatch.delenv("TEAMBOT_ENV_FILE", raising=False)
    assert main(["console"]) == 2
    err = capsys.readouterr().err
    env = tmp_path / ".env"
    assert err.strip() == (
        f"teambot: COMETAPI_API_KEY is not set: put it in the environment or in {env} "
        f"(there is none yet: cp .env.example {env})."
    )


def test_empty_values_in_env_file_mean_unset(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("COMETAPI_API_KEY=abc\nDAILY_BUDGET_USD=\nREDIS_URL=\nSYSTEM_PROMPT=\n")
    settings = load_settings(_env_file=str(env))
    assert settings.daily_budget_usd is None
    assert settings.redis_url is None
    assert settings.system_prompt.startswith("You are teambot")


def test_route_lists_are_validated() -> None:
    settings = load_settings(
        _env_file=None, dialogue_route="gemini:gemini-3.1-flash-lite,openai:gpt-5.3-chat-latest"
    )
    assert settings.dialogue_route[0] == "gemini:gemini-3.1-flash-lite"
    with pytest.raises(ConfigError, match="DIALOGUE_ROUTE is invalid"):
        load_settings(_env_file=None, dialogue_route="anthropic:claude")


def test_every_setting_is_documented_in_env_example() -> None:
    documented = entries()
    fields = {name.upper() for name in Settings.model_fields}
    assert [e.name for e in documented if e.name not in fields] == []
    assert fields == {e.name for e in documented}
    assert len(documented) == len(fields)  # each once
    for entry in documented:
        assert entry.description, f"{entry.name} has no comment above it (or its group)"


def test_env_example_sets_only_the_handful_a_team_needs() -> None:
    uncommented = [e.name for e in entries() if not e.commented]
    assert uncommented == [
        "COMETAPI_API_KEY",
        "REDIS_URL",
        "SLACK_BOT_TOKEN",
        "SLACK_APP_TOKEN",
        "DISCORD_BOT_TOKEN",
    ]
    assert all(e.value == "" for e in entries() if not e.commented)


def test_commented_values_in_env_example_are_the_defaults() -> None:
    defaults = load_settings(_env_file=None)
    for entry in entries():
        if not entry.commented or entry.value == "":
            continue
        shown = load_settings(_env_file=None, **{entry.name.lower(): entry.value})
        name = entry.name.lower()
        assert getattr(shown, name) == getattr(defaults, name), entry.name


def test_readme_configuration_reference_is_generated_from_env_example() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_block(readme) == table(), (
        "README's configuration reference is stale: run .venv/bin/python -m tests.config_reference"
    )


def test_an_empty_variable_in_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("COMETAPI_API_KEY=abc\nREDIS_URL=redis://example:6379/0\nBOT_NAME=filebot\n")
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("BOT_NAME", "")
    settings = load_settings(_env_file=str(env))
    assert settings.redis_url is None
    assert settings.bot_name == "teambot"  # empty means the default
    assert settings.cometapi_api_key is not None


def test_teambot_env_file_names_the_file_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("COMETAPI_API_KEY", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    other = tmp_path / "team.env"
    other.write_text("BOT_NAME=elsewhere\n")
    monkeypatch.setenv("TEAMBOT_ENV_FILE", str(other))
    settings = load_settings()
    assert settings.bot_name == "elsewhere"
    assert settings.env_file == other
    with pytest.raises(ConfigError) as caught:
        settings.require("cometapi_api_key", "slack_bot_token", "slack_app_token")
    assert str(caught.value) == (
        f"COMETAPI_API_KEY, SLACK_BOT_TOKEN and SLACK_APP_TOKEN are not set: put them in "
        f"{other} or in the environment (see .env.example)."
    )
    monkeypatch.setenv("TEAMBOT_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(
        ConfigError, match=r"TEAMBOT_ENV_FILE names .*missing\.env, which is not a file"
    ):
        load_settings()


def test_every_missing_variable_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TEAMBOT_ENV_FILE", raising=False)
    for name in ("COMETAPI_API_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert main(["slack", "--http"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "teambot: COMETAPI_API_KEY, SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET are not set"
    )


def test_a_trailing_v1_in_the_base_url_is_accepted() -> None:
    for url in (
        "https://api.cometapi.com/v1",
        "https://api.cometapi.com/v1/",
        "https://api.cometapi.com/",
    ):
        assert load_settings(_env_file=None, cometapi_base_url=url).base_url == (
            "https://api.cometapi.com"
        )


def test_log_format_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert load_settings(_env_file=None).log_format == "auto"
    assert resolve_format("auto", Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"


def test_version_and_help_list_what_each_command_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.match(r"teambot \d+\.\d+\.\d+ \(Python 3\.\d+", capsys.readouterr().out)
    for command, needed in (
        (
            "slack",
            ["COMETAPI_API_KEY", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"],
        ),
        ("discord", ["COMETAPI_API_KEY", "DISCORD_BOT_TOKEN"]),
        ("console", ["COMETAPI_API_KEY"]),
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        needs = text[text.index("needs:") :]
        for name in needed:
            assert name in needs, (command, name)
