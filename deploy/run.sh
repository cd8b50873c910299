#!/usr/bin/env bash
# Set up .venv from the locked requirements (once, and again when they or the Python
# change) and run teambot; with no command, the console. Settings come from the
# environment and from .env in this repository (TEAMBOT_ENV_FILE=path picks another file).
#   [PYTHON=python3.12] bash deploy/run.sh [console | doctor | slack [--http] | discord | --help]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh .venv deploy/requirements.lock --editable
exec .venv/bin/teambot "$@"
