"""DeskClassifier deployment: PNG bytes -> is this a desk setup? (CLIP zero-shot), batched.

A thin Serve shell around `DeskClassifierEngine`. Replicas, CPU/GPU shares, `max_ongoing_requests`
(keep it >= max_batch_size) and `user_config` live in serve_config.yaml, not here.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from PIL import Image
from ray import serve

from serve_app.batching import DEFAULT_BATCH_WAIT_TIMEOUT_S, DEFAULT_MAX_BATCH_SIZE, ModelReplica
from serve_app.images import decode_image
from serve_app.presets import Preset
from serve_app.stages import Classification

logger = logging.getLogger(__name__)


@serve.deployment
class DeskClassifier(ModelReplica):
    """Scores desk photos against the preset's desk / other label prompts."""

    batched = "_classify_batch"

    def __init__(self, preset: Preset, model_cache_dir: str) -> None:
        from serve_app.models.classification import DeskClassifierEngine
        from serve_app.models.device import configure_replica_process

        self.preset = preset
        configure_replica_process()
        engine = DeskClassifierEngine(preset.classifier, Path(model_cache_dir), preset.device, preset.dtype)
        self.hold(engine, "classifier")

    async def classify(self, image_png: bytes) -> Classification:
        """Classify one image. Decoding happens per request, so one bad image fails only its caller."""
        limits = self.preset.limits
        image = await asyncio.to_thread(decode_image, image_png, limits.max_image_pixels, limits.max_upload_bytes)
        return await self._classify_batch(image)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S)
    async def _classify_batch(self, images: list[Image.Image]) -> list[Classification]:
        return await self.model_call(self.engine.classify, images)

    def info(self) -> dict[str, Any]:
        return {
            **self.engine.info(),
            "threshold": self.engine.threshold,
            "labels": self.engine.labels,
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }
