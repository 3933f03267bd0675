#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs pytest (Azurite and the BC simulator
# are started by the tests themselves). Extra arguments go to pytest (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# Bytecode is cached (__pycache__, git-ignored) even where PYTHONDONTWRITEBYTECODE is set: every
# worker and every process a test starts would otherwise compile the project and rewrite the
# tests' assertions again (collection: 5.7 s -> 2.8 s per process).
unset PYTHONDONTWRITEBYTECODE
# Three workers (pytest-xdist), each with its own Azurite and BC simulator, handed tests one by one
# (the browser tests stay together: one Chromium). TEST_WORKERS=0 runs in this process; an -n given
# as an argument wins.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-3}" --dist loadgroup "$@"
