"""Stand-ins for cloud backends in a chain, the Generator deployment's object without Serve, and
waiting for a task run in-process (the Generator's stand-in and the runner handle are
testbed.harness's `PaintingStages` and `WorkerRunner`)."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from serve_app.backends import BackendImage, BackendStatus, ImageBackend
from serve_app.metrics import GeneratorMetrics
from serve_app.stages import GenerationSpec


class ScriptedBackend(ImageBackend):
    """A cloud member of a chain that fails with `error` or paints a 32x32 image."""

    kind = "cloud"

    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name = name
        self.error = error
        self.specs: list[GenerationSpec] = []

    def status(self) -> BackendStatus:
        return BackendStatus(name=self.name, kind="cloud", model="scripted", configured=True)

    async def generate(self, spec: GenerationSpec, on_step: Any = None) -> BackendImage:
        self.specs.append(spec)
        if self.error is not None:
            raise self.error
        out = io.BytesIO()
        Image.new("RGB", (32, 32), (10, 200, 10)).save(out, format="PNG")
        return BackendImage(image_png=out.getvalue(), backend=self.name, model="scripted", seconds=0.5, cost_usd=0.01)


class CountedPins:
    """An engine stand-in's `pin`/`unpin` (SDEngine's): how many pins each adapter holds now."""

    def __init__(self) -> None:
        self.pins: dict[str, int] = {}

    def pin(self, name: str) -> None:
        self.pins[name] = self.pins.get(name, 0) + 1

    def unpin(self, name: str) -> None:
        self.pins[name] -= 1


def bare_generator(engine: Any, **attrs: Any) -> Any:
    """The Generator deployment's object over `engine`, made without its __init__ (no model load, no
    replica): what its batching reads is set, and `attrs` over that."""
    from deployments.generator import Generator

    gen = object.__new__(Generator.func_or_class)
    gen.engine = engine
    gen._run_lock = asyncio.Lock()
    gen.metrics = GeneratorMetrics()
    gen._lora_loads = 0
    gen.batching, gen.steps = "static", None  # Serve's batching (the step loop is tests/unit/test_step_batch.py's)
    for name, value in attrs.items():
        setattr(gen, name, value)
    return gen


async def run_batch(gen: Any, specs: list[GenerationSpec]) -> list[Any]:
    """The Generator's batch method on `specs`, unwrapped from @serve.batch (which needs a replica): an
    output or the exception, one a spec."""
    from deployments.generator import PendingImage

    loop = asyncio.get_running_loop()
    return await type(gen)._generate_batch.__wrapped__(gen, [PendingImage(spec, loop) for spec in specs])


def wait_result(client: TestClient, task_id: str) -> dict[str, Any]:
    """The task's result once it has ended (a 202 answer returns before the runner is done)."""
    for _ in range(500):
        body = client.get(f"/v1/result/{task_id}").json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not end: {body}")
