#!/usr/bin/env bash
# Set up and run the whole suite: lint, unit tests, then integration tests against the real Serve app.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export RAY_AUTH_MODE=disabled
# shellcheck disable=SC1091
. scripts/serve_env.sh  # the request-path settings run.sh serves with
# Tests only: an ingress replica being stopped drains 1 s, not direct ingress's 30 s (which exists
# for load balancers in front of a cluster), so each Serve shutdown in the suite is not 30 s longer.
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="${RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S:-1}"
ruff check .
ruff format --check .
# The app's bytecode once: with PYTHONDONTWRITEBYTECODE set every Ray worker would compile it again.
python -m compileall -q serve_app deployments
python -m pytest -q -p no:cacheprovider --durations=30 "$@"
