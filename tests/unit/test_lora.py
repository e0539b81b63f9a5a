"""LoRA adapters on the tiny pipeline: visible effect, scale 0, switching, unloading; no Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serve_app.errors import GenerationFailed
from serve_app.models.sd_engine import SDEngine
from serve_app.models.tiny import LORA_WEIGHT_NAME, ensure_tiny_lora
from serve_app.presets import GeneratorModel, LoraSpec
from serve_app.stages import GenerationOutput, GenerationSpec
from tests.support.specs import ATOL, pixels, txt2img

SEEDS = (1, 2, 3)  # the tiny preset's adapters: tiny:1, tiny:2, tiny:3


@pytest.fixture(scope="module")
def cache_dir(tiny_cache_dir: Path) -> Path:
    return tiny_cache_dir


@pytest.fixture(scope="module")
def engine(cache_dir: Path) -> SDEngine:
    engine = SDEngine(GeneratorModel(model_id="tiny"), cache_dir)
    for seed in SEEDS:
        engine.load_adapter(LoraSpec(name=f"tiny-{seed}", path=f"tiny:{seed}"))
    return engine


def make_spec(lora: str | None = None, scale: float = 1.0, seed: int = 42) -> GenerationSpec:
    return txt2img(prompt="a neon minimal desk", num_inference_steps=3, seed=seed, lora_name=lora, lora_scale=scale)


def run(engine: SDEngine, lora: str | None = None, scale: float = 1.0) -> GenerationOutput:
    return engine.generate([make_spec(lora, scale)])[0]


def test_each_adapter_changes_the_image(engine: SDEngine) -> None:
    base = pixels(run(engine))
    images = {}
    for seed in SEEDS:
        out = run(engine, f"tiny-{seed}")
        assert out.lora_name == f"tiny-{seed}" and out.lora_scale == 1.0
        images[seed] = pixels(out)
        assert np.abs(images[seed] - base).mean() > 0.03, f"tiny:{seed} barely changes the image"
    assert np.abs(images[1] - images[2]).mean() > 0.01


def test_scale_zero_and_no_adapter_give_the_base_image(engine: SDEngine) -> None:
    base = run(engine)
    assert run(engine, "tiny-1", 0.0).image_png == base.image_png
    run(engine, "tiny-2")  # an adapter was active just before...
    assert run(engine).image_png == base.image_png  # ...and is switched off for a request without one
    # The scale is applied: half way differs from both the base and the full adapter.
    half = pixels(run(engine, "tiny-1", 0.5))
    assert np.abs(half - pixels(base)).mean() > 0.005
    assert np.abs(half - pixels(run(engine, "tiny-1", 1.0))).mean() > 0.005


def test_switching_adapters_keeps_the_base_model(engine: SDEngine) -> None:
    unet_id, text_encoder_id = id(engine.txt2img.unet), id(engine.txt2img.text_encoder)
    first_a = run(engine, "tiny-1").image_png
    b = run(engine, "tiny-2").image_png
    second_a = run(engine, "tiny-1").image_png
    assert first_a == second_a
    assert b != first_a
    assert id(engine.txt2img.unet) == unet_id
    assert id(engine.txt2img.text_encoder) == text_encoder_id
    assert engine.img2img.unet is engine.txt2img.unet


def test_adapter_batch_equals_single_calls(engine: SDEngine) -> None:
    seeds = [5, 6, 7]
    batch = engine.generate([make_spec("tiny-3", 0.8, seed=s) for s in seeds])
    for out, seed in zip(batch, seeds, strict=True):
        single = engine.generate([make_spec("tiny-3", 0.8, seed=seed)])[0]
        np.testing.assert_allclose(pixels(out), pixels(single), atol=ATOL, rtol=0)


def test_unload_frees_the_adapter_and_reload_restores_it(engine: SDEngine) -> None:
    before = run(engine, "tiny-3").image_png
    engine.unload_adapter("tiny-3")
    assert "tiny-3" not in engine.adapters
    assert "tiny-3" not in engine.pipeline_adapters()
    assert {"tiny-1", "tiny-2"} <= engine.pipeline_adapters()
    with pytest.raises(ValueError, match="not loaded"):
        run(engine, "tiny-3")
    engine.unload_adapter("tiny-3")  # unloading twice is a no-op
    engine.load_adapter(LoraSpec(name="tiny-3", path="tiny:3"))
    assert run(engine, "tiny-3").image_png == before


def test_an_unload_of_a_pinned_adapter_waits_for_the_last_unpin_and_a_reload_cancels_it(engine: SDEngine) -> None:
    """What the multiplexer's eviction (`unload_adapter`) does to an adapter a batch runs on."""
    before = run(engine, "tiny-2").image_png
    engine.pin("tiny-2")
    engine.pin("tiny-2")
    engine.unload_adapter("tiny-2")
    engine.unpin("tiny-2")
    assert "tiny-2" in engine.adapters and "tiny-2" in engine.pipeline_adapters()
    assert run(engine, "tiny-2").image_png == before, "the batch on it runs as before"
    engine.unpin("tiny-2")  # the last pin: the eviction lands
    assert "tiny-2" not in engine.adapters and "tiny-2" not in engine.pipeline_adapters()

    engine.load_adapter(LoraSpec(name="tiny-2", path="tiny:2"))
    engine.pin("tiny-2")
    engine.unload_adapter("tiny-2")
    engine.load_adapter(LoraSpec(name="tiny-2", path="tiny:2"))  # loaded again: the eviction is void
    engine.unpin("tiny-2")
    assert "tiny-2" in engine.adapters and run(engine, "tiny-2").image_png == before
    engine.unload_adapter("tiny-2")  # unpinned: at once
    assert "tiny-2" not in engine.pipeline_adapters()
    engine.load_adapter(LoraSpec(name="tiny-2", path="tiny:2"))


def test_load_is_idempotent(engine: SDEngine) -> None:
    adapters = engine.adapters
    engine.load_adapter(LoraSpec(name="tiny-1", path="tiny:1"))
    assert engine.adapters == adapters


def test_local_folder_and_file_paths_load_the_same_weights(engine: SDEngine, cache_dir: Path) -> None:
    folder = ensure_tiny_lora(cache_dir, 1)
    reference = run(engine, "tiny-1").image_png
    engine.load_adapter(LoraSpec(name="by-folder", path=str(folder), weight_name=LORA_WEIGHT_NAME))
    engine.load_adapter(LoraSpec(name="by-file", path=str(folder / LORA_WEIGHT_NAME)))
    try:
        assert run(engine, "by-folder").image_png == reference
        assert run(engine, "by-file").image_png == reference
    finally:
        engine.unload_adapter("by-folder")
        engine.unload_adapter("by-file")
    assert not {"by-folder", "by-file"} & engine.pipeline_adapters()


def test_bad_adapter_path_fails_cleanly(engine: SDEngine, tmp_path: Path) -> None:
    empty = tmp_path / "empty-lora"
    empty.mkdir()
    with pytest.raises(GenerationFailed, match="broken"):
        engine.load_adapter(LoraSpec(name="broken", path=str(empty), weight_name="missing.safetensors"))
    assert "broken" not in engine.adapters
    assert "broken" not in engine.pipeline_adapters()
    assert run(engine, "tiny-1").lora_name == "tiny-1"  # the engine still works
