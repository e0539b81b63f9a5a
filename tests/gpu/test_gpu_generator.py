"""The generator's CUDA path: half precision, channels_last UNet, SDPA, deterministic seeds.

Skipped unless IMAGEGEN_GPU_TESTS=1 and a CUDA device is present (CI has none); run on a GPU
machine with `IMAGEGEN_GPU_TESTS=1 pytest tests/gpu`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.models.sd_engine import SDEngine
from serve_app.presets import GeneratorModel, LoraSpec, PipelineTuning
from serve_app.stages import GenerationSpec
from tests.support.specs import txt2img

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        os.environ.get("IMAGEGEN_GPU_TESTS") != "1" or not torch.cuda.is_available(),
        reason="GPU tests need IMAGEGEN_GPU_TESTS=1 and a CUDA device",
    ),
]


def _spec(seed: int, lora: str | None = None) -> GenerationSpec:
    return txt2img(seed=seed, lora_name=lora)


def test_cuda_engine_uses_half_precision_and_channels_last(tmp_path: Path) -> None:
    engine = SDEngine(GeneratorModel(model_id="tiny"), tmp_path, device="auto", dtype="auto")
    assert engine.device.type == "cuda"
    assert engine.dtype in (torch.float16, torch.bfloat16)
    unet = engine.txt2img.unet
    assert next(unet.parameters()).dtype == engine.dtype
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}, processors  # SDPA

    engine.load_adapter(LoraSpec(name="a", path="tiny:1"))
    first = engine.generate([_spec(3, "a"), _spec(4, "a")])
    again = engine.generate([_spec(3, "a")])
    # fp16 kernels may pick other algorithms per batch size: equal up to a level or two, not bit-exact.
    same_seed = np.abs(_pixels(first[0].image_png) - _pixels(again[0].image_png)).mean()
    other_seed = np.abs(_pixels(first[0].image_png) - _pixels(first[1].image_png)).mean()
    assert same_seed < 2.0 < other_seed, (same_seed, other_seed)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def test_compiled_unet_with_cuda_graphs_and_fused_lora_keep_the_images(tmp_path: Path) -> None:
    """The GPU-only tuning: torch.compile (inductor) with CUDA graphs, and a fused adapter, give the
    eager images (up to fp16 rounding); a second batch shape records its own graph."""
    eager = SDEngine(GeneratorModel(model_id="tiny"), tmp_path)
    tuning = PipelineTuning(compile="default", cuda_graphs=True, fuse_lora=True)
    tuned = SDEngine(GeneratorModel(model_id="tiny", tuning=tuning), tmp_path)
    assert isinstance(tuned.txt2img.unet, torch._dynamo.eval_frame.OptimizedModule)
    for engine in (eager, tuned):
        engine.load_adapter(LoraSpec(name="a", path="tiny:1"))
    for specs in ([_spec(3, "a")], [_spec(3, "a"), _spec(4, "a")], [_spec(5)]):
        want = eager.generate(specs)
        got = tuned.generate(specs)
        for w, g in zip(want, got, strict=True):
            diff = np.abs(_pixels(w.image_png) - _pixels(g.image_png)).mean()
            assert diff < 2.0, diff
