#!/usr/bin/env bash
# Create .venv with every pinned dependency (idempotent). Needs Python >= 3.10 and, for the sandbox, Node/npm.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${OCEAN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: no python3 found" >&2; exit 1; }
stamp_src=$(cat pyproject.toml sandbox/pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)
if [ -f "$VENV/.bootstrap-stamp" ] && [ "$(cat "$VENV/.bootstrap-stamp")" = "$stamp_src" ]; then
  exit 0
fi
echo "bootstrap: creating $VENV with $($PY --version)" >&2
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3" >&2
# the provider and the sandbox (its own distribution in sandbox/), both editable
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c requirements/constraints.txt -e ".[tests]" -e "./sandbox" >&2
echo "$stamp_src" > "$VENV/.bootstrap-stamp"
