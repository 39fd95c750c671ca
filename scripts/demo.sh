#!/usr/bin/env bash
# The demo: installs what it needs, starts a local Orthanc on loopback, sends every photo in
# sample_data/ through the gateway and prints where each one is in the PACS. --keep leaves
# Orthanc running for a look in the browser (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m gateway.demo "$@"
