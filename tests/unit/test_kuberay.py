"""deploy/kuberay/rayservice.yaml: a RayService whose Serve config is the cluster profile, checked
against Ray's own schema and our app graph, with a CPU head, a GPU worker group sized by the
Generator's autoscaling, and secrets only from a Kubernetes Secret. No Kubernetes here: this is what
can be checked without one (KubeRay's own CRD schema is not vendored: `kubectl apply --dry-run=server`
checks the manifest against it where a cluster is at hand).
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from serve_app.settings import Settings
from tests.support.configs import check_serve_config, pinned

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "kuberay" / "rayservice.yaml"

# Every Settings field is a secret except these knobs and names (the cluster's bucket, region and cloud
# name are in its YAML); a secret added to Settings must be wired here, by the first name it is read by,
# unless what it configures is refused on the cluster profile (Imgur storage: its ledger is node-local).
NOT_SECRET = {
    "IMAGEGEN_TORCH_THREADS",
    "IMAGEGEN_MALLOC_KEEP_MB",
    "S3_BUCKET_NAME",
    "AWS_REGION",
    "CLOUDINARY_CLOUD_NAME",
}
NOT_ON_A_CLUSTER = {"IMGUR_CLIENT_ID"}
SECRET_ENV = (
    {
        str(info.validation_alias.choices[0]) if isinstance(info.validation_alias, AliasChoices) else name.upper()
        for name, info in Settings.model_fields.items()
    }
    - NOT_SECRET
    - NOT_ON_A_CLUSTER
)
SECRET_LOOKING = re.compile(r"SECRET|PASSWORD|TOKEN|DSN|_KEY|CREDENTIAL", re.IGNORECASE)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def serve_config(manifest: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


def deployments(serve_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in serve_config["applications"][0]["deployments"]}


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [container for group in groups for container in group["template"]["spec"]["containers"]]


def ray_container(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]  # KubeRay runs Ray in the first container


def gpus(container: dict[str, Any]) -> dict[str, int]:
    resources = container.get("resources", {})
    return {kind: int(resources.get(kind, {}).get("nvidia.com/gpu", 0)) for kind in ("requests", "limits")}


def test_it_is_an_autoscaled_rayservice(manifest: dict[str, Any]) -> None:
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert manifest["spec"]["upgradeStrategy"]["type"] == "NewCluster"
    assert isinstance(manifest["spec"]["serveConfigV2"], str), "KubeRay takes the Serve config as a YAML string"


def test_embedded_serve_config_passes_rays_schema_and_the_app_graph(serve_config: dict[str, Any]) -> None:
    check_serve_config(serve_config)


def test_embedded_serve_config_is_the_cluster_profile(serve_config: dict[str, Any]) -> None:
    """No documented differences: the RayService runs exactly what `serve deploy serve_config.cluster.yaml`
    runs, so the two cannot drift (deployments, autoscaling, batching, args: all of it)."""
    profile = yaml.safe_load((REPO / "serve_config.cluster.yaml").read_text())
    differing = sorted(key for key in profile.keys() | serve_config.keys() if profile.get(key) != serve_config.get(key))
    if differing == ["applications"]:
        app, embedded = profile["applications"][0], serve_config["applications"][0]
        differing = [
            f"applications[0].{key}"
            for key in sorted(app.keys() | embedded.keys())
            if app.get(key) != embedded.get(key)
        ]
    assert not differing, f"serveConfigV2 differs from serve_config.cluster.yaml in {differing}: paste the file in"


def test_one_ray_version_everywhere(manifest: dict[str, Any]) -> None:
    """The pinned Ray; the image's Ray base is the same one (tests/unit/test_dockerfile.py)."""
    ray = pinned("ray")
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == ray
    images = {container["image"] for container in containers(manifest)}
    assert len(images) == 1, f"every Ray node must run the same image (same Ray, Python, code): {images}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert images.pop().endswith(f"/imagegen-serve:{project['version']}"), "the app image, at the project's version"


