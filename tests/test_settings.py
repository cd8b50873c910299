"""Configuration: defaults, plain one-sentence errors, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bots.cli import main
from core.settings import ConfigError, Settings, load_settings

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
    assert main(["console"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "teambot: COMETAPI_API_KEY is not set: put it in the environment or in .env "
        "(see .env.example)."
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
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", text, re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields == documented
    # each variable has a comment line right above it (or above its group of two)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z0-9_]+=", line):
            above = lines[index - 1] if lines[index - 1].startswith("#") else lines[index - 2]
            assert above.startswith("#"), line
