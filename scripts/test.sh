#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs pytest (Azurite and the BC simulator
# are started by the tests themselves). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
