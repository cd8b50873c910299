"""deploy/ stays in step with the code and with itself: the image installs the way CI
does and carries no build tooling; image, compose and Kubernetes agree on the health
port, probes and commands, and publish Slack's events port but never the health port;
the kustomizations render and validate; the dashboard and alerts use metrics that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core import metrics
from core.settings import Settings
from tests.k8s_render import render, render_builtin, render_kubectl

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SETTINGS = {name.upper() for name in Settings.model_fields}
KUSTOMIZATIONS = [
    DEPLOY / "k8s",
    DEPLOY / "k8s-overlays" / "slack-http",
    DEPLOY / "k8s-overlays" / "discord-sharded",
]
HEALTH_PORT = 8080
EVENTS_PORT = 3000  # Slack HTTP mode's public port: /slack/events alone
COMMANDS = {
    "slack": ["slack", "--port", "8080"],
    "slack-http": ["slack", "--http", "--port", "3000"],
    "discord": ["discord", "--port", "8080"],
}
BUILD_TOOLING = {"hatchling", "editables", "pathspec", "pluggy", "trove-classifiers"}


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def _instruction(name: str) -> str:
    found = re.findall(rf"^{name} ((?:[^\n]*\\\n)*[^\n]*)$", _dockerfile(), re.MULTILINE)
    assert found, name
    return str(found[-1])


def _locked(path: Path) -> set[str]:
    return set(re.findall(r"^([a-z0-9][a-z0-9._-]*)==", path.read_text(), re.MULTILINE))


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _deployments(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "Deployment"]


# --- image and install -----------------------------------------------------------------------


def test_image_installs_with_the_script_ci_uses() -> None:
    dockerfile = _dockerfile()
    assert "bash deploy/install.sh /opt/teambot deploy/requirements.lock" in dockerfile
    assert "COPY deploy/install.sh deploy/requirements.lock deploy/build.lock deploy/" in dockerfile
    assert "USER 10001" in dockerfile
    assert (
        "bash deploy/install.sh .venv deploy/requirements-dev.lock --editable"
        in (ROOT / "tests" / "run.sh").read_text()
    )
    assert "bash tests/run.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_runtime_lock_carries_no_build_tooling() -> None:
    runtime = _locked(DEPLOY / "requirements.lock")
    assert runtime & BUILD_TOOLING == set()
    assert {"hatchling", "editables"} <= _locked(DEPLOY / "build.lock")
    assert {"prompt-toolkit", "rich"} <= runtime
    # deploy/build.in is what pyproject.toml's [build-system] asks for
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build_in = [
        line.strip()
        for line in (DEPLOY / "build.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(pyproject["build-system"]["requires"]) <= set(build_in)


def test_the_python_image_is_a_pinned_current_patch_release() -> None:
    match = re.search(
        r"^ARG PYTHON_IMAGE=python:(\d+)\.(\d+)\.(\d+)-slim-(\w+)$", _dockerfile(), re.M
    )
    assert match, "the base image is one ARG with a full patch version"
    minor, patch = int(match[2]), int(match[3])
    assert (minor, patch) >= (11, 17)
    assert re.findall(r"^FROM (\S+)", _dockerfile(), re.M) == ["${PYTHON_IMAGE}"] * 2
    readme = (ROOT / "README.md").read_text()
    assert "Updating the Python image" in readme and "PYTHON_IMAGE" in readme


# --- one health port, one command per mode ---------------------------------------------------


def test_image_compose_and_kubernetes_agree_on_port_probes_and_commands() -> None:
    # the image
    assert _instruction("EXPOSE").split() == [str(EVENTS_PORT), str(HEALTH_PORT)]
    assert f"HEALTH_PORT={HEALTH_PORT}" in _instruction("ENV")
    probe = _instruction("HEALTHCHECK")
    assert "/healthz" in probe and f"or '{HEALTH_PORT}'" in probe  # empty HEALTH_PORT is fine
    assert json.loads(_instruction("CMD")) == COMMANDS["slack"]
    assert json.loads(_instruction("ENTRYPOINT")) == ["teambot"]

    # compose: every bot on the health port, whatever ../.env says; only Slack's events
    # port is published (health and metrics stay inside)
    services = _compose()["services"]
    bots = {name: s for name, s in services.items() if name != "redis"}
    assert set(bots) == set(COMMANDS)
    for name, service in bots.items():
        assert service["command"] == COMMANDS[name], name
        assert service["environment"]["HEALTH_PORT"] == str(HEALTH_PORT)
        assert "healthcheck" not in service  # the image's probe
        wanted = [f"{EVENTS_PORT}:{EVENTS_PORT}"] if name == "slack-http" else []
        assert service.get("ports", []) == wanted, name

    # Kubernetes, base and overlays
    for directory in KUSTOMIZATIONS:
        for deployment in _deployments(render(directory)):
            pod = deployment["spec"]["template"]
            (container,) = pod["spec"]["containers"]
            mode = container["args"][0] + ("-http" if "--http" in container["args"] else "")
            assert container["args"] == COMMANDS[mode], deployment["metadata"]["name"]
            ports = [{"name": "health", "containerPort": HEALTH_PORT}]
            if mode == "slack-http":
                ports.append({"name": "http", "containerPort": EVENTS_PORT})
            assert container["ports"] == ports
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["HEALTH_PORT"] == str(HEALTH_PORT)
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
            assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(HEALTH_PORT)
            assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
        for service in [d for d in render(directory) if d["kind"] == "Service"]:
            for port in service["spec"]["ports"]:  # never the health port (/metrics)
                assert port["targetPort"] not in ("health", HEALTH_PORT), directory


def test_compose_starts_only_the_platforms_asked_for() -> None:
    services = _compose()["services"]
    assert "profiles" not in services["redis"]
    for name, service in services.items():
        if name != "redis":
            assert service["profiles"] == [name]
    # README's five Slack steps set up Socket Mode: the `slack` profile runs exactly that
    assert "--http" not in services["slack"]["command"]
    readme = (ROOT / "README.md").read_text()
    assert "--profile slack up" in readme and "--profile slack-http" in readme


# --- Kubernetes ------------------------------------------------------------------------------


def test_the_kustomizations_render_and_validate() -> None:
    for directory in KUSTOMIZATIONS:
        docs = render(directory)
        assert docs, directory
        for doc in docs:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_the_builtin_renderer_matches_kubectl() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed; the built-in renderer is used alone")

    def shape(docs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return sorted(
            (
                d["kind"],
                d["metadata"]["name"],
                json.dumps(d.get("spec", d.get("data")), sort_keys=True),
            )
            for d in docs
        )

    for directory in KUSTOMIZATIONS:
        assert shape(render_builtin(directory)) == shape(render_kubectl(directory) or []), directory


def test_the_base_holds_no_secret_no_budget_and_one_discord() -> None:
    docs = render(DEPLOY / "k8s")
    assert [d for d in docs if d["kind"] == "Secret"] == []
    assert not list((DEPLOY / "k8s").glob("*secret*"))
    secret = yaml.safe_load((DEPLOY / "k8s-secret.example.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "teambot"
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert "DAILY_BUDGET_USD" not in config["data"]
    names = sorted(d["metadata"]["name"] for d in _deployments(docs))
    assert names == ["teambot-discord", "teambot-slack"]
    for deployment in _deployments(docs):
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][-1] == {
            "secretRef": {"name": "teambot"}
        }


def test_the_image_is_named_once_per_kustomization_and_everywhere_the_same() -> None:
    def image_of(directory: Path) -> str:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        (image,) = spec["images"]
        assert image["name"] == "teambot"
        return f"{image['newName']}:{image['newTag']}"

    wanted = image_of(DEPLOY / "k8s")
    assert image_of(DEPLOY / "k8s-overlays" / "discord-sharded") == wanted
    for directory in KUSTOMIZATIONS:
        for deployment in _deployments(render(directory)):
            assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == wanted


def test_slack_http_overlay_has_replicas_a_service_and_tls() -> None:
    docs = render(DEPLOY / "k8s-overlays" / "slack-http")
    (slack,) = [d for d in _deployments(docs) if d["metadata"]["name"] == "teambot-slack"]
    assert slack["spec"]["replicas"] == 2
    (service,) = [d for d in docs if d["kind"] == "Service"]
    # the events port only: the health port (probes, /metrics) is not exposed
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    tls_hosts = {h for entry in ingress["spec"]["tls"] for h in entry["hosts"]}
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] in tls_hosts
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/slack/events"
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert [d["kind"] for d in docs].count("PodDisruptionBudget") == 1


def test_discord_sharded_overlay_splits_the_shards() -> None:
    docs = render(DEPLOY / "k8s-overlays" / "discord-sharded")
    groups = [d for d in _deployments(docs) if "discord" in d["metadata"]["name"]]
    assert "teambot-discord" not in {d["metadata"]["name"] for d in groups}
    counts, ids = set(), []
    for deployment in groups:
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        env = {
            e["name"]: e["value"]
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        counts.add(env["DISCORD_SHARD_COUNT"])
        ids += [int(i) for i in env["DISCORD_SHARD_IDS"].split(",")]
    (count,) = counts
    assert sorted(ids) == list(range(int(count)))  # every shard once


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
    files = [DEPLOY / "compose.yaml", DEPLOY / "k8s-secret.example.yaml"]
    files += sorted(DEPLOY.glob("k8s*/**/*.yaml"))
    found: set[str] = set()
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            found |= _env_names(document)
    assert found, "no environment found in deploy/"
    unknown = {n for n in found if re.fullmatch(r"[A-Z0-9_]+", n)} - SETTINGS
    assert unknown == set()


def test_no_stale_readme_copies_in_deploy() -> None:
    assert list(DEPLOY.rglob("README*")) == []


# --- dashboard and alerts --------------------------------------------------------------------


def _exposed_metrics() -> set[str]:
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(teambot_[a-z_]+)\b", expr))


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "teambot.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _alert_rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    return [rule for group in spec["groups"] for rule in group["rules"]]


def test_the_dashboard_is_well_formed_and_uses_real_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "teambot.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    exprs = _dashboard_exprs()
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used - _exposed_metrics() == set()
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for subject in ("answers", "latency", "errors", "fallbacks", "cost per day"):
        assert subject in titles


def test_the_alerts_cover_model_budget_and_replies_with_real_metrics() -> None:
    rules = _alert_rules()
    names = {r["alert"] for r in rules}
    assert {"TeambotModelFailing", "TeambotBudgetNearlyUsed", "TeambotRepliesFailing"} <= names
    for rule in rules:
        assert _metric_names(rule["expr"]) - _exposed_metrics() == set(), rule["alert"]
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]


def test_promtool_checks_the_rules_their_unit_tests_and_the_dashboard_queries(
    tmp_path: Path,
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs it (Debian package prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus); CI has it")
    folder = DEPLOY / "prometheus"
    subprocess.run([promtool, "check", "rules", str(folder / "alerts.yaml")], check=True)
    subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], check=True, cwd=folder)
    # the dashboard's queries, as recording rules, so promtool parses each one
    queries = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(_dashboard_exprs())
    ]
    rules = tmp_path / "dashboard.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}))
    subprocess.run([promtool, "check", "rules", str(rules)], check=True)
