"""Editor deployment: instruction edits with InstructPix2Pix ("make the lighting warmer"), batched.

A thin Serve shell around `EditEngine` that holds the model and nothing else. Batching,
progress streaming and cancellation are `deployments.batched.BatchedPipeline`'s: edits with the
same size, steps and both guidance scales share one pipeline call. Replicas, CPU/GPU shares and
`user_config` (max_batch_size, batch_wait_timeout_s) live in serve_config.yaml.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ray import serve

from deployments.batched import BatchedPipeline, GroupControl, PendingImage
from serve_app.metrics import ModelMetrics
from serve_app.presets import Preset
from serve_app.stages import GenerationOutput


@serve.deployment
class Editor(BatchedPipeline):
    """Edits images by instruction with the preset's `editor` model."""

    def __init__(self, preset: Preset, model_cache_dir: str) -> None:
        from serve_app.models.device import configure_replica_process
        from serve_app.models.edit_engine import EditEngine

        configure_replica_process()
        self.preset = preset
        self.engine = EditEngine(preset.editor, Path(model_cache_dir), device=preset.device, dtype=preset.dtype)
        self.metrics = ModelMetrics("editor")

    async def _run_group(self, group: list[PendingImage]) -> list[GenerationOutput]:
        control = GroupControl(group)
        specs = [pending.spec for pending in group]
        started = asyncio.get_running_loop().time()
        outputs = await asyncio.to_thread(self.engine.generate, specs, control.on_step, control.should_stop)
        self.metrics.model_call(asyncio.get_running_loop().time() - started)
        return outputs

    def info(self) -> dict[str, Any]:
        """Model id, family, device, dtype and the live batching knobs."""
        return {
            **self.engine.info(),
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }
