#!/usr/bin/env bash
# Set up (if needed) and run the test suite (unit tests, CLI errors, an end-to-end run with
# real Ray, the tiny model and MLflow). Extra arguments go to pytest.
#   bash scripts/test.sh
#   bash scripts/test.sh -m "not e2e"      # the fast tests only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
