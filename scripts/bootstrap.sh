#!/usr/bin/env bash
# Installs what is missing for local runs: a .venv with requirements-dev.txt and Azurite from
# package-lock.json. Re-runs are cheap: each step is skipped while its lock file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
py_stamp=.venv/.requirements.sha256
py_hash=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$py_stamp" 2>/dev/null)" != "$py_hash" ]; then
  echo "==> installing Python packages (requirements-dev.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$py_hash" > "$py_stamp"
fi

node_stamp=node_modules/.package-lock.sha256
node_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/azurite/dist/src/table/main.js ] || [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_hash" ]; then
  echo "==> installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$node_hash" > "$node_stamp"
fi
