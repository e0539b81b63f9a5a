#!/usr/bin/env bash
# Set up, build the tiny preset's models once, and serve on http://127.0.0.1:8000 (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"   # Ray 2.60 turns token auth on by default
# shellcheck disable=SC1091
. scripts/serve_env.sh  # HAProxy ingress and Serve's throughput-optimized request path
# One node, HAProxy beside the replicas: no outside load balancer needs direct ingress's 30 s drain
# before a stopping ingress replica closes (Ctrl-C would take 30 s more).
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="${RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S:-2}"
python -m serve_app.models.prebuild --config "${SERVE_CONFIG:-serve_config.yaml}"
exec serve run "${SERVE_CONFIG:-serve_config.yaml}"
