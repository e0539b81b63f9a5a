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
# The app's bytecode once: with PYTHONDONTWRITEBYTECODE set every Ray worker would compile it again.
python -m compileall -q serve_app deployments
python -m pytest -q -p no:cacheprovider --durations=30 "$@"
