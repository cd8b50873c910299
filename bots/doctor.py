"""`teambot doctor`: one line per check, naming the variable at fault and what to do.

Checks, in order: the settings file and COMETAPI_API_KEY; Redis (version, persistence,
eviction); the gateway (its model list, then a one-token completion on every model of the
dialogue and summary routes); the Slack and Discord tokens that are set (and Slack's
scopes, Discord's Message Content intent). `--offline` skips every call to the gateway,
Slack and Discord. Exit code: 0 when nothing failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from rich.console import Console
from rich.text import Text

from core import (
    ConfigError,
    GatewayReport,
    ProbeResult,
    Settings,
    inspect_mcp,
    inspect_redis,
    list_models,
    probe_targets,
)

__all__ = ["SLACK_SCOPES", "Check", "checks", "run_doctor"]

Status = Literal["ok", "warn", "FAIL", "skip"]

#: The bot scopes teambot uses (deploy/slack/manifest.yaml asks for exactly these).
SLACK_SCOPES: tuple[str, ...] = (
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "channels:read",
    "chat:write",
    "commands",
    "files:read",
    "groups:history",
    "groups:read",
    "im:history",
    "mpim:history",
    "users:read",
)
#: Discord application flags: the Message Content intent, approved or (under 100 servers)
#: switched on in the Developer Portal.
_MESSAGE_CONTENT_FLAGS = (1 << 18) | (1 << 19)
_MINIMUM_REDIS = (6, 0)


@dataclass(frozen=True, slots=True)
class Check:
    status: Status
    name: str
    text: str
    fix: str = ""


@dataclass(slots=True)
class Context:
    settings: Settings
    offline: bool
    http: httpx.AsyncClient
    gateway: GatewayReport | None = None


CheckFn = Callable[[Context], Awaitable[list[Check]]]


# --- configuration and memory -------------------------------------------------------------


async def check_settings(ctx: Context) -> list[Check]:
    settings = ctx.settings
    if settings.env_file is not None:
        source = Check("ok", "settings", f"read {settings.env_file} and the environment")
    else:
        source = Check("ok", "settings", f"read {settings.where()}")
    missing = settings.missing("cometapi_api_key")
    if missing:
        key = Check(
            "FAIL",
            "COMETAPI_API_KEY",
            "is not set",
            f"put your CometAPI key in {settings.env_file or settings.where()} "
            "(cp .env.example .env, then edit it)",
        )
    else:
        key = Check("ok", "COMETAPI_API_KEY", "is set")
    return [source, key]


async def check_redis(ctx: Context) -> list[Check]:
    settings = ctx.settings
    if settings.redis_url is None:
        return [
            Check(
                "warn",
                "memory",
                "REDIS_URL is unset: memory lives in this process only",
                "fine for the console; set REDIS_URL for a team (restarts, several processes)",
            )
        ]
    report = await inspect_redis(settings.redis_url.get_secret_value())
    if report.error is not None:
        return [
            Check(
                "FAIL",
                "memory",
                f"Redis at {report.location} (REDIS_URL) does not answer ({report.error})",
                "start Redis or correct REDIS_URL",
            )
        ]
    version = tuple(int(p) for p in (report.version or "0").split(".")[:2] if p.isdigit())
    found = [
        Check(
            "ok" if version >= _MINIMUM_REDIS else "FAIL",
            "memory",
            f"Redis {report.version} at {report.location} (REDIS_URL)",
            "" if version >= _MINIMUM_REDIS else "teambot needs Redis 6 or newer",
        )
    ]
    if report.aof:
        found.append(Check("ok", "persistence", "append-only file (AOF) on"))
    elif report.snapshots:
        found.append(
            Check(
                "ok",
                "persistence",
                "snapshots (RDB) only: a crash loses the last minutes",
                "appendonly yes keeps them",
            )
        )
    elif report.snapshots is None:
        found.append(Check("ok", "persistence", "AOF off; snapshot settings not readable"))
    else:
        found.append(
            Check(
                "warn",
                "persistence",
                "none: this Redis keeps nothing on disk, so memory is lost when it restarts",
                "run it with --appendonly yes (deploy/compose.yaml does)",
            )
        )
    if report.eviction and report.eviction.startswith("allkeys"):
        found.append(
            Check(
                "warn",
                "eviction",
                f"maxmemory-policy {report.eviction} may evict conversations and locks",
                "use noeviction or a volatile-* policy",
            )
        )
    return found


# --- the model gateway ---------------------------------------------------------------------


def _base(settings: Settings) -> str:
    return f"COMETAPI_BASE_URL ({settings.base_url})"


async def check_gateway(ctx: Context) -> list[Check]:
    settings = ctx.settings
    if settings.cometapi_api_key is None:
        return [Check("skip", "model API", "no COMETAPI_API_KEY")]
    if ctx.offline:
        return [Check("skip", "model API", "--offline")]
    report = ctx.gateway = await list_models(settings, ctx.http)
    if report.status is None:
        return [
            Check(
                "FAIL",
                "model API",
                f"cannot reach {_base(settings)}: {report.error}",
                "check COMETAPI_BASE_URL (unset means https://api.cometapi.com), "
                "the network and any proxy",
            )
        ]
    if report.status in (401, 403):
        return [
            Check(
                "FAIL",
                "model API",
                f"COMETAPI_API_KEY was refused (HTTP {report.status})",
                f"copy the key again from your CometAPI dashboard into {settings.where()}",
            )
        ]
    if report.status != 200 or report.error:
        return [
            Check(
                "FAIL",
                "model API",
                f"{_base(settings)} answered HTTP {report.status} for /v1/models"
                + (f": {report.error}" if report.error else ""),
                "COMETAPI_BASE_URL must be the gateway's address, e.g. https://api.cometapi.com",
            )
        ]
    return [Check("ok", "model API", f"{_base(settings)} answers; {len(report.models)} models")]


def _variable(settings: Settings, result: ProbeResult) -> str:
    model = result.target.model
    explicit = [r for r in result.routes if getattr(settings, f"{r}_route")]
    if explicit:
        return " / ".join(f"{r.upper()}_ROUTE" for r in explicit)
    return "DIALOGUE_MODEL" if model == settings.dialogue_model else "SUMMARY_MODEL"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _label(result: ProbeResult) -> str:
    if result.first:
        return " and ".join(result.first) + " route"
    return " and ".join(result.routes) + " fallback"


def _probe_check(settings: Settings, result: ProbeResult, listed: frozenset[str]) -> Check:
    name = _label(result)
    target = f"{result.target.model} ({_variable(settings, result)})"
    error = result.error
    if error is None:
        return Check(
            "ok", name, f"{target} answered a one-token completion in {_duration(result.seconds)}"
        )
    category, detail = error.category, error.detail
    if category == "auth":
        return Check(
            "FAIL",
            name,
            f"{target}: COMETAPI_API_KEY was refused (HTTP {error.status})",
            "check the key and that it may use this model",
        )
    if category == "not_found" or (listed and result.target.model not in listed):
        return Check(
            "FAIL",
            name,
            f"the gateway does not know {target}",
            f"check {_variable(settings, result)}; `GET /v1/models` lists what it offers",
        )
    if category in ("connection", "timeout"):
        return Check(
            "FAIL",
            name,
            f"{target}: no answer from {_base(settings)} ({detail})",
            "check COMETAPI_BASE_URL and the network",
        )
    if category == "redirect":
        return Check(
            "FAIL", name, f"{target}: {detail}", "set COMETAPI_BASE_URL to the final address"
        )
    if category == "quota":
        return Check(
            "FAIL", name, f"{target}: the account's quota is used up", "top up at CometAPI"
        )
    if category == "rate_limit":
        return Check("warn", name, f"{target}: rate limited (HTTP 429)", "try again in a minute")
    return Check("FAIL", name, f"{target}: {detail}", "")


async def check_routes(ctx: Context) -> list[Check]:
    settings = ctx.settings
    gateway = ctx.gateway
    if ctx.offline or gateway is None or gateway.status != 200:
        return [Check("skip", "model routes", "--offline" if ctx.offline else "the gateway failed")]
    results = await probe_targets(settings, ctx.http)
    return [_probe_check(settings, result, gateway.models) for result in results]


# --- platforms -----------------------------------------------------------------------------


async def check_slack(ctx: Context) -> list[Check]:
    settings = ctx.settings
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    if not token and not app_token:
        return [
            Check("skip", "Slack", "SLACK_BOT_TOKEN is not set (only `teambot slack` needs it)")
        ]
    if not token:
        return [
            Check(
                "FAIL",
                "Slack",
                "SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not",
                "copy the Bot User OAuth Token (xoxb-…) from Install App",
            )
        ]
    if ctx.offline:
        return [Check("skip", "Slack", "--offline")]
    api = settings.slack_api_url.rstrip("/") + "/"
    found: list[Check] = []
    try:
        response = await ctx.http.post(
            api + "auth.test", headers={"Authorization": f"Bearer {token}"}
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return [
            Check(
                "FAIL",
                "Slack",
                f"cannot reach SLACK_API_URL ({api}): {type(error).__name__}",
                "check SLACK_API_URL and the network",
            )
        ]
    if not body.get("ok"):
        return [
            Check(
                "FAIL",
                "Slack",
                f"SLACK_BOT_TOKEN was refused ({body.get('error')})",
                "copy the Bot User OAuth Token (xoxb-…) again from the app's Install App page",
            )
        ]
    found.append(Check("ok", "Slack", f"bot @{body.get('user')} in workspace {body.get('team')!r}"))
    granted = {
        s.strip() for s in response.headers.get("x-oauth-scopes", "").split(",") if s.strip()
    }
    missing = [s for s in SLACK_SCOPES if s not in granted]
    if missing:
        found.append(
            Check(
                "FAIL",
                "Slack scopes",
                "missing " + ", ".join(missing),
                "add them (deploy/slack/manifest.yaml lists them all) and reinstall the app",
            )
        )
    else:
        found.append(Check("ok", "Slack scopes", f"all {len(SLACK_SCOPES)} granted"))
    if app_token:
        opened = await ctx.http.post(
            api + "apps.connections.open", headers={"Authorization": f"Bearer {app_token}"}
        )
        result = (
            opened.json() if opened.status_code == 200 else {"error": f"HTTP {opened.status_code}"}
        )
        if result.get("ok"):
            found.append(Check("ok", "Slack Socket Mode", "SLACK_APP_TOKEN opens a connection"))
        else:
            found.append(
                Check(
                    "FAIL",
                    "Slack Socket Mode",
                    f"SLACK_APP_TOKEN was refused ({result.get('error')})",
                    "generate an app-level token (xapp-…) with connections:write under "
                    "Basic Information, and turn Socket Mode on",
                )
            )
    elif settings.slack_signing_secret is None:
        found.append(
            Check(
                "warn",
                "Slack mode",
                "neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET (--http) is set",
                "set one of them",
            )
        )
    return found


async def check_discord(ctx: Context) -> list[Check]:
    settings = ctx.settings
    if settings.discord_bot_token is None:
        return [
            Check(
                "skip", "Discord", "DISCORD_BOT_TOKEN is not set (only `teambot discord` needs it)"
            )
        ]
    if ctx.offline:
        return [Check("skip", "Discord", "--offline")]
    api = settings.discord_api_url.rstrip("/")
    headers = {"Authorization": f"Bot {settings.discord_bot_token.get_secret_value()}"}
    try:
        me = await ctx.http.get(f"{api}/users/@me", headers=headers)
        app = await ctx.http.get(f"{api}/oauth2/applications/@me", headers=headers)
    except httpx.HTTPError as error:
        return [
            Check(
                "FAIL",
                "Discord",
                f"cannot reach DISCORD_API_URL ({api}): {type(error).__name__}",
                "check DISCORD_API_URL and the network",
            )
        ]
    if me.status_code != 200:
        return [
            Check(
                "FAIL",
                "Discord",
                f"DISCORD_BOT_TOKEN was refused (HTTP {me.status_code})",
                "reset the token in the Developer Portal (Bot → Reset Token) and put the new one "
                f"in {settings.where()}",
            )
        ]
    found = [Check("ok", "Discord", f"bot {me.json().get('username')!r}")]
    flags = int(app.json().get("flags") or 0) if app.status_code == 200 else 0
    if settings.discord_message_content and not flags & _MESSAGE_CONTENT_FLAGS:
        found.append(
            Check(
                "warn",
                "Discord intent",
                "the Message Content intent is off",
                "turn it on (Developer Portal → Bot), or set DISCORD_MESSAGE_CONTENT=false",
            )
        )
    return found


async def check_mcp(ctx: Context) -> list[Check]:
    """Each MCP server of MCP_CONFIG: transport, whether it answers, its tools."""
    settings = ctx.settings
    if settings.mcp_config is None:
        return []
    try:
        reports = await inspect_mcp(settings)
    except ConfigError as error:
        return [Check("FAIL", "MCP", str(error), "fix the file MCP_CONFIG names")]
    found: list[Check] = []
    for report in reports:
        ok = report.status == "connected"
        found.append(
            Check(
                "ok" if ok else "FAIL",
                f"MCP {report.name}",
                report.render()[len(report.name) + 1 :],
                "" if ok else "check the server's command or URL in MCP_CONFIG",
            )
        )
    return found


def checks() -> list[CheckFn]:
    """The doctor's checks, in the order they run and print."""
    found: list[CheckFn] = [
        check_settings,
        check_redis,
        check_gateway,
        check_routes,
        check_slack,
        check_discord,
        check_mcp,
    ]
    return found


