#!/usr/bin/env bash
# The demo: installs what is missing, then runs the service locally against Azurite (in memory)
# and the BC simulator's demo company: test connection, full sync, re-sync, delta sync, logs,
# posting and reconcile with completeness, a line edit by notification, delegated sign-in.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m devtools.demo "$@"
