"""Captioner deployment: PNG bytes -> caption, batched across concurrent requests.

A thin Serve shell around `CaptionEngine`. Replicas, CPU/GPU shares, `max_ongoing_requests`
(keep it >= max_batch_size) and `user_config` live in serve_config.yaml, not here.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from ray import serve

from serve_app.batching import DEFAULT_BATCH_WAIT_TIMEOUT_S, DEFAULT_MAX_BATCH_SIZE, ModelReplica
from serve_app.errors import ConfigurationError
from serve_app.images import decode_image
from serve_app.presets import Preset

logger = logging.getLogger(__name__)


@serve.deployment
class Captioner(ModelReplica):
    """Captions desk photos with the preset's captioner (BLIP; tiny offline model for `tiny`)."""

    batched = "_caption_batch"

    def __init__(self, preset: Preset, model_cache_dir: str) -> None:
        from serve_app.models.captioning import CaptionEngine
        from serve_app.models.device import configure_replica_process

        self.preset = preset
        configure_replica_process()
        self.hold(CaptionEngine(preset.captioner, Path(model_cache_dir), preset.device, preset.dtype), "captioner")
        self.max_new_tokens = 30

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs: max_batch_size, batch_wait_timeout_s, max_new_tokens."""
        super().reconfigure(user_config)
        tokens = user_config.get("max_new_tokens")
        if tokens is not None:
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                raise ConfigurationError(f"user_config.max_new_tokens must be an integer >= 1, got {tokens!r}.")
            self.max_new_tokens = tokens

    async def caption(self, image_png: bytes) -> str:
        """The caption of one image. Decoding happens per request, so one bad image fails only its caller."""
        limits = self.preset.limits
        image = await asyncio.to_thread(decode_image, image_png, limits.max_image_pixels, limits.max_upload_bytes)
        return await self._caption_batch(image)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S)
    async def _caption_batch(self, images: list[Image.Image]) -> list[str]:
        return await self.model_call(partial(self.engine.caption, max_new_tokens=self.max_new_tokens), images)

    def info(self) -> dict[str, Any]:
        return {
            **self.engine.info(),
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "max_new_tokens": self.max_new_tokens,
        }
