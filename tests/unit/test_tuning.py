"""A preset's `tuning:` on the tiny pipelines: the safety checker's verdict, fused LoRA, sliced and
tiled VAE decode, a replacement VAE, channels_last, torch.compile; no Ray.

The safety checker is a real `StableDiffusionSafetyChecker` built from a tiny CLIP config and
saved with the tiny weights, as SD 1.5 ships one. Its concept thresholds decide the verdict: -10
flags every image, +10 none (cosine similarities lie in [-1, 1]).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from pydantic import ValidationError

from deployments.batched import BatchedPipeline, PendingImage
from serve_app.errors import ConfigurationError, ContentFiltered
from serve_app.models.edit_engine import EditEngine
from serve_app.models.sd_engine import SDEngine
from serve_app.models.tiny import ensure_tiny_sd
from serve_app.presets import GeneratorModel, LoraSpec, PipelineTuning
from serve_app.stages import GenerationOutput, GenerationSpec
from tests.support.specs import ATOL, pixels, txt2img


def make_spec(seed: int = 7, **overrides: Any) -> GenerationSpec:
    return txt2img(prompt="a neon minimal desk", num_inference_steps=3, seed=seed, **overrides)


def with_safety_checker(tiny: Path, target: Path, threshold: float) -> Path:
    """A copy of the tiny SD folder with a tiny safety checker whose every concept threshold is
    `threshold`, saved the way SD 1.5's folder holds one."""
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = CLIPConfig(text_config=small, vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=8)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = StableDiffusionPipeline.from_pretrained(tiny, safety_checker=None, requires_safety_checker=False)
    StableDiffusionPipeline(
        **{**pipe.components, "safety_checker": checker, "feature_extractor": extractor},
        requires_safety_checker=True,
    ).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def tiny_folder(tiny_cache_dir: Path) -> Path:
    return ensure_tiny_sd(tiny_cache_dir)


@pytest.fixture(scope="module")
def plain(tiny_cache_dir: Path) -> SDEngine:
    return SDEngine(GeneratorModel(model_id="tiny"), tiny_cache_dir)


# --- the safety checker's verdict --------------------------------------------------------------


def test_flagged_images_are_marked_and_black(tiny_folder: Path, tmp_path: Path, tiny_cache_dir: Path) -> None:
    folder = with_safety_checker(tiny_folder, tmp_path / "flags-all", threshold=-10.0)
    engine = SDEngine(GeneratorModel(model_id=str(folder)), tiny_cache_dir)
    assert engine.info()["safety_checker"] is True
    outputs = engine.generate([make_spec(1), make_spec(2)])
    assert [o.safety for o in outputs] == ["flagged", "flagged"]
    assert pixels(outputs[0]).max() == 0.0  # what diffusers does to a flagged image: never deliver it


def test_passed_images_say_so(tiny_folder: Path, tmp_path: Path, tiny_cache_dir: Path, plain: SDEngine) -> None:
    folder = with_safety_checker(tiny_folder, tmp_path / "flags-none", threshold=10.0)
    engine = SDEngine(GeneratorModel(model_id=str(folder)), tiny_cache_dir)
    output = engine.generate([make_spec(3)])[0]
    assert output.safety == "passed"
    assert np.allclose(pixels(output), pixels(plain.generate([make_spec(3)])[0]), atol=ATOL)


def test_no_checker_or_turned_off_is_not_run(tiny_folder: Path, tmp_path: Path, tiny_cache_dir: Path) -> None:
    folder = with_safety_checker(tiny_folder, tmp_path / "off", threshold=-10.0)
    off = GeneratorModel(model_id=str(folder), tuning=PipelineTuning(safety_checker=False))
    engine = SDEngine(off, tiny_cache_dir)
    assert engine.info()["safety_checker"] is False
    output = engine.generate([make_spec(4)])[0]
    assert output.safety == "not_run" and pixels(output).max() > 0.0
    assert SDEngine(GeneratorModel(model_id="tiny"), tiny_cache_dir).generate([make_spec(4)])[0].safety == "not_run"


