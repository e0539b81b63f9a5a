"""Tiny BLIP / CLIP builders and the caption / desk-classifier engines (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from serve_app.errors import ConfigurationError
from serve_app.models import tiny_vision
from serve_app.models.cache import BUILD_VERSION, COMPLETE_MARKER, build_atomically
from serve_app.models.captioning import CaptionEngine
from serve_app.models.classification import DeskClassifierEngine
from serve_app.models.tiny_vision import ensure_tiny_blip, ensure_tiny_clip
from serve_app.presets import ClassifierModel, ModelSpec, load_preset

TINY = ModelSpec(model_id="tiny")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    ensure_tiny_blip(path)
    ensure_tiny_clip(path)
    return path


@pytest.fixture(scope="module")
def captioner(cache_dir: Path) -> CaptionEngine:
    return CaptionEngine(TINY, cache_dir, device="cpu")


@pytest.fixture(scope="module")
def classifier(cache_dir: Path) -> DeskClassifierEngine:
    return DeskClassifierEngine(ClassifierModel(model_id="tiny"), cache_dir, device="cpu")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    gradient = Image.linear_gradient("L").resize((96, 64)).convert("RGB")
    return [
        Image.new("RGB", (80, 60), (200, 30, 30)),
        gradient,
        Image.new("RGBA", (40, 70), (10, 120, 220, 128)),  # non-RGB modes are converted
    ]


# --- builders ----------------------------------------------------------------------------------


def test_builders_are_idempotent(cache_dir: Path) -> None:
    for ensure, name in ((ensure_tiny_blip, "tiny-blip"), (ensure_tiny_clip, "tiny-clip")):
        folder = cache_dir / name
        marker = (folder / COMPLETE_MARKER).stat().st_mtime_ns
        assert ensure(cache_dir) == folder
        assert (folder / COMPLETE_MARKER).stat().st_mtime_ns == marker  # not rebuilt
        assert {"config.json", "model.safetensors", "processor_config.json"} <= {p.name for p in folder.iterdir()}
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_tiny_clip_text_config_matches_tokenizer(cache_dir: Path) -> None:
    from transformers import AutoProcessor, CLIPConfig

    folder = cache_dir / "tiny-clip"
    tokenizer = AutoProcessor.from_pretrained(folder).tokenizer
    text_config = CLIPConfig.from_pretrained(folder).text_config
    assert text_config.vocab_size >= len(tokenizer)
    assert text_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.model_max_length == 77


def test_tiny_blip_decoder_starts_at_dec(cache_dir: Path) -> None:
    from transformers import AutoProcessor, BlipConfig

    folder = cache_dir / "tiny-blip"
    tokenizer = AutoProcessor.from_pretrained(folder).tokenizer
    text_config = BlipConfig.from_pretrained(folder).text_config
    assert tokenizer.bos_token == "[DEC]"
    assert text_config.bos_token_id == tokenizer.bos_token_id
    assert text_config.sep_token_id == tokenizer.sep_token_id
    assert text_config.vocab_size >= len(tokenizer)


def test_builds_are_deterministic(cache_dir: Path, tmp_path: Path) -> None:
    """Racing replicas must produce identical folders, whichever one wins the rename."""
    tiny_vision._build_tiny_blip(tmp_path)
    first = load_file(cache_dir / "tiny-blip" / "model.safetensors")
    second = load_file(tmp_path / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_losing_the_rename_race_uses_the_winner(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def build(folder: Path) -> None:
        (folder / "weights").write_text("loser")
        # Another process finishes first while this one is still building.
        target.mkdir()
        (target / "weights").write_text("winner")
        (target / COMPLETE_MARKER).write_text(json.dumps({"version": BUILD_VERSION}))

    assert build_atomically(target, build) == target
    assert (target / "weights").read_text() == "winner"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the loser's temporary folder is gone


def test_stale_or_torn_folder_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    (target / COMPLETE_MARKER).write_text(json.dumps({"version": -1}))
    build_atomically(target, lambda folder: (folder / "weights").write_text("new"))
    assert (target / "weights").read_text() == "new"
    assert json.loads((target / COMPLETE_MARKER).read_text())["version"] == BUILD_VERSION


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_atomically(tmp_path / "model", build)
    assert list(tmp_path.iterdir()) == []


# --- captioning --------------------------------------------------------------------------------


def test_caption_batch_returns_strings_and_is_deterministic(
    captioner: CaptionEngine, images: list[Image.Image]
) -> None:
    first = captioner.caption(images[:2])
    assert len(first) == 2 and all(isinstance(text, str) for text in first)
    assert captioner.caption(images[:2]) == first
    assert captioner.caption([]) == []
    assert len(captioner.caption([images[2]], max_new_tokens=1000)) == 1  # clamped to the position table


def test_caption_same_after_reload(captioner: CaptionEngine, cache_dir: Path, images: list[Image.Image]) -> None:
    reloaded = CaptionEngine(TINY, cache_dir, device="cpu")
    assert reloaded.caption(images) == captioner.caption(images)
    assert reloaded.info() == {"model_id": "tiny", "device": "cpu", "dtype": "float32"}


def test_caption_engine_loads_a_folder_like_a_hub_id(cache_dir: Path, images: list[Image.Image]) -> None:
    engine = CaptionEngine(ModelSpec(model_id=str(cache_dir / "tiny-blip")), cache_dir, device="cpu")
    assert engine.caption(images[:1]) == CaptionEngine(TINY, cache_dir, device="cpu").caption(images[:1])


# --- desk classification -----------------------------------------------------------------------


def test_classify_scores_in_unit_interval(classifier: DeskClassifierEngine, images: list[Image.Image]) -> None:
    results = classifier.classify(images)
    assert len(results) == 3
    for result in results:
        assert 0.0 <= result.score <= 1.0
        assert result.is_desk == (result.score >= classifier.threshold)
    assert classifier.classify([]) == []


def test_batch_equals_single_calls(classifier: DeskClassifierEngine, images: list[Image.Image]) -> None:
    batch = classifier.scores(images)
    singles = [classifier.scores([image])[0] for image in images]
    assert batch == pytest.approx(singles, abs=1e-5)


def test_classify_same_after_reload(
    classifier: DeskClassifierEngine, cache_dir: Path, images: list[Image.Image]
) -> None:
    reloaded = DeskClassifierEngine(ClassifierModel(model_id="tiny"), cache_dir, device="cpu")
    assert reloaded.scores(images) == pytest.approx(classifier.scores(images), abs=1e-6)


@pytest.mark.parametrize(("threshold", "expected"), [(0.0, True), (1.0, False)])
def test_threshold_semantics(cache_dir: Path, images: list[Image.Image], threshold: float, expected: bool) -> None:
    engine = DeskClassifierEngine(ClassifierModel(model_id="tiny", threshold=threshold), cache_dir, device="cpu")
    assert [result.is_desk for result in engine.classify(images)] == [expected] * 3


def test_labels_come_from_the_preset(cache_dir: Path, images: list[Image.Image]) -> None:
    one_each = ClassifierModel(model_id="tiny", desk_labels=["a desk"], other_labels=["a cat"])
    engine = DeskClassifierEngine(one_each, cache_dir, device="cpu")
    assert engine.labels == ["a desk", "a cat"]
    assert len(engine.scores(images)) == 3
    with pytest.raises(ConfigurationError):
        DeskClassifierEngine(ClassifierModel(model_id="tiny", other_labels=[]), cache_dir, device="cpu")


# --- deployments (plain classes; Ray is imported but never started) -----------------------------


def test_deployment_classes_construct_and_reconfigure(cache_dir: Path) -> None:
    from deployments.captioner import Captioner
    from deployments.desk_classifier import DeskClassifier

    preset = load_preset("tiny")
    captioner = Captioner.func_or_class(preset, str(cache_dir))
    captioner.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.05, "max_new_tokens": 12})
    assert captioner.info() | {"device": "?"} == {
        "model_id": "tiny",
        "device": "?",
        "dtype": "float32",
        "max_batch_size": 4,
        "batch_wait_timeout_s": 0.05,
        "max_new_tokens": 12,
    }
    assert captioner._caption_batch._get_max_batch_size() == 4
    classifier = DeskClassifier.func_or_class(preset, str(cache_dir))
    classifier.reconfigure({"max_batch_size": 2})
    assert classifier.info()["max_batch_size"] == 2
    for bad in ({"max_batch_size": 0}, {"batch_wait_timeout_s": -1}, {"max_batch_size": "8"}):
        with pytest.raises(ConfigurationError):
            classifier.reconfigure(bad)
