"""Render a kustomization of deploy/ into plain Kubernetes resources.

With `kubectl` on PATH this is `kubectl kustomize DIR`. Without it, a small renderer for
exactly the features deploy/ uses (resources, inline patches: JSON 6902 with a target or
`$patch: delete`, images) does the same offline; tests compare the two where kubectl is
present, and fail on any feature the small one does not know.

    .venv/bin/python -m tests.k8s_render deploy/k8s [--builtin] > rendered.yaml
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["render", "render_builtin", "render_kubectl"]

Doc = dict[str, Any]
KNOWN = {"apiVersion", "kind", "resources", "patches", "images"}


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json_patch(doc: Doc, ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] in ("replace", "add"):
            if isinstance(node, list) and op["op"] == "add":
                node.insert(len(node) if key == "-" else key, op["value"])
            else:
                node[key] = op["value"]
        elif op["op"] == "remove":
            del node[key]
        else:
            raise NotImplementedError(f"JSON patch op {op['op']}")


def _matches(doc: Doc, target: dict[str, str]) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise NotImplementedError(f"patch target fields {unknown}")
    return doc.get("kind") == target.get("kind", doc.get("kind")) and doc["metadata"][
        "name"
    ] == target.get("name", doc["metadata"]["name"])


def render_builtin(directory: Path) -> list[Doc]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN
    if unknown:
        raise NotImplementedError(f"kustomization fields {unknown}")
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            docs += render_builtin(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for item in spec.get("patches", []):
        if set(item) - {"patch", "target"}:
            raise NotImplementedError(f"patch fields {set(item)}")
        body = yaml.safe_load(item["patch"])
        if isinstance(body, list):
            hits = [d for d in docs if _matches(d, item["target"])]
            assert hits, f"patch target {item['target']} matches nothing"
            for doc in hits:
                _json_patch(doc, body)
        elif body.get("$patch") == "delete":
            before = len(docs)
            docs = [
                d
                for d in docs
                if not (
                    d["kind"] == body["kind"] and d["metadata"]["name"] == body["metadata"]["name"]
                )
            ]
            assert len(docs) == before - 1, f"delete patch matches nothing: {body}"
        else:
            raise NotImplementedError("strategic merge patches other than $patch: delete")
    for image in spec.get("images", []):
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                name = container["image"].split(":")[0]
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return copy.deepcopy(docs)


def render_kubectl(directory: Path) -> list[Doc] | None:
    """`kubectl kustomize DIR`, or None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render(directory: Path) -> list[Doc]:
    rendered = render_kubectl(directory)
    return rendered if rendered is not None else render_builtin(directory)


def main(argv: list[str]) -> int:
    directory = Path(argv[0])
    docs = render_builtin(directory) if "--builtin" in argv else render(directory)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