class _Flagging(BatchedPipeline):
    """The deployment's batch logic (called directly, no Serve) over canned outputs: even seeds
    come back flagged."""

    def __init__(self) -> None:
        from serve_app.metrics import GeneratorMetrics

        self.metrics = GeneratorMetrics()

    async def _run_group(self, group: list[PendingImage]) -> list[GenerationOutput]:
        return [
            GenerationOutput(
                image_png=b"png", seed=p.spec.seed, model_id="m", safety="flagged" if p.spec.seed % 2 == 0 else "passed"
            )
            for p in group
        ]


def test_a_flagged_image_fails_its_request_only() -> None:
    async def main() -> list[Any]:
        deployment = _Flagging()
        loop = asyncio.get_running_loop()
        batch = [PendingImage(make_spec(seed), loop) for seed in (1, 2, 3)]
        return await BatchedPipeline._generate_batch.__wrapped__(deployment, batch)  # type: ignore[attr-defined]

    first, second, third = asyncio.run(main())
    assert isinstance(first, GenerationOutput) and first.safety == "passed"
    assert isinstance(second, ContentFiltered) and second.error_code == "CONTENT_FILTERED"
    assert second.status_code == 422
    assert isinstance(third, GenerationOutput)


# --- fused LoRA -------------------------------------------------------------------------------


def test_fused_lora_gives_the_unfused_images_and_unfuses_on_switch(tiny_cache_dir: Path, plain: SDEngine) -> None:
    fused = SDEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(fuse_lora=True)), tiny_cache_dir)
    for engine in (plain, fused):
        for seed in (1, 2):
            engine.load_adapter(LoraSpec(name=f"tiny-{seed}", path=f"tiny:{seed}"))

    def run(engine: SDEngine, lora: str | None, scale: float = 1.0) -> np.ndarray:
        return pixels(engine.generate([make_spec(lora_name=lora, lora_scale=scale)])[0])

    base = run(plain, None)
    for lora, scale in (("tiny-1", 1.0), ("tiny-1", 0.5), ("tiny-2", 1.0), (None, 1.0), ("tiny-2", 0.8)):
        want = run(plain, lora, scale)
        got = run(fused, lora, scale)
        # W + s*BA summed once vs added per call: float rounding, amplified by CFG 7.5 over 3 steps,
        # moves a few pixels by a few levels; an adapter moves the image by ~20 levels on average.
        assert np.abs(got - want).max() <= 8 / 255 and np.abs(got - want).mean() <= 1 / 255, (lora, scale)
        if lora:
            assert np.abs(want - base).mean() > 10 / 255
        assert fused._fused == lora  # merged into the base weights while it is the active one
        layers = [m for m in fused.txt2img.unet.modules() if isinstance(m, BaseTunerLayer)]
        assert layers and all(m.merged_adapters == ([lora] if lora else []) for m in layers)
    assert not np.allclose(run(fused, "tiny-2"), base, atol=ATOL)
    fused.unload_adapter("tiny-2")  # unmerged before it is deleted: the base model is whole again
    assert fused._fused is None
    assert np.allclose(run(fused, None), base, atol=ATOL)
    for engine in (plain,):
        for seed in (1, 2):
            engine.unload_adapter(f"tiny-{seed}")


# --- VAE decode, memory format, compile ----------------------------------------------------------


@pytest.mark.parametrize("tuning", [{"vae_slicing": True}, {"vae_tiling": True}, {"channels_last": True}])
def test_memory_options_keep_the_images(tiny_cache_dir: Path, plain: SDEngine, tuning: dict[str, Any]) -> None:
    engine = SDEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(**tuning)), tiny_cache_dir)
    if tuning.get("vae_slicing"):
        assert engine.txt2img.vae.use_slicing
    if tuning.get("vae_tiling"):
        assert engine.txt2img.vae.use_tiling
    if tuning.get("channels_last"):
        weight = next(p for p in engine.txt2img.unet.parameters() if p.dim() == 4)
        assert weight.is_contiguous(memory_format=torch.channels_last)
    specs = [make_spec(1), make_spec(2)]
    for got, want in zip(engine.generate(specs), plain.generate(specs), strict=True):
        assert np.allclose(pixels(got), pixels(want), atol=ATOL)


