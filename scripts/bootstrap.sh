#!/usr/bin/env bash
# Installs what is missing for local runs: a .venv with requirements-dev.txt, Azurite from
# package-lock.json, and headless Chromium for the browser tests (Debian's chromium and
# chromium-driver). Re-runs are cheap: each step is skipped while its lock file is unchanged.
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

# The monitoring page's tests drive a real browser and never skip, so a missing one is installed
# here (as root) or named exactly (otherwise); Playwright/Selenium downloads are not used.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Chromium for the browser tests (apt-get install chromium chromium-driver)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "ERROR: the browser tests need Chromium and its WebDriver. Install them, then re-run:" >&2
    echo "  sudo apt-get install -y chromium chromium-driver    # Debian/Ubuntu" >&2
    echo "(any Chromium with a matching chromedriver on PATH works)" >&2
    exit 1
  fi
fi
