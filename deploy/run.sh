#!/usr/bin/env bash
# Set up .venv from the locked requirements (once, and again when they change) and run
# teambot. Reads .env from the current directory.
#   bash deploy/run.sh console | doctor | slack [--http --port N] | discord [--sync]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh .venv deploy/requirements.lock --editable
exec .venv/bin/teambot "${@:-console}"
