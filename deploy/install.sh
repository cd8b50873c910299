#!/usr/bin/env bash
# The one install procedure for teambot, used by deploy/run.sh, tests/run.sh (and so CI)
# and deploy/Dockerfile:
#   1. refuse a Python older than 3.11, before anything is created;
#   2. (re)create VENV when it is missing, broken, made by another Python, or was set up
#      from an older LOCKFILE or pyproject.toml;
#   3. install LOCKFILE's pinned, hash-checked requirements (nothing is resolved);
#   4. build teambot's wheel with the build backend pinned in deploy/build.lock, kept in a
#      cache folder outside VENV (so no build tool lands in VENV or the image), and
#      install it (--editable: a wheel that points at this source tree).
# Does nothing when VENV is already set up from the same files.
#   [PYTHON=python3.12] bash deploy/install.sh VENV LOCKFILE [--editable]
set -euo pipefail
venv="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
lock="$2"
mode="${3:-}"
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
say() { printf 'teambot: %s\n' "$*" >&2; }

# "3.11.9 /usr/local": the version and the installation it belongs to (a venv's Python
# reports the installation it was made from), so a venv made by another Python is noticed.
identify='import sys; print("%d.%d.%d" % sys.version_info[:3], sys.base_prefix)'
if ! want="$("$python" -c "$identify" 2>/dev/null)" || [ -z "$want" ]; then
  say "cannot run '$python'; set PYTHON to a Python 3.11 or newer interpreter, e.g. PYTHON=python3.11"
  exit 1
fi
found="${want%% *}"
IFS=. read -r major minor _ <<<"$found"
if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || ((major < 3 || (major == 3 && minor < 11))); then
  say "teambot needs Python 3.11 or newer (found $found); set PYTHON to a newer interpreter, e.g. PYTHON=python3.12"
  exit 1
fi

remove_venv() {
  # Only ever delete what is recognisably a virtual environment.
  if [ -f "$venv/pyvenv.cfg" ] || [ -z "$(ls -A "$venv" 2>/dev/null)" ]; then
    rm -rf "$venv"
  else
    say "$venv exists but is not a virtual environment; move it away and run this again"
    exit 1
  fi
}

if [ -e "$venv" ]; then
  have="$("$venv/bin/python" -c "$identify" 2>/dev/null || true)"
  if [ -z "$have" ]; then
    say "recreating $venv: it is incomplete or broken"
    remove_venv
  elif [ "$have" != "$want" ]; then
    say "recreating $venv: it was made with Python ${have%% *}, now $found ($python)"
    remove_venv
  fi
fi

digest="$("$python" -c '
import hashlib, sys
h = hashlib.sha256()
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        h.update(f.read())
print(h.hexdigest())' "$lock" "$root/pyproject.toml" "$root/deploy/build.lock")"
stamp="$venv/.teambot-$(basename "$lock")"
if [ -f "$stamp" ]; then
  if [ "$(cat "$stamp")" = "$digest" ]; then
    exit 0
  fi
  say "recreating $venv: $(basename "$lock") or pyproject.toml changed since it was set up"
  remove_venv
fi
if [ ! -e "$venv" ]; then
  say "setting up $venv (first run, about 15 s)…"
  "$python" -m venv "$venv"
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install --require-hashes --no-deps -r "$lock"

# The build backend, pinned and hash-checked, in a cache folder keyed by its lock file.
build_digest="$("$python" -c '
import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])' "$root/deploy/build.lock")"
cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/teambot"
backend="$cache/build-$build_digest"
if [ ! -f "$backend/.complete" ]; then
  mkdir -p "$cache"
  partial="$(mktemp -d "$cache/build-partial.XXXXXX")"
  "${pip[@]}" install --require-hashes --no-deps --target "$partial" -r "$root/deploy/build.lock"
  touch "$partial/.complete"
  rm -rf "$backend"
  mv "$partial" "$backend" 2>/dev/null || rm -rf "$partial"
fi

dist="$(mktemp -d)"
trap 'rm -rf "$dist"' EXIT
hook="build_wheel"
[ "$mode" = "--editable" ] && hook="build_editable"
(cd "$root" && PYTHONPATH="$backend" "$venv/bin/python" -c '
import sys
import hatchling.build as backend
getattr(backend, sys.argv[1])(sys.argv[2])' "$hook" "$dist")
"${pip[@]}" install --no-deps --force-reinstall "$dist"/*.whl
printf '%s\n' "$digest" >"$stamp"
