#!/usr/bin/env bash
# Create .venv (if missing) and install lrpc with the extras given as arguments, e.g. `setup.sh demo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
extras=$(IFS=,; echo "$*")
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
