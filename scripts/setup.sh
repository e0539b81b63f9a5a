#!/usr/bin/env bash
# Set up .venv on a fresh machine: torch first (so pip never swaps in another build), then the
# project with its dev extra, pinned by requirements/constraints.txt. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp=.venv/.imagegen-setup
want="$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

torch_version="$(grep '^torch==' requirements/constraints.txt | cut -d= -f3)"
if ! python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$torch_version' else 1)" 2>/dev/null; then
  # On a machine with a local CPU wheel pip finds it; elsewhere this is PyPI's build. Set
  # TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for a CPU-only build on a CUDA-less box.
  python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$torch_version"
fi
python -m pip install -q -c requirements/constraints.txt -e ".[dev,bench]"
echo "$want" > "$stamp"
