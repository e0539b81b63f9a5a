"""A preset's `tuning:` applied to a diffusers pipeline: fp16 weight variants, a replacement VAE,
sliced/tiled VAE decode, the safety checker, channels_last, torch.compile and CUDA graphs.

Shared by the Generator's and the Editor's engines. The options only change how the same
pipeline is loaded and run, never what a request means; `benchmarks.gpu_throughput` reports their
effect on a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch

from serve_app.errors import ConfigurationError
from serve_app.presets import PipelineTuning

logger = logging.getLogger(__name__)

Verdict = Literal["passed", "flagged", "not_run"]


def local_or_hub(model_id: str) -> str:
    """A local folder (with `~` expanded) when one exists, else the hub id as given."""
    path = Path(model_id).expanduser()
    return str(path) if path.is_dir() else model_id


def load_kwargs(tuning: PipelineTuning, dtype_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Extra `from_pretrained` kwargs: the weight variant, the replacement VAE (loaded here, in the
    pipeline's dtype), and no safety checker when the preset turns it off."""
    kwargs: dict[str, Any] = {}
    if tuning.variant:
        kwargs["variant"] = tuning.variant
    if tuning.vae:
        from diffusers import AutoencoderKL

        try:
            kwargs["vae"] = AutoencoderKL.from_pretrained(local_or_hub(tuning.vae), **dtype_kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"Could not load the VAE {tuning.vae!r}: {exc}") from exc
    if not tuning.safety_checker:
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    return kwargs


def apply_tuning(pipe: Any, tuning: PipelineTuning, device: torch.device) -> None:
    """Memory format, VAE decode mode and compilation of a loaded pipeline already on `device`."""
    if tuning.channels_last or (tuning.channels_last is None and device.type == "cuda"):
        pipe.unet.to(memory_format=torch.channels_last)
    if tuning.vae_slicing:
        pipe.vae.enable_slicing()
    if tuning.vae_tiling:
        pipe.vae.enable_tiling()
    mode = tuning.compile_mode()
    if mode is None:
        return
    if tuning.cuda_graphs and device.type != "cuda":
        raise ConfigurationError(f"tuning.cuda_graphs needs a CUDA device, not {device}.")
    # The UNet runs every step; the VAE and text encoder once per image. Dynamic shapes off: one
    # graph per batch shape, as the Generator's batches come in a few sizes.
    pipe.unet = torch.compile(pipe.unet, mode=mode, backend=tuning.compile_backend, dynamic=False)
    logger.info("UNet compiled (mode %s, backend %s)", mode, tuning.compile_backend)


def has_safety_checker(pipe: Any) -> bool:
    return getattr(pipe, "safety_checker", None) is not None


def verdicts(pipe: Any, result: Any, count: int) -> list[Verdict]:
    """Per image: the safety checker's verdict, or not_run when the pipeline has none (SDXL, the
    tiny models, a preset with `safety_checker: false`). A flagged image is black: never deliver it."""
    flags = getattr(result, "nsfw_content_detected", None)
    if not has_safety_checker(pipe) or flags is None:
        return ["not_run"] * count
    return ["flagged" if flag else "passed" for flag in flags]
