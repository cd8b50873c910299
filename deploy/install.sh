#!/usr/bin/env bash
# The one install procedure for teambot, used by deploy/run.sh, tests/run.sh (and so CI)
# and deploy/Dockerfile: a virtual environment, the locked, hash-checked requirements,
# then teambot itself without resolving anything else. Skipped when VENV was already set
# up from the same lock file and pyproject.toml.
#   bash deploy/install.sh VENV LOCKFILE [--editable]
set -euo pipefail
venv="$1"
lock="$2"
mode="${3:-}"
root="$(cd "$(dirname "$0")/.." && pwd)"
stamp="$venv/.teambot-$(basename "$lock")"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$stamp" -nt "$lock" ] && [ "$stamp" -nt "$root/pyproject.toml" ]; then
  exit 0
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install --require-hashes --no-deps -r "$lock"
if [ "$mode" = "--editable" ]; then
  "${pip[@]}" install --no-deps --no-build-isolation -e "$root"
else
  "${pip[@]}" install --no-deps --no-build-isolation "$root"
fi
touch "$stamp"
