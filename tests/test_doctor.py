"""`teambot doctor` as an admin runs it: a real process against real Redis and the fake
CometAPI, Slack and Discord. Each failure names the variable at fault and what to do;
exit codes are 0 (nothing failed), 1 (a check failed), 2 (settings unreadable)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from bots.doctor import SLACK_SCOPES
from tests.fakes.cometapi import FakeCometAPI, ServerError
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_api import BOT_SCOPES, FakeSlack
from tests.support import API_KEY
from tests.test_console import console_env, run_piped

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(ok  |warn|FAIL|skip) [^:]+: .+$")


async def doctor(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    code, out, err = await run_piped(["doctor", *args], b"", env, cwd)
    for line in out.splitlines():
        assert LINE.match(line), f"not a checklist line: {line!r}"
    return code, out, err


def _line(out: str, status: str, start: str) -> str:
    for line in out.splitlines():
        if line.startswith(f"{status:<4} {start}"):
            return line
    raise AssertionError(f"no '{status} {start}…' line in:\n{out}")


async def test_a_sound_setup_passes_with_both_routes_answering(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    code, out, err = await doctor(env, tmp_path)
    assert code == 0, out
    assert err == ""  # no log lines, only the checklist
    assert "answered a one-token completion" in _line(
        out, "ok", "dialogue route: gpt-5.3-chat-latest (DIALOGUE_MODEL)"
    )
    assert "answered a one-token completion" in _line(
        out, "ok", "summary route: gemini-3.1-flash-lite (SUMMARY_MODEL)"
    )
    assert re.search(r"Redis \d+\.\d+\.\d+ at 127\.0\.0\.1:\d+/0 \(REDIS_URL\)", out)
    assert _line(out, "ok", "model API: COMETAPI_BASE_URL")
    assert _line(out, "skip", "Slack: SLACK_BOT_TOKEN is not set")
    # one real completion per route, one token each
    chat = cometapi.requests_for("gpt-5.3-chat-latest")
    gemini = cometapi.requests_for("gemini-3.1-flash-lite")
    assert [r.json["max_completion_tokens"] for r in chat] == [1]
    assert [r.generation_config["maxOutputTokens"] for r in gemini] == [1]
    assert cometapi.rejected == []


async def test_a_trailing_v1_in_the_base_url_is_accepted(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    env["COMETAPI_BASE_URL"] = cometapi.base_url + "/v1/"
    code, out, _ = await doctor(env, tmp_path)
    assert code == 0, out
    assert "/v1/v1" not in out
    assert {r.path for r in cometapi.requests} >= {"/v1/models", "/v1/chat/completions"}


async def test_a_wrong_key_names_cometapi_api_key(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    env["COMETAPI_API_KEY"] = "sk-wrong-key-000000"
    code, out, _ = await doctor(env, tmp_path)
    assert code == 1
    line = _line(out, "FAIL", "model API: COMETAPI_API_KEY was refused (HTTP 401)")
    assert "copy the key again" in line
    assert "sk-wrong-key-000000" not in out and API_KEY not in out
    assert _line(out, "skip", "model routes")


async def test_an_unreachable_gateway_names_cometapi_base_url(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    env["COMETAPI_BASE_URL"] = "http://127.0.0.1:1"
    code, out, _ = await doctor(env, tmp_path)
    assert code == 1
    line = _line(out, "FAIL", "model API: cannot reach COMETAPI_BASE_URL (http://127.0.0.1:1)")
    assert "ConnectError" in line and "check COMETAPI_BASE_URL" in line


async def test_a_broken_summary_route_fails_even_though_the_models_are_listed(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    cometapi.script("gemini-3.1-flash-lite", ServerError(500), times=3)
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    code, out, _ = await doctor(env, tmp_path)
    assert code == 1
    assert _line(out, "ok", "dialogue route: gpt-5.3-chat-latest")
    assert "HTTP 500" in _line(out, "FAIL", "summary route: gemini-3.1-flash-lite (SUMMARY_MODEL)")


async def test_an_unknown_model_names_its_variable(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, redis_url, key_prefix, tmp_path, DIALOGUE_MODEL="gpt-9-nope")
    code, out, _ = await doctor(env, tmp_path)
    assert code == 1
    line = _line(
        out, "FAIL", "dialogue route: the gateway does not know gpt-9-nope (DIALOGUE_MODEL)"
    )
    assert "check DIALOGUE_MODEL" in line


async def test_offline_calls_nothing_that_costs(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    code, out, _ = await doctor(env, tmp_path, "--offline")
    assert code == 0, out
    assert cometapi.requests == []
    assert _line(out, "skip", "model API: --offline")


async def test_redis_down_and_a_missing_key_are_each_one_line(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, "redis://:hunter2-pass@127.0.0.1:1/0", key_prefix, tmp_path)
    env["COMETAPI_API_KEY"] = ""
    code, out, _ = await doctor(env, tmp_path)
    assert code == 1
    assert "start Redis or correct REDIS_URL" in _line(
        out, "FAIL", "memory: Redis at 127.0.0.1:1/0 (REDIS_URL) does not answer"
    )
    assert "hunter2" not in out
    assert _line(out, "FAIL", "COMETAPI_API_KEY: is not set")
    assert _line(out, "skip", "model API: no COMETAPI_API_KEY")


async def test_without_redis_it_warns_but_passes(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    env = console_env(cometapi, None, key_prefix, tmp_path)
    code, out, _ = await doctor(env, tmp_path, "--offline")
    assert code == 0
    assert _line(out, "warn", "memory: REDIS_URL is unset")


async def test_unreadable_settings_exit_2_naming_the_variable_and_file(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("SUMMARY_THINKING_LEVEL=extreme\n")
    env = console_env(cometapi, None, key_prefix, tmp_path)
    code, out, err = await run_piped(["doctor"], b"", env, tmp_path)
    assert code == 2
    assert out == ""
    assert err.startswith("teambot: SUMMARY_THINKING_LEVEL is invalid (got 'extreme')")
    assert str(tmp_path / ".env") in err


async def test_slack_tokens_and_scopes(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    async with FakeSlack(bot_token="xoxb-good", app_token="xapp-good") as slack:
        env = console_env(
            cometapi,
            None,
            key_prefix,
            tmp_path,
            SLACK_API_URL=slack.api_url,
            SLACK_BOT_TOKEN="xoxb-good",
            SLACK_APP_TOKEN="xapp-good",
        )
        code, out, _ = await doctor(env, tmp_path)
        assert code == 0, out
        assert _line(out, "ok", "Slack: bot @teambot in workspace 'Teambot Test'")
        assert _line(out, "ok", "Slack scopes: all 12 granted")
        assert _line(out, "ok", "Slack Socket Mode: SLACK_APP_TOKEN opens a connection")

        slack.scopes.remove("files:read")
        env["SLACK_APP_TOKEN"] = "xapp-stale"
        code, out, _ = await doctor(env, tmp_path)
        assert code == 1
        assert "reinstall the app" in _line(out, "FAIL", "Slack scopes: missing files:read")
        assert _line(out, "FAIL", "Slack Socket Mode: SLACK_APP_TOKEN was refused (invalid_auth)")
        assert "xapp-stale" not in out

        env["SLACK_BOT_TOKEN"] = "xoxb-revoked"
        code, out, _ = await doctor(env, tmp_path)
        assert code == 1
        assert _line(out, "FAIL", "Slack: SLACK_BOT_TOKEN was refused (invalid_auth)")


async def test_discord_token_and_intent(
    cometapi: FakeCometAPI, key_prefix: str, tmp_path: Path
) -> None:
    async with FakeDiscord(token="discord-good-token", allowed_intents=0) as discord:
        env = console_env(
            cometapi,
            None,
            key_prefix,
            tmp_path,
            DISCORD_API_URL=discord.api_url,
            DISCORD_BOT_TOKEN="discord-good-token",
        )
        code, out, _ = await doctor(env, tmp_path)
        assert code == 0, out
        assert _line(out, "ok", "Discord: bot 'teambot'")
        assert "DISCORD_MESSAGE_CONTENT=false" in _line(
            out, "warn", "Discord intent: the Message Content intent is off"
        )
        env["DISCORD_BOT_TOKEN"] = "discord-bad-token"
        code, out, _ = await doctor(env, tmp_path)
        assert code == 1
        assert "Reset Token" in _line(
            out, "FAIL", "Discord: DISCORD_BOT_TOKEN was refused (HTTP 401)"
        )
        assert "discord-bad-token" not in out


def test_the_doctor_checks_the_scopes_the_manifest_asks_for() -> None:
    manifest = yaml.safe_load((ROOT / "deploy" / "slack" / "manifest.yaml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert set(SLACK_SCOPES) == scopes == set(BOT_SCOPES)


def test_exit_codes_are_documented() -> None:
    from bots.cli import _parser

    parser = _parser()
    doctor_help = parser._subparsers._group_actions[0].choices["doctor"].format_help()  # type: ignore[union-attr]
    assert "0 every check passed" in doctor_help and "1 a check failed" in doctor_help
    assert "2 the configuration cannot be read" in doctor_help
    assert sys.executable  # the same interpreter runs the processes above


async def test_mcp_servers_are_listed_with_their_tools_and_a_down_one_fails(
    cometapi: FakeCometAPI, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    import json

    server = ROOT / "tests" / "mcp_servers" / "demo_server.py"
    config = tmp_path / ".mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "demo": {"command": sys.executable, "args": [str(server), "demo"]},
                    "gone": {"command": str(tmp_path / "no-such-server")},
                }
            }
        )
    )
    env = console_env(cometapi, redis_url, key_prefix, tmp_path)
    env.update(MCP_CONFIG=str(config), MCP_CONNECT_TIMEOUT="10", MCP_RETRY_INITIAL="30")
    code, out, _err = await doctor(env, tmp_path, "--offline")
    assert code == 1, out
    demo = _line(out, "ok", "MCP demo")
    assert "stdio" in demo and "demo__echo" in demo and "demo__write_note" in demo
    assert "MCP_CONFIG" in _line(out, "FAIL", "MCP gone")
    # a broken file is one sentence naming MCP_CONFIG
    config.write_text("{not json")
    code, out, _err = await doctor(env, tmp_path, "--offline")
    assert code == 1
    assert "MCP_CONFIG" in _line(out, "FAIL", "MCP")