def test_a_replacement_vae_decodes(tiny_folder: Path, tiny_cache_dir: Path, tmp_path: Path, plain: SDEngine) -> None:
    """`vae:` loads another AutoencoderKL (as madebyollin/sdxl-vae-fp16-fix replaces SDXL's):
    here the tiny VAE with its decoder's last layer zeroed, so the images change to mid-grey."""
    vae_dir = tmp_path / "vae"
    shutil.copytree(tiny_folder / "vae", vae_dir)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir)
    with torch.no_grad():
        vae.decoder.conv_out.weight.zero_()
        vae.decoder.conv_out.bias.zero_()
    vae.save_pretrained(vae_dir)
    engine = SDEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(vae=str(vae_dir))), tiny_cache_dir)
    image = pixels(engine.generate([make_spec(1)])[0])
    assert np.allclose(image, 0.5, atol=1 / 255 + 1e-6)
    assert not np.allclose(pixels(plain.generate([make_spec(1)])[0]), 0.5, atol=0.05)
    with pytest.raises(ConfigurationError, match="Could not load the VAE"):
        SDEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(vae=str(tmp_path / "none"))), tiny_cache_dir)


def test_a_variant_the_weights_lack_is_a_configuration_error(tiny_cache_dir: Path) -> None:
    with pytest.raises(ConfigurationError):
        SDEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(variant="fp16")), tiny_cache_dir)


def test_a_variant_loads_its_files(tiny_folder: Path, tmp_path: Path, tiny_cache_dir: Path, plain: SDEngine) -> None:
    """`variant: fp16` reads the `*.fp16.safetensors` files (here the same weights renamed)."""
    folder = tmp_path / "variant"
    shutil.copytree(tiny_folder, folder)
    for weights in folder.glob("*/*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    for index in folder.glob("*/*.safetensors.index.json"):
        index.rename(index.with_name(index.name.replace(".safetensors.index.json", ".safetensors.index.fp16.json")))
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    engine = SDEngine(GeneratorModel(model_id=str(folder), tuning=PipelineTuning(variant="fp16")), tiny_cache_dir)
    assert np.allclose(pixels(engine.generate([make_spec(5)])[0]), pixels(plain.generate([make_spec(5)])[0]), atol=ATOL)


def test_compile_wraps_the_unet_and_keeps_the_images(tiny_cache_dir: Path, plain: SDEngine) -> None:
    """A real torch.compile (Dynamo capture + AOT autograd; inductor's C++ build takes ~40 s of
    CPU here, so the test uses the aot_eager backend: the same graph capture)."""
    tuning = PipelineTuning(compile="default", compile_backend="aot_eager")
    engine = SDEngine(GeneratorModel(model_id="tiny", tuning=tuning), tiny_cache_dir)
    assert isinstance(engine.txt2img.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert engine.img2img.unet is engine.txt2img.unet  # img2img shares the compiled UNet
    got = engine.generate([make_spec(6)])[0]
    assert np.allclose(pixels(got), pixels(plain.generate([make_spec(6)])[0]), atol=ATOL)


def test_cuda_graphs_need_compile_and_cuda(tiny_cache_dir: Path) -> None:
    with pytest.raises(ValidationError, match="cuda_graphs needs compile"):
        PipelineTuning(cuda_graphs=True)
    assert PipelineTuning(compile="default", cuda_graphs=True).compile_mode() == "reduce-overhead"
    assert PipelineTuning(compile="max-autotune-no-cudagraphs", cuda_graphs=True).compile_mode() == "max-autotune"
    assert PipelineTuning().compile_mode() is None
    with pytest.raises(ValidationError):
        PipelineTuning(compile="fast")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PipelineTuning(channel_last=True)  # type: ignore[call-arg]
    on_cpu = GeneratorModel(model_id="tiny", tuning=PipelineTuning(compile="default", cuda_graphs=True))
    with pytest.raises(ConfigurationError, match="cuda_graphs needs a CUDA device"):
        SDEngine(on_cpu, tiny_cache_dir, device="cpu")


def test_the_editor_takes_the_same_tuning_but_not_fuse_lora(tiny_cache_dir: Path) -> None:
    editor = EditEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(vae_slicing=True)), tiny_cache_dir)
    assert editor.pipe.vae.use_slicing
    with pytest.raises(ConfigurationError, match="fuse_lora"):
        EditEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(fuse_lora=True)), tiny_cache_dir)
