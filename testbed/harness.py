"""Run this app the way `serve run serve_config.yaml` does, or its ingress in-process, for the
benchmarks and the tests (which may import it; it imports nothing of tests/).

For a Serve app: a free port, the serve config with local overrides, a preset copy with another
desk threshold, the deploy itself (serve_start + deploy_apps of the YAML's schema), a readiness
wait, and a synthetic desk photo. In-process (FastAPI's TestClient, no Ray): the ingress's
context over a real SQLite task store and local storage (`in_process_context`), a runner handle
that runs tasks with a real TaskWorker (`WorkerRunner`), and a Generator stand-in that paints
(`PaintingStages`).
"""

from __future__ import annotations

import asyncio
import copy
import io
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from serve_app.api.deps import IngressContext, ReplicaStates, set_context
from serve_app.config import AppArgs
from serve_app.flows.kit import Flow, OnStep
from serve_app.metrics import IngressMetrics
from serve_app.paths import CONFIGS_DIR, REPO_ROOT
from serve_app.presets import load_preset
from serve_app.settings import Settings
from serve_app.stages import GenerationOutput, GenerationSpec
from serve_app.storage.local import LocalImageStore
from serve_app.tasks import SqliteDatabase, TaskStore
from serve_app.tasks.worker import TaskWorker
from testbed.ports import free_port as free_port  # re-exported: tests and benchmarks take it from here


def load_serve_config(path: Path | str | None = None) -> dict[str, Any]:
    """serve_config.yaml (or `path`) as a dict."""
    return yaml.safe_load(Path(path or REPO_ROOT / "serve_config.yaml").read_text(encoding="utf-8"))


def local_app_config(
    port: int,
    data_dir: Path,
    config_path: Path | str | None = None,
    preset: str | None = None,
    fast_shutdown: bool = True,
    model_cache_dir: Path | None = None,
) -> dict[str, Any]:
    """The serve config with HTTP on 127.0.0.1:`port`, a private data_dir, optionally another preset/model cache."""
    config = copy.deepcopy(load_serve_config(config_path))
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    for app in config["applications"]:
        args = app.setdefault("args", {})
        args["data_dir"] = str(data_dir)
        args["public_base_url"] = f"http://127.0.0.1:{port}"
        if preset is not None:
            args["preset"] = preset
        if model_cache_dir is not None:
            args["model_cache_dir"] = str(model_cache_dir)
        if fast_shutdown:
            for deployment in app.get("deployments", []):
                deployment.setdefault("graceful_shutdown_wait_loop_s", 0.1)
                deployment.setdefault("graceful_shutdown_timeout_s", 1)
    return config


def generator_replicas(config: dict[str, Any], initial: int, maximum: int | None = None) -> dict[str, Any]:
    """The Generator's autoscaling started (and floored) at `initial` replicas, optionally capped at
    `maximum`: the laptop profile's two from the start are one model replica's start too many for a
    smoke run, and leave a scale-up benchmark nothing to add."""
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            if deployment["name"] == "Generator" and "autoscaling_config" in deployment:
                scaling = deployment["autoscaling_config"]
                scaling.update(min_replicas=initial, initial_replicas=initial)
                if maximum is not None:
                    scaling["max_replicas"] = maximum
    return config


def preset_file(folder: Path, base: str = "tiny", desk_threshold: float | None = None, name: str | None = None) -> Path:
    """A copy of preset `base` in `folder` (optionally with another desk threshold); its path."""
    data = yaml.safe_load((CONFIGS_DIR / "presets" / f"{base}.yaml").read_text(encoding="utf-8"))
    if desk_threshold is not None:
        data["name"] = f"{base}-bench"
        data["classifier"]["threshold"] = desk_threshold
    if name is not None:
        data["name"] = name
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def deploy_config(config: dict[str, Any]) -> None:
    """Deploy a serve config dict the way `serve run config.yaml` does (serve_start + deploy_apps)."""
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    client.deploy_apps(schema, _blocking=False)


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen[Any] | None = None) -> float:
    """Poll `url` until it answers 200; return the seconds waited. Fails if `proc` exits first."""
    import httpx

    started = time.perf_counter()
    last = ""
    while time.perf_counter() - started < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered: {last}")
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return time.perf_counter() - started
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s: {last}")


