"""SD helpers shared by the batching and lora_switch benchmarks: the tiny engines and request specs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import DEFAULT_CACHE_DIR
from serve_app.stages import GenerationSpec

if TYPE_CHECKING:
    from serve_app.models.edit_engine import EditEngine
    from serve_app.models.sd_engine import SDEngine

PROMPT = "a cozy wooden desk with a monitor, a keyboard and a plant"
EDIT_INSTRUCTION = "make the lighting warmer"


def model_cache_dir(path: Path | None) -> Path:
    """Where the tiny models are built once and reused (`--cache-dir`, else ~/.cache/imagegen-serve-bench)."""
    folder = (path or DEFAULT_CACHE_DIR / "models").expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_engine(cache_dir: Path, threads: int, preset: str = "tiny") -> SDEngine:
    """An SDEngine for `preset`'s generator on CPU (or its device), with `threads` torch threads."""
    import torch

    from serve_app.models.sd_engine import SDEngine
    from serve_app.presets import load_preset

    torch.set_num_threads(threads)
    spec = load_preset(preset)
    return SDEngine(spec.generator, cache_dir, device=spec.device, dtype=spec.dtype)


def make_editor(cache_dir: Path, threads: int, preset: str = "tiny") -> EditEngine:
    """An EditEngine (InstructPix2Pix) for `preset`'s editor, with `threads` torch threads."""
    import torch

    from serve_app.models.edit_engine import EditEngine
    from serve_app.presets import load_preset

    torch.set_num_threads(threads)
    spec = load_preset(preset)
    return EditEngine(spec.editor, cache_dir, device=spec.device, dtype=spec.dtype)


def source_photo(size: int) -> bytes:
    """A deterministic photo-like image to edit: a gradient with a few shapes."""
    import io

    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((size // 8, size // 2, size * 7 // 8, size * 5 // 8), fill=(120, 80, 40))  # a desk top
    draw.rectangle((size // 3, size // 5, size * 2 // 3, size // 2), fill=(30, 30, 40))  # a monitor
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def make_edit_spec(
    seed: int, steps: int, size: int, guidance: float = 7.5, image_guidance: float = 1.5
) -> GenerationSpec:
    """An instruction edit of `source_photo(size)`: what the Editor takes."""
    return make_spec(seed, steps, size, guidance).model_copy(
        update={
            "prompt": EDIT_INSTRUCTION,
            "init_image_png": source_photo(size),
            "image_guidance_scale": image_guidance,
        }
    )


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
