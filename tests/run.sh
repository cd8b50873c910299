#!/usr/bin/env bash
# The test command: sets up .venv from the locked dev requirements (once, and again when
# they change), then runs the suite. The suite uses Redis at $REDIS_URL
# (default redis://127.0.0.1:6379/0) and starts its own redis-server when none answers.
#   bash tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh .venv deploy/requirements-dev.lock --editable
exec .venv/bin/python -m pytest -q "$@"
