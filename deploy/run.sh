#!/usr/bin/env bash
# Set up .venv from the locked requirements (once, and again when they change) and run
# teambot. Reads .env from the current directory.
#   bash deploy/run.sh console | doctor | slack [--http --port N] | discord [--sync]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.teambot-run
if [ ! -f "$stamp" ] || [ deploy/requirements.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  bash deploy/install.sh .venv deploy/requirements.lock --editable
  touch "$stamp"
fi
exec .venv/bin/teambot "${@:-console}"
