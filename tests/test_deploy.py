"""deploy/ stays in step with the code: the image installs the way CI does, and every
variable the manifests set is a real setting."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SETTINGS = {name.upper() for name in Settings.model_fields}


def test_image_installs_with_the_script_ci_uses() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "bash deploy/install.sh /opt/teambot deploy/requirements.lock" in dockerfile
    assert "USER 10001" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert (
        "bash deploy/install.sh .venv deploy/requirements-dev.lock"
        in (ROOT / "tests" / "run.sh").read_text()
    )
    assert "bash tests/run.sh" in (ROOT / ".ci" / "run").read_text()


def _env_names(document: object) -> set[str]:
    names: set[str] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "env" and isinstance(value, list):
                names |= {item["name"] for item in value}
            elif key in ("environment", "stringData", "data") and isinstance(value, dict):
                names |= set(value)
            else:
                names |= _env_names(value)
    elif isinstance(document, list):
        for item in document:
            names |= _env_names(item)
    return names


def test_manifests_only_set_real_settings() -> None:
    files = [DEPLOY / "compose.yaml", *sorted((DEPLOY / "k8s").glob("*.yaml"))]
    found: set[str] = set()
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            found |= _env_names(document)
    assert found, "no environment found in deploy/"
    unknown = {n for n in found if re.fullmatch(r"[A-Z0-9_]+", n)} - SETTINGS
    assert unknown == set()
