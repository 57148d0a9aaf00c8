#!/usr/bin/env bash
# The whole test suite: lint + format check + import layering + types + pytest (starts its own ganache and sandbox on free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VENV="${OCEAN_VENV:-$(pwd)/.venv}"
export PATH="$VENV/bin:$PATH"
echo "== ruff check"; ruff check .
echo "== ruff format --check"; ruff format --check .
echo "== lint-imports (layering: docs/architecture.md)"; lint-imports
echo "== mypy"; mypy
echo "== pytest"
exec pytest "$@"