_STYLES: dict[Status, str] = {"ok": "green", "warn": "yellow", "FAIL": "bold red", "skip": "dim"}


def _show(console: Console, check: Check, secrets: list[str]) -> None:
    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "**********")
        return text

    line = Text(f"{check.status:<4} ", style=_STYLES[check.status])
    line.append(scrub(f"{check.name}: {check.text}"))
    if check.fix:
        line.append(scrub(f" → {check.fix}"), style="bold" if check.status == "FAIL" else "")
    console.print(line, soft_wrap=True, highlight=False)


def _secrets(settings: Settings) -> list[str]:
    values = [
        getattr(settings, name)
        for name, info in Settings.model_fields.items()
        if "SecretStr" in str(info.annotation)
    ]
    found = {v.get_secret_value() for v in values if v is not None}
    return sorted((s for s in found if len(s) >= 6), key=len, reverse=True)


async def run_doctor(
    settings: Settings, *, offline: bool = False, console: Console | None = None
) -> int:
    """Run every check, printing each line as it is known. 0 when nothing failed."""
    console = console or Console(highlight=False)
    failed = False
    secrets = _secrets(settings)
    timeout = httpx.Timeout(settings.connect_timeout + 20, connect=settings.connect_timeout)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        ctx = Context(settings, offline, http)
        for check in checks():
            try:
                lines = await check(ctx)
            except Exception as error:  # a check's own bug must not hide the others
                name = getattr(check, "__name__", "check").removeprefix("check_")
                lines = [Check("FAIL", name, f"could not run ({type(error).__name__}: {error})")]
            for line in lines:
                _show(console, line, secrets)
                failed = failed or line.status == "FAIL"
    return 1 if failed else 0
