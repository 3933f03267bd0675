#!/usr/bin/env bash
# Installs what is missing for local runs: a .venv with requirements-dev.txt, Azurite from
# package-lock.json, and headless Chromium for the browser tests (Debian's chromium and
# chromium-driver). Re-runs are cheap: each step is skipped while its lock file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "ERROR: $*" >&2; exit 1; }
as_root() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }

# Python 3.11: the Functions runtime the app is deployed on (infra/app/api.bicep).
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "Python 3.11 is needed and '$PYTHON' is not on PATH: install python3.11 (Debian 12: apt-get install python3 python3-venv), or set PYTHON=/path/to/python3.11"
  version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$version" = "3.11" ] || die "Python 3.11 is needed (the Functions runtime the app runs on); $PYTHON is $version. Set PYTHON=/path/to/python3.11"
  if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if as_root; then
      echo "==> installing python3-venv (apt-get)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || die "$PYTHON cannot create a virtual environment: install python3-venv (Debian/Ubuntu: sudo apt-get install -y python3-venv; or python3.11-venv)"
  fi
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

# Node.js: Azurite 3.37 asks for Node 22 or newer (its package.json "engines"). When the node on
# PATH is older, a Node 22 binary from the npm registry (the node-linux-<arch> package, which ships
# it) goes into .tools/node; scripts/test.sh, scripts/demo.sh and devtools/azurite.py use it first.
NODE_VERSION=22.23.5
command -v npm >/dev/null 2>&1 || die "npm is needed to install Azurite: install Node.js 22 with npm (https://nodejs.org, or your distribution's nodejs + npm)"
node_needed=$(awk '/"node_modules\/azurite": \{/{f=1} f && /"node": *">=/{match($0, />=[0-9]+/); print substr($0, RSTART+2, RLENGTH-2); exit}' package-lock.json)
node_needed=${node_needed:-22}
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
case "$(uname -m)" in x86_64) node_arch=x64 ;; aarch64|arm64) node_arch=arm64 ;; *) node_arch=$(uname -m) ;; esac
local_node=.tools/node/node_modules/node-linux-$node_arch/bin/node
if [ -x "$local_node" ] && [ "$(node_major "$local_node")" -ge "$node_needed" ]; then
  :
elif command -v node >/dev/null 2>&1 && [ "$(node_major node)" -ge "$node_needed" ]; then
  :
else
  echo "==> node on PATH is $(node --version 2>/dev/null || echo missing); Azurite needs Node $node_needed: installing node-linux-$node_arch@$NODE_VERSION into .tools/node"
  npm install --prefix .tools/node --no-save --no-audit --no-fund --loglevel=error "node-linux-$node_arch@$NODE_VERSION" \
    || die "could not install Node $node_needed; install Node.js $node_needed or newer yourself (https://nodejs.org) and re-run"
  [ "$(node_major "$local_node")" -ge "$node_needed" ] || die "the Node installed in .tools/node does not run here; install Node.js $node_needed or newer yourself and re-run"
fi
[ -x "$local_node" ] && export PATH="$PWD/${local_node%/node}:$PATH"

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
