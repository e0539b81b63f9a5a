"""Presets and app args validate; sd15/sdxl are exercised here through config only (no weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from serve_app.config import AppArgs
from serve_app.errors import ConfigurationError
from serve_app.presets import Preset, load_preset
from serve_app.requests import GenerateRequest
from serve_app.storage.config import LocalStorageConfig, S3StorageConfig
from tests.support.configs import check_serve_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["tiny", "sd15", "sdxl"])
def test_presets_validate_and_defaults_pass_their_own_limits(name: str) -> None:
    preset = load_preset(name)
    assert preset.name == name
    assert preset.generator.model_id and preset.captioner.model_id and preset.classifier.model_id
    resolved = GenerateRequest(prompt="a desk").resolve(preset, preset.limits, has_image=True)
    assert resolved.height == preset.defaults.height


def test_real_presets_name_real_model_ids() -> None:
    sd15, sdxl = load_preset("sd15"), load_preset("sdxl")
    assert sd15.generator.family == "sd" and sd15.defaults.height == 512
    assert sdxl.generator.family == "sdxl" and (sdxl.defaults.height, sdxl.defaults.width) == (1024, 1024)
    assert sdxl.defaults.num_inference_steps == 50 and sdxl.defaults.guidance_scale == 7.5


def test_unknown_preset_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        load_preset("nope")


def test_preset_rejects_duplicate_loras_and_huge_limits() -> None:
    data = yaml.safe_load((REPO / "configs/presets/tiny.yaml").read_text())
    data["loras"].append(dict(data["loras"][0]))
    with pytest.raises(ValidationError):
        Preset.model_validate(data)
    data = yaml.safe_load((REPO / "configs/presets/tiny.yaml").read_text())
    data["limits"]["max_side"] = 8192
    with pytest.raises(ValidationError):
        Preset.model_validate(data)


@pytest.mark.parametrize(
    "config_file",
    ["serve_config.yaml", "serve_config.gpu.yaml", "serve_config.multigpu.yaml", "serve_config.cluster.yaml"],
)
def test_serve_configs_parse_and_batch_within_concurrency(config_file: str) -> None:
    check_serve_config(yaml.safe_load((REPO / config_file).read_text()))


def test_a_deployment_the_graph_lacks_is_refused() -> None:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["applications"][0]["deployments"].append({"name": "Upscaler", "num_replicas": 1})
    with pytest.raises(AssertionError, match="deployments differ from the graph"):
        check_serve_config(config)


def test_cluster_profile_keeps_no_state_on_a_node() -> None:
    from serve_app.errors import ConfigurationError
    from serve_app.settings import Settings
    from serve_app.tasks import open_database

    config = yaml.safe_load((REPO / "serve_config.cluster.yaml").read_text())
    app = config["applications"][0]
    args = AppArgs.model_validate(app["args"])
    assert args.tasks.store == "postgres" and isinstance(args.storage, S3StorageConfig)
    generator = next(d for d in app["deployments"] if d["name"] == "Generator")
    assert generator["ray_actor_options"]["num_gpus"] >= 1, "the Generator goes on GPU nodes only"
    with pytest.raises(ConfigurationError, match="IMAGEGEN_TASKS_DSN"):
        open_database(args.tasks, Settings(imagegen_tasks_dsn=None))


def test_cpu_profile_fits_two_cores() -> None:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    total = 0.0
    for deployment in config["applications"][0]["deployments"]:
        replicas = deployment.get("num_replicas") or deployment["autoscaling_config"]["max_replicas"]
        total += replicas * deployment["ray_actor_options"]["num_cpus"]
    assert total <= 2.0, f"the CPU profile reserves {total} CPUs at peak"


def _gpus_needed(config: dict[str, Any], *, at_peak: bool) -> int:
    """How many whole GPUs Ray needs to place every replica (first fit, largest share first):
    a fractional share must fit on one GPU, as Ray places it."""
    shares: list[float] = []
    for deployment in config["applications"][0]["deployments"]:
        share = deployment["ray_actor_options"].get("num_gpus", 0)
        scaling = deployment.get("autoscaling_config")
        replicas = deployment.get("num_replicas") or scaling[("max_replicas" if at_peak else "min_replicas")]
        shares += [share] * replicas if share else []
    gpus: list[float] = []
    for share in sorted(shares, reverse=True):
        free = next((i for i, used in enumerate(gpus) if used + share <= 1.0 + 1e-9), None)
        if free is None:
            gpus.append(share)
        else:
            gpus[free] += share
    return len(gpus)


@pytest.mark.parametrize(("config_file", "gpus"), [("serve_config.gpu.yaml", 1), ("serve_config.multigpu.yaml", 8)])
def test_gpu_profiles_place_every_replica_on_their_gpus(config_file: str, gpus: int) -> None:
    """The one-GPU profile used to ask for 1.5 GPUs: on a one-GPU machine the Generator never
    scheduled and the app never became healthy."""
    config = yaml.safe_load((REPO / config_file).read_text())
    assert _gpus_needed(config, at_peak=False) <= gpus
    assert _gpus_needed(config, at_peak=True) == gpus, f"{config_file} should use all of its {gpus} GPU(s) at peak"


def test_the_gpu_count_check_sees_a_profile_that_does_not_fit() -> None:
    config = yaml.safe_load((REPO / "serve_config.gpu.yaml").read_text())
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] == "Generator":
            deployment["ray_actor_options"]["num_gpus"] = 1  # the old profile: 1 + 0.25 + 0.25
    assert _gpus_needed(config, at_peak=False) == 2


def test_app_args_resolve_absolute_paths(tmp_path: Path) -> None:
    args = AppArgs(data_dir=str(tmp_path / "d"), public_base_url="http://h:1").resolved()
    assert Path(args.tasks.db_path or "").is_absolute() and args.tasks.db_path.endswith("tasks.db")
    assert isinstance(args.storage, LocalStorageConfig) and args.storage.public_base_url == "http://h:1"
    s3 = AppArgs.model_validate({"storage": {"kind": "s3", "bucket": "b"}}).resolved()
    assert isinstance(s3.storage, S3StorageConfig) and s3.storage.bucket == "b"
    with pytest.raises(ValidationError):
        AppArgs.model_validate({"storage": {"kind": "ftp"}})