def desk_photo(width: int = 96, height: int = 80, seed: int = 0) -> bytes:
    """A synthetic JPEG 'desk': a wooden surface, a dark monitor, a keyboard bar, some noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = (200, 200, 210)
    pixels[height // 2 :, :] = (150, 100, 60)
    pixels[height // 8 : height // 2, width // 3 : 2 * width // 3] = (20, 20, 25)
    pixels[5 * height // 8 : 5 * height // 8 + 8, width // 4 : 3 * width // 4] = (60, 60, 60)
    noisy = np.clip(pixels.astype(int) + rng.integers(-8, 8, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG")
    return buffer.getvalue()


# --- the ingress in-process ----------------------------------------------------------------------


def in_process_context(data_dir: Path, runner: Any, **parts: Any) -> IngressContext:
    """The ingress's context with a real SQLite task store and local storage under `data_dir` and
    `runner` as its TaskRunner handle, installed as the app's context (undo with
    `set_context(None)`). `parts` are the context's other fields (probes, replica_states,
    metrics, settings, webhook_secret) and, for the rest, serve-config args (tasks, auth, admission, ...)."""
    names = ("probes", "replica_states", "metrics", "settings", "webhook_secret")
    fields = {name: parts.pop(name) for name in names if name in parts}
    config = {"data_dir": str(data_dir), "public_base_url": "http://t", **parts}
    args = AppArgs.model_validate(config).resolved()
    preset = load_preset("tiny")
    images = LocalImageStore(args.storage)  # type: ignore[arg-type]
    asyncio.run(images.start())
    context = IngressContext(
        args=args,
        preset=preset,
        limits=preset.limits,
        settings=fields.get("settings") or Settings(imagegen_webhook_secret=None),
        tasks=TaskStore(SqliteDatabase(args.tasks.db_path or "")),
        images=images,
        runner=runner,
        probes=fields.get("probes", {}),
        replica_states=fields.get("replica_states") or _no_replicas,
        metrics=fields.get("metrics") or IngressMetrics(),
        shopping_provider="catalog",
        version="test",
        webhook_secret=fields.get("webhook_secret"),
    )
    set_context(context)
    return context


async def _no_replicas() -> ReplicaStates:
    return {}


class PaintingStages:
    """The flow's stages with a Generator that paints a solid image of the asked size per spec."""

    def __init__(self) -> None:
        self.specs: list[GenerationSpec] = []
        self.fail_with: Exception | None = None

    async def generate(self, spec: GenerationSpec, on_step: OnStep) -> GenerationOutput:
        self.specs.append(spec)
        if self.fail_with is not None:
            raise self.fail_with
        for step in range(1, spec.num_inference_steps + 1):
            await on_step(step, spec.num_inference_steps)
        buffer = io.BytesIO()
        Image.new("RGB", (spec.width, spec.height), (spec.seed % 256, 80, 160)).save(buffer, format="PNG")
        return GenerationOutput(image_png=buffer.getvalue(), seed=spec.seed, model_id="painter")


class WorkerRunner:
    """Stands in for the TaskRunner handle: `run.remote(task_id)` runs the task with a real
    TaskWorker and `flows` to its end state (or leaves it queued while `hold` is set)."""

    def __init__(self, ctx: IngressContext, flows: Mapping[str, Flow[Any]]) -> None:
        self.worker = TaskWorker(tasks=ctx.tasks, images=ctx.images, flows=flows, cfg=ctx.args.tasks)
        self.hold = False
        self.run = self

    def remote(self, task_id: str) -> Any:
        return self._run(task_id)

    async def _run(self, task_id: str) -> None:
        if not self.hold:
            await self.worker.run(task_id)
