"""The shape the design card promises, checked: adapters use core's public API only,
core never reaches into an adapter or a platform library, and files stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import core

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_LIBRARIES = ("discord", "slack_sdk", "slack_bolt", "bots")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in a file, nested ones included."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def test_bots_use_only_the_names_core_makes_public() -> None:
    public = set(core.__all__)
    wrong: list[str] = []
    for path in sorted((ROOT / "bots").rglob("*.py")):
        for module, names in _imports(path):
            where = path.relative_to(ROOT)
            if module.startswith("core."):
                wrong.append(f"{where}: imports {module}")
            elif module == "core":
                wrong.extend(f"{where}: core.{n} is not public" for n in names if n not in public)
    assert wrong == []


def test_every_public_name_resolves() -> None:
    for name in core.__all__:
        assert getattr(core, name) is not None, name


def test_core_imports_no_adapter_and_no_platform_library() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "core").rglob("*.py"))
        for module, _names in _imports(path)
        if module.split(".")[0] in PLATFORM_LIBRARIES
    ]
    assert wrong == []


MAX_LINES = 600


def test_no_file_in_core_or_bots_is_over_600_lines() -> None:
    too_long = [
        f"{where}: {lines} lines"
        for folder in ("core", "bots")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
        and (where := path.relative_to(ROOT).as_posix())
    ]
    assert too_long == []
