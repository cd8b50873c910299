"""The `teambot` command: `console` (the default), `doctor`, `slack`, `discord`.

Each command's `--help` lists the variables it needs; every missing one is reported at
once, in one sentence, before anything starts. Exit codes: 0 done, 1 failed (doctor: a
check failed; console: an answer failed in piped mode), 2 configuration error, 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib import metadata

from core import ENV_FILE_VARIABLE, ConfigError, Settings, load_settings

__all__ = ["main", "required_settings"]

# Variables each command cannot run without (field names), and those worth knowing about.
_MODEL = ("cometapi_api_key",)
_SLACK_SOCKET = ("cometapi_api_key", "slack_bot_token", "slack_app_token")
_SLACK_HTTP = ("cometapi_api_key", "slack_bot_token", "slack_signing_secret")
_DISCORD = ("cometapi_api_key", "discord_bot_token")
_SERVER_COMMON = ("REDIS_URL", "DAILY_BUDGET_USD", "HEALTH_PORT", "SHUTDOWN_GRACE_SECONDS")


def _platform_settings(prefix: str, required: Sequence[str]) -> list[str]:
    names = [n for n in Settings.model_fields if n.startswith(prefix) and n not in required]
    return [n.upper() for n in names]


def required_settings(command: str, *, http: bool = False) -> tuple[str, ...]:
    """The settings (field names) `command` cannot start without."""
    if command == "slack":
        return _SLACK_HTTP if http else _SLACK_SOCKET
    if command == "discord":
        return _DISCORD
    if command == "console":
        return _MODEL
    return ()


def _epilog(needs: str, optional: Sequence[str], extra: str = "") -> str:
    lines = [f"needs: {needs}"]
    if optional:
        lines.append("optional: " + ", ".join(optional))
    lines.append(
        f"Settings come from the environment and from .env in the current directory "
        f"(or the file {ENV_FILE_VARIABLE} names); .env.example explains each one."
    )
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def _version() -> str:
    try:
        version = metadata.version("teambot")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "unknown"
    return f"teambot {version} (Python {sys.version.split()[0]})"


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="teambot",
        description="A team chat bot: GPT-5.3 Chat for dialogue, Gemini Flash-Lite for "
        "summaries. With no command, starts the console.",
        epilog="exit codes: 0 done, 1 failed, 2 configuration error, 130 interrupted",
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    console = commands.add_parser(
        "console",
        help="chat in the terminal (the default)",
        description="Chat in the terminal: line editing and history, answers rendered as "
        "Markdown as they stream, Ctrl-C stops an answer, Ctrl-D or Ctrl-C at the prompt "
        "quits. With piped input, each line is one message and answers are plain text; the "
        "exit code is 1 if any answer failed.",
        epilog=_epilog(
            "COMETAPI_API_KEY",
            ["REDIS_URL (memory that survives restarts)", "DAILY_BUDGET_USD", "SYSTEM_PROMPT"],
        ),
        formatter_class=raw,
    )
    _console_arguments(console)

    commands.add_parser(
        "doctor",
        help="check configuration, Redis, the model API and platform tokens",
        description="Check the configuration, Redis, both model routes (a one-token "
        "completion each) and the Slack and Discord tokens that are set. One line per check, "
        "with what to do when it fails.",
        epilog=_epilog(
            "nothing (it reports what is missing)",
            [],
            "--offline: no call to the model gateway, Slack or Discord (nothing that costs).\n"
            "exit codes: 0 every check passed (warnings allowed), 1 a check failed, "
            "2 the configuration cannot be read",
        ),
        formatter_class=raw,
    ).add_argument(
        "--offline",
        action="store_true",
        help="skip the checks that call the model gateway, Slack or Discord",
    )

    slack = commands.add_parser(
        "slack",
        help="run the Slack bot (Socket Mode, or --http)",
        description="Run the Slack bot: Socket Mode by default (no public URL), or the "
        "Events API over HTTP with --http.",
        epilog=_epilog(
            "COMETAPI_API_KEY, SLACK_BOT_TOKEN and SLACK_APP_TOKEN "
            "(with --http: SLACK_SIGNING_SECRET instead of SLACK_APP_TOKEN)",
            [*_SERVER_COMMON, *_platform_settings("slack_", _SLACK_SOCKET + _SLACK_HTTP)],
        ),
        formatter_class=raw,
    )
    slack.add_argument("--http", action="store_true", help="serve the Events API over HTTP")
    slack.add_argument("--host", default="0.0.0.0", help="HTTP bind address")
    slack.add_argument(
        "--port",
        type=int,
        default=None,
        help="with --http: the events port, serving /slack/events (default 3000); "
        "/healthz, /readyz, /metrics are then on HEALTH_PORT, or on this port too when "
        "HEALTH_PORT is not set (local use); in Socket Mode: serve /healthz, /readyz, "
        "/metrics on it (default HEALTH_PORT, else none)",
    )

    discord = commands.add_parser(
        "discord",
        help="run the Discord bot",
        description="Run the Discord bot (slash commands, @mentions, threads).",
        epilog=_epilog(
            "COMETAPI_API_KEY and DISCORD_BOT_TOKEN",
            [*_SERVER_COMMON, *_platform_settings("discord_", _DISCORD)],
        ),
        formatter_class=raw,
    )
    discord.add_argument(
        "--sync", action="store_true", help="sync slash commands now, then keep running"
    )
    discord.add_argument(
        "--port",
        type=int,
        default=None,
        help="serve /healthz, /readyz, /metrics on it (default HEALTH_PORT, else none)",
    )
    return parser


def _console_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default=None, help="your name in the conversation")
    parser.add_argument(
        "--conversation", default="default", help="conversation name (memory is kept per name)"
    )


def _configure_logging(command: str, settings: Settings) -> None:
    from core import configure_logging, metrics

    level: str = settings.log_level
    fmt: str = settings.log_format
    if command in ("console", "doctor"):
        # The console and the doctor speak to a person: their own lines carry every
        # problem, so library and engine chatter stays out unless LOG_LEVEL asks for it.
        fmt = "text"
        if level == "INFO":
            level = "WARNING" if command == "console" else "CRITICAL"
    configure_logging(
        level,
        fmt,
        secrets=(
            settings.cometapi_api_key,
            settings.redis_url,
            settings.slack_bot_token,
            settings.slack_app_token,
            settings.slack_signing_secret,
            settings.discord_bot_token,
        ),
        quiet=("discord.gateway",),
    )
    metrics.DAILY_BUDGET_USD.set(settings.daily_budget_usd or 0)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "console":
        from bots.console import run_console

        return asyncio.run(run_console(settings, user=args.user, conversation=args.conversation))
    if args.command == "doctor":
        from bots.doctor import run_doctor

        return asyncio.run(run_doctor(settings, offline=args.offline))
    if args.command == "slack":
        from bots.slack.app import run_slack

        return asyncio.run(run_slack(settings, http=args.http, host=args.host, port=args.port))
    if args.command == "discord":
        from bots.discord.app import run_discord

        return asyncio.run(run_discord(settings, sync=args.sync, port=args.port))
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:  # `teambot` alone: the console
        args.command, args.user, args.conversation = "console", None, "default"
    try:
        settings = load_settings()
        settings.require(*required_settings(args.command, http=getattr(args, "http", False)))
        _configure_logging(args.command, settings)
        return _run(args, settings)
    except ConfigError as error:
        print(f"teambot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
