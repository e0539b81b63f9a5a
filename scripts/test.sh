#!/usr/bin/env bash
# Set up and run the whole suite: lint, unit tests, then integration tests against the real Serve app.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export RAY_AUTH_MODE=disabled
ruff check .
ruff format --check .
python -m pytest -q -p no:cacheprovider --durations=30 "$@"
