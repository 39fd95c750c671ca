#!/usr/bin/env bash
# The test command: installs what it needs, then runs the whole suite against a real Orthanc.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"
