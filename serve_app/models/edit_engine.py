"""Instruction edits with InstructPix2Pix (an image + "make the lighting warmer"); no Ray.

diffusers' `StableDiffusionInstructPix2PixPipeline` (SDXL: `StableDiffusionXLInstructPix2PixPipeline`)
loaded once from the preset's `editor` model: `tiny` is built offline from a config (the tiny SD's
VAE and text encoder with an 8-channel UNet), anything else is a hub id
(`timbrooks/instruct-pix2pix`) or a local folder. Two guidance scales steer it: `guidance_scale`
(follow the instruction) and `image_guidance_scale` (stay close to the source image).

Every method blocks on CPU/GPU work: call it from a worker thread. One lock serialises pipeline calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serve_app.errors import ConfigurationError, InvalidInput, TaskCancelled
from serve_app.models.device import log_gpu_share, resolve_device, resolve_dtype
from serve_app.models.sd_engine import (
    OnStep,
    ShouldStop,
    StepCallback,
    _dtype_kwarg,
    check_group,
    decode_init_image,
    outputs,
    pipeline_source,
    seeded_call,
)
from serve_app.models.tiny import ensure_tiny_ip2p
from serve_app.models.tuning import apply_tuning, load_kwargs
from serve_app.presets import GeneratorModel
from serve_app.stages import GenerationOutput, GenerationSpec

logger = logging.getLogger(__name__)


def _pipeline_class(family: str) -> Any:
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionXLInstructPix2PixPipeline

    return StableDiffusionXLInstructPix2PixPipeline if family == "sdxl" else StableDiffusionInstructPix2PixPipeline


class EditEngine:
    """A loaded InstructPix2Pix pipeline."""

    def __init__(self, model: GeneratorModel, cache_dir: Path | str, device: str = "auto", dtype: str = "auto") -> None:
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._lock = threading.Lock()
        started = time.perf_counter()
        source, kwargs = pipeline_source(model, ensure_tiny_ip2p, self.cache_dir)
        dtype_kwargs = {_dtype_kwarg(): self.dtype}
        kwargs.update(dtype_kwargs)
        try:
            kwargs.update(load_kwargs(model.tuning, dtype_kwargs))
            self.pipe = _pipeline_class(model.family).from_pretrained(source, **kwargs)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"Could not load editor model {model.model_id!r}: {exc}") from exc
        if self.pipe.unet.config.in_channels != 8:
            raise ConfigurationError(
                f"Editor model {model.model_id!r} has a {self.pipe.unet.config.in_channels}-channel UNet; "
                "an InstructPix2Pix UNet takes 8 (noisy latents + the image's latents)."
            )
        self.pipe.to(self.device)
        if model.tuning.fuse_lora:
            raise ConfigurationError("The editor has no LoRA adapters: tuning.fuse_lora is for the generator.")
        apply_tuning(self.pipe, model.tuning, self.device)
        self.pipe.set_progress_bar_config(disable=True)
        logger.info(
            "loaded editor %s on %s/%s in %.1fs", model.model_id, self.device, self.dtype, time.perf_counter() - started
        )
        log_gpu_share(f"editor {model.model_id}", self.device)

    def generate(
        self,
        specs: Sequence[GenerationSpec],
        on_step: OnStep | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[GenerationOutput]:
        """Edit one image per spec (its `init_image_png` by its `prompt`, the instruction) in one
        pipeline call; specs share one group_key. Each image has its own seeded generator, so a
        seed gives the same edit alone or in a batch (up to float rounding)."""
        if not specs:
            return []
        check_group(specs)
        first = specs[0]
        if not first.is_edit:
            raise InvalidInput("An edit needs the source image and image_guidance_scale.")
        if should_stop is not None and should_stop():
            raise TaskCancelled()
        steps = StepCallback(first.num_inference_steps, on_step, should_stop)
        call = {
            **seeded_call(specs, self.device),
            "image": [decode_init_image(spec.init_image_png or b"", first.width, first.height) for spec in specs],
            "image_guidance_scale": first.image_guidance_scale,
            "callback_on_step_end": steps,
        }
        with self._lock:
            started = time.perf_counter()
            result = self.pipe(**call)
            seconds = time.perf_counter() - started
        if steps.interrupted:
            raise TaskCancelled()
        return outputs(specs, self.pipe, result, self.model.model_id, seconds)

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model.model_id,
            "family": self.model.family,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
