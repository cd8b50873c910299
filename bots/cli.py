"""The `teambot` command: `console`, `doctor`, `slack`, `discord`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from core.logs import configure_logging
from core.settings import ConfigError, Settings, load_settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teambot",
        description="A team chat bot: GPT-5.3 Chat for dialogue, Gemini Flash-Lite for summaries.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    console = commands.add_parser("console", help="chat in the terminal (one line = one message)")
    console.add_argument("--user", default=None, help="your name in the conversation")
    console.add_argument(
        "--conversation", default="default", help="conversation name (memory is kept per name)"
    )

    commands.add_parser("doctor", help="check configuration, Redis and the model API")

    slack = commands.add_parser("slack", help="run the Slack bot (Socket Mode or --http)")
    slack.add_argument("--http", action="store_true", help="serve the Events API over HTTP")
    slack.add_argument("--host", default="0.0.0.0", help="HTTP bind address (with --http)")
    slack.add_argument(
        "--port",
        type=int,
        default=None,
        help="with --http: the events port (default HEALTH_PORT, else 3000); in Socket Mode: "
        "serve /healthz, /readyz, /metrics on it",
    )

    discord = commands.add_parser("discord", help="run the Discord bot")
    discord.add_argument(
        "--sync", action="store_true", help="sync slash commands now, then keep running"
    )
    discord.add_argument("--port", type=int, default=None, help="serve /healthz, /readyz, /metrics")
    return parser


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "console":
        from bots.console import run_console

        return asyncio.run(run_console(settings, user=args.user, conversation=args.conversation))
    if args.command == "doctor":
        from bots.doctor import run_doctor

        return asyncio.run(run_doctor(settings))
    if args.command == "slack":
        from bots.slack.app import run_slack

        return asyncio.run(run_slack(settings, http=args.http, host=args.host, port=args.port))
    if args.command == "discord":
        from bots.discord.app import run_discord

        return asyncio.run(run_discord(settings, sync=args.sync, port=args.port))
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        quiet = args.command in ("console", "doctor")
        configure_logging(
            "WARNING" if quiet and settings.log_level == "INFO" else settings.log_level,
            "text" if quiet else settings.log_format,
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
        return _run(args, settings)
    except ConfigError as error:
        print(f"teambot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
