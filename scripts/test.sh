#!/usr/bin/env bash
# Install (scripts/setup.sh), then lint, type-check and run the test suite.
# Extra arguments go to pytest; --require-shared turns "../shared absent" into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
