"""The tool registry: a tool is an async function with typed parameters; its JSON Schema
(for both protocols) is generated from the signature with pydantic. Sources add tools that
come and go (MCP servers): `specs()` is recomputed from what they offer at each call."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, get_type_hints, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from core.providers.base import ToolSpec
from core.types import Author, ConversationKey

__all__ = [
    "AnyTool",
    "Tool",
    "ToolArgumentsError",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolSource",
    "tool",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_MARK = "__teambot_tool__"


class ToolError(Exception):
    """Raised by a tool to tell the model, in plain words, what went wrong."""


class ToolArgumentsError(ToolError):
    """The model's arguments do not fit the tool's parameters."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know about the conversation it runs in."""

    key: ConversationKey
    author: Author | None
    summarize: Callable[[], Awaitable[str]]


@runtime_checkable
class AnyTool(Protocol):
    """What the dispatcher needs of a tool, a Python `@tool` or one from an MCP server."""

    @property
    def name(self) -> str: ...

    @property
    def needs_approval(self) -> bool:
        """Whether a person must approve a call before it runs (the approval flow)."""
        ...

    @property
    def timeout(self) -> float | None:
        """Seconds a call may take; None: TOOL_TIMEOUT_SECONDS."""
        ...

    def spec(self) -> ToolSpec: ...

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Run with the model's decoded arguments; ToolError for what the model should read."""
        ...


class ToolSource(Protocol):
    """Tools that come and go (the MCP servers' tools)."""

    def tools(self) -> Mapping[str, AnyTool]:
        """The tools to offer the model now, by name."""
        ...

    def find(self, name: str) -> AnyTool | None:
        """A tool by name, also one not offered right now (its server is down), so that a
        call to it gets an explanation rather than "no such tool"."""
        ...


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    func: Callable[..., Awaitable[Any]]
    arguments: type[BaseModel]
    wants_context: bool
    needs_approval: bool = False
    timeout: float | None = None  # seconds; None: TOOL_TIMEOUT_SECONDS

    def spec(self) -> ToolSpec:
        return ToolSpec(
            self.name, self.description, _clean_schema(self.arguments.model_json_schema())
        )

    async def run(self, arguments: BaseModel, context: ToolContext) -> Any:
        kwargs = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        if self.wants_context:
            kwargs["ctx"] = context
        return await self.func(**kwargs)

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        try:
            parsed = self.arguments.model_validate(arguments)
        except ValidationError as error:
            raise ToolArgumentsError(_explain(error)) from None
        return await self.run(parsed, context)


def _explain(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline `$ref`s and drop pydantic's titles: both vendors take plain JSON Schema."""
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = str(node["$ref"]).rsplit("/", 1)[-1]
                return walk(dict(definitions[name]))
            return {k: walk(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    cleaned = walk(schema)
    assert isinstance(cleaned, dict)
    cleaned.setdefault("properties", {})
    return cleaned


def _build(
    func: Callable[..., Awaitable[Any]],
    name: str | None,
    description: str | None,
    time_limit: float | None = None,
    needs_approval: bool = False,
) -> Tool:
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"tool {func.__name__} must be an async function")
    tool_name = name or func.__name__
    if not _NAME.match(tool_name):
        raise ValueError(f"tool name {tool_name!r} must match {_NAME.pattern}")
    hints = get_type_hints(func, include_extras=True)
    fields: dict[str, Any] = {}
    wants_context = False
    for parameter in inspect.signature(func).parameters.values():
        if parameter.name == "ctx":
            wants_context = True
            continue
        if parameter.name not in hints:
            raise TypeError(f"tool {tool_name}: parameter {parameter.name} needs a type hint")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    model = create_model(
        f"{tool_name}_arguments",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    text = description or inspect.getdoc(func) or ""
    if not text:
        raise ValueError(f"tool {tool_name} needs a description (a docstring)")
    return Tool(
        tool_name,
        " ".join(text.split()),
        func,
        model,
        wants_context,
        needs_approval=needs_approval,
        timeout=time_limit,
    )


def tool(
    func: Callable[..., Awaitable[Any]] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    time_limit: float | None = None,
    needs_approval: bool = False,
) -> Any:
    """Mark an async function as a tool. Usable bare (`@tool`) or with arguments;
    `time_limit` (seconds) replaces TOOL_TIMEOUT_SECONDS for a tool that needs longer;
    `needs_approval`: the person who asked approves each call first (it changes something)."""

    def mark(target: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        setattr(target, _MARK, _build(target, name, description, time_limit, needs_approval))
        return target

    return mark(func) if func is not None else mark


class ToolRegistry:
    """Python tools, fixed at start-up, and sources whose tools come and go. A source's tool
    never hides a Python tool of the same name."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Awaitable[Any]]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._specs: list[ToolSpec] | None = None
        self._sources: list[ToolSource] = []
        for item in tools:
            self.add(item)

    def add_source(self, source: ToolSource) -> None:
        self._sources.append(source)

    def remove_source(self, source: ToolSource) -> None:
        self._sources = [s for s in self._sources if s is not source]

    def _dynamic(self) -> dict[str, AnyTool]:
        found: dict[str, AnyTool] = {}
        for source in self._sources:
            for name, item in source.tools().items():
                if name not in self._tools:
                    found.setdefault(name, item)
        return found

    def add(self, item: Tool | Callable[..., Awaitable[Any]]) -> Tool:
        found = item if isinstance(item, Tool) else getattr(item, _MARK, None)
        if found is None:
            found = _build(item, None, None)  # type: ignore[arg-type]
        assert isinstance(found, Tool)
        if found.name in self._tools and self._tools[found.name].func is not found.func:
            raise ValueError(f"two tools are named {found.name!r}")
        self._tools[found.name] = found
        self._specs = None
        return found

    def load_module(self, module_name: str) -> list[Tool]:
        """Register every `@tool` function of an importable module."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"TOOL_MODULES: cannot import {module_name!r} ({error})") from None
        added = [
            self.add(value)
            for value in vars(module).values()
            if callable(value) and isinstance(getattr(value, _MARK, None), Tool)
        ]
        if not added:
            raise ValueError(f"TOOL_MODULES: module {module_name!r} defines no @tool function")
        return added

    def get(self, name: str) -> AnyTool | None:
        found = self._tools.get(name)
        if found is not None:
            return found
        for source in self._sources:
            item = source.find(name)
            if item is not None:
                return item
        return None

    def names(self) -> list[str]:
        """Names of the tools offered now."""
        return sorted([*self._tools, *self._dynamic()])

    def specs(self) -> list[ToolSpec]:
        """The tools offered now, for a model request (sorted by name)."""
        if self._specs is None:
            self._specs = [self._tools[name].spec() for name in sorted(self._tools)]
        dynamic = self._dynamic()
        if not dynamic:
            return list(self._specs)
        specs = [*self._specs, *(item.spec() for item in dynamic.values())]
        return sorted(specs, key=lambda spec: spec.name)

    def __len__(self) -> int:
        return len(self._tools) + len(self._dynamic())
