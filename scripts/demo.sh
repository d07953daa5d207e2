#!/usr/bin/env bash
# Set up on a fresh machine, compile the bundled digits CNN, explain test digits, write heatmap PNGs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
.venv/bin/python scripts/demo.py "$@"
