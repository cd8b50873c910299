"""`bash deploy/run.sh` on a newcomer's machine: an old Python is refused before anything
is created, and a .venv made by another Python (or from an older lock) is rebuilt.

Runs on a copy of the repository with a small lock file (just what `teambot --version`
imports, hash-pinned as in deploy/requirements.lock), so it takes seconds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = {
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "typing-extensions",
    "annotated-types",
    "typing-inspection",
    "python-dotenv",
}


def _small_lock() -> str:
    text = (ROOT / "deploy" / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[a-z0-9])", text)
    kept = [b for b in blocks if b.split("==")[0] in SMALL]
    assert len(kept) == len(SMALL), "the lock no longer pins what `teambot --version` imports"
    return "\n".join(kept) + "\n"


def _copy(tmp: Path) -> Path:
    repo = tmp / "teambot"
    (repo / "deploy").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("install.sh", "run.sh", "build.lock"):
        shutil.copy(ROOT / "deploy" / name, repo / "deploy" / name)
    for package in ("core", "bots"):
        shutil.copytree(
            ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (repo / "deploy" / "requirements.lock").write_text(_small_lock())
    return repo


def _fake_python(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{version} /opt/old-python"\n')
    path.chmod(0o755)
    return path


def _run(repo: Path, python: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHON"] = str(python)
    return subprocess.run(
        ["bash", "deploy/run.sh", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_old_python_is_refused_clearly_and_the_venv_rebuilt_after(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    old = _fake_python(tmp_path / "bin" / "python3.10", "3.10.14")

    refused = _run(repo, old, "--version")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "teambot: teambot needs Python 3.11 or newer (found 3.10.14); set PYTHON to a newer "
        "interpreter, e.g. PYTHON=python3.12"
    )
    assert "pip" not in refused.stderr and refused.stdout == ""
    assert not (repo / ".venv").exists()  # nothing half-made is left to trip the next run

    # a .venv left by that Python (as the old run.sh left it) is rebuilt with the right one
    stale = repo / ".venv"
    (stale / "bin").mkdir(parents=True)
    (stale / "pyvenv.cfg").write_text("version = 3.10.14\n")
    _fake_python(stale / "bin" / "python", "3.10.14")
    python = shutil.which("python3.11") or sys.executable
    rebuilt = _run(repo, python, "--version")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("teambot 0.1.0 (Python 3.")
    assert "recreating" in rebuilt.stderr and "made with Python 3.10.14" in rebuilt.stderr
    assert "setting up" in rebuilt.stderr and "first run, about 15 s" in rebuilt.stderr

    # teambot is installed from a wheel; the build backend stayed outside .venv
    site = next((repo / ".venv" / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "teambot" in installed
    build_tools = {"hatchling", "editables", "pathspec", "pluggy", "trove_classifiers"}
    assert installed & build_tools == set()

    # nothing to do the second time
    again = _run(repo, python, "--version")
    assert again.returncode == 0 and again.stderr == ""

    # a changed lock file rebuilds it from scratch
    lock = repo / "deploy" / "requirements.lock"
    lock.write_text(lock.read_text() + "# changed\n")
    changed = _run(repo, python, "--version")
    assert changed.returncode == 0, changed.stderr
    assert "requirements.lock or pyproject.toml changed" in changed.stderr
