"""GenerationSpecs and their outputs for the tests: a small txt2img spec with only what a test varies
named, and an output's pixels to compare."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from serve_app.stages import GenerationOutput, GenerationSpec

TXT2IMG: dict[str, Any] = {
    "prompt": "a desk",
    "num_inference_steps": 4,
    "guidance_scale": 7.5,
    "height": 64,
    "width": 64,
    "seed": 1,
}
# PNG holds uint8 pixels: a batched matmul may round differently from a single one by a level.
ATOL = 2 / 255 + 1e-6


def txt2img(**fields: Any) -> GenerationSpec:
    """A 64x64 txt2img spec of "a desk", 4 steps at guidance 7.5 with seed 1, and `fields` over that."""
    return GenerationSpec(**(TXT2IMG | fields))


def pixels(output: GenerationOutput) -> np.ndarray:
    """The output's PNG as RGB floats in [0, 1], height x width x 3."""
    with Image.open(io.BytesIO(output.image_png)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
