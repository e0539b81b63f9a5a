"""Stand-ins for cloud backends in a chain, and waiting for a task run in-process (the Generator's
stand-in and the runner handle are benchmarks.harness's `PaintingStages` and `WorkerRunner`)."""

from __future__ import annotations

import io
import time
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from serve_app.backends import BackendImage, BackendStatus, ImageBackend
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


def wait_result(client: TestClient, task_id: str) -> dict[str, Any]:
    """The task's result once it has ended (a 202 answer returns before the runner is done)."""
    for _ in range(500):
        body = client.get(f"/v1/result/{task_id}").json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not end: {body}")
