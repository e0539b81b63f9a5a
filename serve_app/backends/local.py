"""The in-cluster diffusers Generator as an image backend like the cloud ones.

It calls the Generator deployment through the flow's stage call (retried on infrastructure
faults by the caller), so it keeps Serve's batching, LoRA multiplexing and progress. Its cost is
the GPU-seconds the image took (the pipeline call's time shared by the batch) times the
configured price."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from serve_app.backends.base import BackendImage, BackendStatus, ComposeNotSupported, ImageBackend, OnStep
from serve_app.backends.config import LocalBackendConfig
from serve_app.stages import GenerationOutput, GenerationSpec

GenerateFn = Callable[[GenerationSpec, OnStep], Awaitable[GenerationOutput]]


async def _no_progress(step: int, total: int) -> None:
    return None


class LocalBackend(ImageBackend):
    name = "local"
    kind = "local"

    def __init__(self, generate: GenerateFn, cfg: LocalBackendConfig, model_id: str = "in-cluster") -> None:
        self._generate = generate
        self.cfg = cfg
        self.model_id = model_id

    def status(self) -> BackendStatus:
        return BackendStatus(name=self.name, kind="local", model=self.model_id, configured=True)

    async def generate(self, spec: GenerationSpec, on_step: OnStep | None = None) -> BackendImage:
        if spec.reference_images_png:
            raise ComposeNotSupported("The in-cluster models cannot compose several images into one.")
        started = time.perf_counter()
        output = await self._generate(spec, on_step or _no_progress)
        return self.from_output(output, time.perf_counter() - started)

    def from_output(self, output: GenerationOutput, seconds: float) -> BackendImage:
        gpu_seconds = (
            output.model_seconds if output.model_seconds is not None else output.seconds / max(1, output.batch_size)
        )
        return BackendImage(
            image_png=output.image_png,
            backend=self.name,
            model=output.model_id,
            seed=output.seed,
            seconds=round(seconds, 4),
            cost_usd=round(gpu_seconds * self.cfg.price_usd_per_gpu_second, 6),
            safety_checker="passed" if output.safety == "passed" else "not_run",
        )
