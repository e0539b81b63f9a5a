"""Checks shared by the tests of the serve configs, the KubeRay manifest and the Dockerfile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serve_app.config import AppArgs
from serve_app.presets import load_preset

REPO = Path(__file__).resolve().parents[2]


def check_serve_config(config: dict[str, Any]) -> None:
    """What any serve config of this app must satisfy, however it is deployed (`serve deploy`, a
    KubeRay RayService): Ray's own schema; our args and their preset; the deployments it configures
    are exactly those of the app graph those args build (Serve refuses settings for a deployment the
    graph lacks, and resources live only in the config); batches within concurrency; a Generator
    that can scale (or, in the one-GPU profile, exactly one that fits)."""
    from ray.serve._private.build_app import build_app as build_graph
    from ray.serve.schema import ServeDeploySchema

    from serve_app.builder import build_app

    schema = ServeDeploySchema.model_validate(config)
    assert schema.applications, "no applications"
    for app, raw in zip(schema.applications, config["applications"], strict=True):
        assert app.import_path == "serve_app.builder:build_app"
        args = AppArgs.model_validate(app.args)
        load_preset(args.preset)
        graph = build_graph(build_app(args), name=app.name)
        configured = {d.name for d in app.deployments}
        assert configured == {d.name for d in graph.deployments}, f"{app.name}: deployments differ from the graph"
        for deployment in raw["deployments"]:
            batch = deployment.get("user_config", {}).get("max_batch_size")
            if batch:
                assert deployment["max_ongoing_requests"] >= batch, f"{deployment['name']} would cap its batches"
        generator = next(d for d in raw["deployments"] if d["name"] == "Generator")
        if "autoscaling_config" in generator:
            scaling = generator["autoscaling_config"]
            assert scaling["min_replicas"] <= scaling.get("initial_replicas", scaling["min_replicas"])
            assert scaling.get("initial_replicas", scaling["min_replicas"]) <= scaling["max_replicas"]
        else:
            assert generator["num_replicas"] == 1 and generator["ray_actor_options"].get("num_gpus", 0) < 1


def pinned(package: str) -> str:
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{package} is not pinned in requirements/constraints.txt")