def test_the_head_runs_the_cpu_deployments_and_no_gpu(manifest: dict[str, Any], serve_config: dict[str, Any]) -> None:
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert gpus(ray_container(head)) == {"requests": 0, "limits": 0}
    assert head["rayStartParams"].get("num-gpus", "0") == "0"
    cpu_work = sum(
        (d.get("num_replicas") or d["autoscaling_config"]["max_replicas"]) * d["ray_actor_options"]["num_cpus"]
        for d in deployments(serve_config).values()
        if not d["ray_actor_options"].get("num_gpus")
    )
    head_cpus = float(head["rayStartParams"]["num-cpus"])
    assert cpu_work <= head_cpus, f"the CPU deployments need {cpu_work} CPUs, the head offers {head_cpus}"
    assert head_cpus <= float(ray_container(head)["resources"]["requests"]["cpu"]), "Ray promised more CPU than the pod"


def test_the_gpu_group_is_sized_by_the_generators_autoscaling(
    manifest: dict[str, Any], serve_config: dict[str, Any]
) -> None:
    (group,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod_gpus = gpus(ray_container(group))
    assert pod_gpus["requests"] >= 1 and pod_gpus["requests"] == pod_gpus["limits"], "whole GPUs, requested = limit"
    generator = deployments(serve_config)["Generator"]
    options, scaling = generator["ray_actor_options"], generator["autoscaling_config"]
    per_pod = int(pod_gpus["requests"] // options["num_gpus"])
    assert per_pod >= 1, "a GPU pod must hold at least one Generator"
    editor = deployments(serve_config)["Editor"]
    assert editor["ray_actor_options"] == options, "the Editor's pod has the Generator's shape"
    editors = editor["num_replicas"]
    assert group["minReplicas"] == math.ceil(scaling["min_replicas"] / per_pod) + editors
    assert group["maxReplicas"] == math.ceil(scaling["max_replicas"] / per_pod) + editors
    assert group["replicas"] == math.ceil(scaling["initial_replicas"] / per_pod) + editors
    worker_cpus = float(group["rayStartParams"]["num-cpus"])
    assert worker_cpus == per_pod * options["num_cpus"], "a GPU pod's CPUs are its Generators', nothing else fits"
    assert worker_cpus <= float(ray_container(group)["resources"]["requests"]["cpu"])
    gpu_users = {name for name, d in deployments(serve_config).items() if d["ray_actor_options"].get("num_gpus")}
    assert gpu_users == {"Generator", "Editor"}, "only the Generator and the Editor are sized for the GPU group"


def test_secrets_come_from_a_kubernetes_secret_only(manifest: dict[str, Any]) -> None:
    for container in containers(manifest):
        env = {entry["name"]: entry for entry in container.get("env", [])}
        assert SECRET_ENV <= env.keys(), f"{container['name']} lacks {sorted(SECRET_ENV - env.keys())}"
        for name, entry in env.items():
            if name in SECRET_ENV or SECRET_LOOKING.search(name):
                assert "value" not in entry, f"{container['name']}: {name} holds a literal value"
                assert entry["valueFrom"]["secretKeyRef"]["key"] == name, f"{name} comes from another key"
        dsn = env["IMAGEGEN_TASKS_DSN"]["valueFrom"]["secretKeyRef"]
        assert not dsn.get("optional"), "the cluster profile's task store needs its DSN: fail the pod without it"
    text = MANIFEST.read_text()
    for leak in (r"postgres(?:ql)?://[^@\s]*:[^@\s]*@", r"whsec_[A-Za-z0-9+/=]{8,}", r"AKIA[0-9A-Z]{16}"):
        assert not re.search(leak, text), f"something secret-shaped in the manifest: {leak}"


def test_upgrades_drain_runners_after_their_generator_calls(serve_config: dict[str, Any]) -> None:
    """A replaced TaskRunner waits for the tasks pushed to it; those wait on Generator calls, so the
    runner's grace covers the Generator's (docs/cluster.md, upgrades)."""
    by_name = deployments(serve_config)
    runner = by_name["TaskRunner"].get("graceful_shutdown_timeout_s", 20)
    generator = by_name["Generator"].get("graceful_shutdown_timeout_s", 20)
    assert runner > 20 and runner >= generator
