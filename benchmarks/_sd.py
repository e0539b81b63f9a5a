"""SD helpers shared by the batching and lora_switch benchmarks: the tiny engine and request specs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import DEFAULT_CACHE_DIR
from serve_app.protocol import GenerationSpec

if TYPE_CHECKING:
    from serve_app.models.sd_engine import SDEngine

PROMPT = "a cozy wooden desk with a monitor, a keyboard and a plant"


def model_cache_dir(path: Path | None) -> Path:
    """Where the tiny models are built once and reused (`--cache-dir`, else ~/.cache/imagegen-serve-bench)."""
    folder = (path or DEFAULT_CACHE_DIR / "models").expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_engine(cache_dir: Path, threads: int, preset: str = "tiny") -> SDEngine:
    """An SDEngine for `preset`'s generator on CPU (or its device), with `threads` torch threads."""
    import torch

    from serve_app.config import load_preset
    from serve_app.models.sd_engine import SDEngine

    torch.set_num_threads(threads)
    spec = load_preset(preset)
    return SDEngine(spec.generator, cache_dir, device=spec.device, dtype=spec.dtype)


def make_spec(
    seed: int,
    steps: int,
    size: int,
    guidance: float = 7.5,
    lora: str | None = None,
    lora_scale: float = 1.0,
    task_id: str | None = None,
) -> GenerationSpec:
    """A txt2img GenerationSpec of `size`x`size` with `steps` steps."""
    return GenerationSpec(
        task_id=task_id,
        prompt=PROMPT,
        negative_prompt="blurry, low quality",
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=size,
        width=size,
        seed=seed,
        lora_name=lora,
        lora_scale=lora_scale,
    )
