"""The MCP_CONFIG file: `.mcp.json`, the format teams already have from other MCP clients.

    {"mcpServers": {
        "files":  {"command": "npx", "args": ["-y", "some-server"], "env": {"TOKEN": "${TOKEN}"}},
        "issues": {"type": "http", "url": "https://mcp.example.com/mcp",
                   "headers": {"Authorization": "Bearer ${ISSUES_TOKEN}"},
                   "include": ["search_*", "get_*"], "approval": "auto", "timeout": 30}}}

`${VAR}` and `${VAR:-default}` in strings are expanded from the environment (and `.env`).
Every problem is one `ConfigError` sentence naming MCP_CONFIG; values of `env` and
`headers` (secrets) never appear in errors, logs or reprs.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from core.settings import ConfigError

__all__ = ["Approval", "ServerConfig", "expand", "load_config", "parse_config"]

Approval = Literal["always", "never", "auto"]
Transport = Literal["stdio", "http", "memory"]

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_COMMON = {"type", "include", "exclude", "approval", "timeout", "disabled"}
_KEYS: dict[str, set[str]] = {
    "stdio": _COMMON | {"command", "args", "env", "cwd"},
    "http": _COMMON | {"url", "headers"},
}
_TYPES = {"stdio": "stdio", "http": "http", "streamable-http": "http", "streamableHttp": "http"}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One MCP server. `env` and `headers` hold secrets: they are left out of `repr`."""

    name: str
    transport: Transport
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    approval: Approval = "auto"
    timeout: float | None = None
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    url: str = field(default="", repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: An in-process server object (`mcp.server.mcpserver.MCPServer`): tests and embedding.
    server: Any = field(default=None, repr=False, compare=False)
    #: Values that came from `${VAR}`: scrubbed from errors like `env` and `headers` values.
    expanded: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def secrets(self) -> list[str]:
        """Strings never to show (longest first): env and header values, what `${VAR}`
        expanded to, and the URL's query and password."""
        parts = urlsplit(self.url) if self.url else None
        found = {*self.env.values(), *self.headers.values(), *self.expanded}
        if parts is not None:
            found |= {parts.query, parts.password or ""}
        return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)

    def allows(self, tool: str) -> bool:
        """Whether `include`/`exclude` (globs over the server's own tool names) let it in."""
        if self.include and not any(fnmatch.fnmatchcase(tool, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(tool, g) for g in self.exclude)

    def needs_approval(self, read_only: bool | None) -> bool:
        """`always` / `never`, or `auto`: unless the server marks the tool `readOnlyHint`."""
        if self.approval == "always":
            return True
        if self.approval == "never":
            return False
        return read_only is not True

    @property
    def target(self) -> str:
        """What to show a person: the command (no arguments, which may hold secrets) or the
        URL without credentials, query or fragment."""
        if self.transport == "stdio":
            return self.command
        if self.transport == "memory":
            return "in-process"
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _Problem(Exception):
    """What is wrong, as the end of a sentence."""


def expand(value: str, environ: Mapping[str, str], where: str, seen: set[str] | None = None) -> str:
    """Expand `${VAR}` and `${VAR:-default}` (the default also when VAR is empty); the
    values taken from `environ` are added to `seen`."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if found:
            if seen is not None:
                seen.add(found)
            return found
        if default is not None:
            return default
        if found is not None:
            return found
        raise _Problem(f"{where} uses ${{{name}}}, which is not set in the environment or .env")

    return _VARIABLE.sub(replace, value)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Problem(f"{where} must be a list of strings")
    return tuple(value)


def _mapping(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _Problem(f"{where} must be an object whose values are strings")
    return dict(value)


def _server(name: str, entry: Any, variables: Mapping[str, str]) -> ServerConfig | None:
    seen: set[str] = set()

    def environ(value: str, where: str) -> str:
        return expand(value, variables, where, seen)

    where = f'server "{name}"'
    if not re.fullmatch(r"[^\x00-\x1f]{1,64}", name):
        raise _Problem(f"server names must be 1 to 64 printable characters, not {name!r}")
    if not isinstance(entry, dict):
        raise _Problem(f"{where} must be an object")
    kind = entry.get("type")
    if kind is None:
        kind = "http" if "url" in entry and "command" not in entry else "stdio"
    if kind == "sse":
        raise _Problem(f'{where} has type "sse", which teambot does not support (use "http")')
    if kind not in _TYPES:
        raise _Problem(f'{where} has an unknown type {kind!r} (use "stdio" or "http")')
    transport = _TYPES[kind]
    unknown = sorted(set(entry) - _KEYS[transport])
    if unknown:
        allowed = ", ".join(sorted(_KEYS[transport]))
        raise _Problem(
            f"{where} has unknown key {unknown[0]!r} (a {transport} server takes {allowed})"
        )
    if entry.get("disabled") is True:
        return None
    approval = entry.get("approval", "auto")
    if approval not in ("always", "never", "auto"):
        raise _Problem(f'{where}: "approval" must be "always", "never" or "auto"')
    timeout = entry.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise _Problem(f'{where}: "timeout" must be a positive number of seconds')
    common: dict[str, Any] = {
        "include": _strings(entry.get("include", []), f'{where}: "include"'),
        "exclude": _strings(entry.get("exclude", []), f'{where}: "exclude"'),
        "approval": approval,
        "timeout": float(timeout) if timeout is not None else None,
    }
    if transport == "stdio":
        command = entry.get("command")
        if not isinstance(command, str) or not command.strip():
            raise _Problem(f'{where} needs a "command" (or "type": "http" and a "url")')
        cwd = entry.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise _Problem(f'{where}: "cwd" must be a string')
        env = _mapping(entry.get("env", {}), f'{where}: "env"')
        return ServerConfig(
            name,
            "stdio",
            command=environ(command, f'{where}: "command"'),
            args=tuple(
                environ(a, f'{where}: "args"')
                for a in _strings(entry.get("args", []), f'{where}: "args"')
            ),
            env={k: environ(v, f'{where}: env "{k}"') for k, v in env.items()},
            cwd=environ(cwd, f'{where}: "cwd"') if cwd else None,
            expanded=tuple(seen),
            **common,
        )
    url = entry.get("url")
    if not isinstance(url, str):
        raise _Problem(f'{where} needs a "url"')
    url = environ(url, f'{where}: "url"')
    if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
        raise _Problem(f'{where}: "url" must be an http:// or https:// address')
    headers = _mapping(entry.get("headers", {}), f'{where}: "headers"')
    return ServerConfig(
        name,
        "http",
        url=url,
        headers={k: environ(v, f'{where}: header "{k}"') for k, v in headers.items()},
        expanded=tuple(seen),
        **common,
    )


def parse_config(data: Any, environ: Mapping[str, str]) -> list[ServerConfig]:
    """Servers from an already-decoded `.mcp.json` document; raises `_Problem`."""
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers"), dict):
        raise _Problem('it must be a JSON object with an "mcpServers" object')
    servers = [_server(str(name), entry, environ) for name, entry in data["mcpServers"].items()]
    return [server for server in servers if server is not None]


def load_config(path: Path | str, environ: Mapping[str, str]) -> list[ServerConfig]:
    """Read and check the MCP_CONFIG file: one ConfigError sentence if anything is wrong."""
    where = f"MCP_CONFIG ({path})"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"{where} cannot be read: {reason}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{where} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    try:
        return parse_config(data, environ)
    except _Problem as problem:
        raise ConfigError(f"{where}: {problem}.") from None
