"""Tiny offline models: the trained CLIP tokenizer, the tiny SD pipeline and tiny LoRAs.

The model cache lives under pytest's session base temp, so every module of the session that uses
it shares one build (and re-uses exercise the idempotent path).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest
import torch

from serve_app.models import tiny
from serve_app.models.cache import BUILD_VERSION, COMPLETE_MARKER, build_atomically
from serve_app.models.tokenizer import DESK_WORDS, MODEL_MAX_LENGTH, build_tiny_clip_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache_dir(tiny_cache_dir: Path) -> Path:
    return tiny_cache_dir


@pytest.fixture(scope="module")
def sd_folder(cache_dir: Path) -> Path:
    return tiny.ensure_tiny_sd(cache_dir)


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_loads_and_tokenizes_desk_words(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    build_tiny_clip_tokenizer(tmp_path / "tok")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / "tok" / name).is_file()
    tok = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.model_max_length == MODEL_MAX_LENGTH
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id == tok.eos_token_id

    # Desk words are whole tokens; decoding gives the (normalised) text back.
    text = "A cozy wooden desk with a monitor, keyboard and mouse; cozywood style"
    ids = tok(text).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == tok.bos_token and tokens[-1] == tok.eos_token
    for word in ("cozy", "wooden", "desk", "monitor", "keyboard", "mouse", "cozywood", "style"):
        assert f"{word}</w>" in tokens
    assert all(len(tok.tokenize(word)) == 1 for word in DESK_WORDS)
    assert (
        tok.decode(ids, skip_special_tokens=True)
        == "a cozy wooden desk with a monitor , keyboard and mouse ; cozywood style"
    )

    # Any text (non-English, emoji) still tokenizes, through the byte fallback; padding is to 77.
    assert tok.unk_token_id not in tok("한국어 책상 😀").input_ids[1:-1]
    assert len(tok("x", padding="max_length").input_ids) == MODEL_MAX_LENGTH

    # The slow-style files alone (vocab.json + merges.txt) give the same ids.
    slow_dir = tmp_path / "slow"
    slow_dir.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (slow_dir / name).write_bytes((tmp_path / "tok" / name).read_bytes())
    assert CLIPTokenizer.from_pretrained(slow_dir)(text).input_ids == ids


def test_tokenizer_training_is_deterministic_across_processes(tmp_path: Path) -> None:
    """The trainer numbers symbols in hash-map order unless told otherwise: check two processes agree."""
    code = (
        "import hashlib, json; from serve_app.models.tokenizer import train_clip_bpe; "
        "v, m = train_clip_bpe(); print(hashlib.sha256(json.dumps([v, m]).encode()).hexdigest())"
    )
    other_process = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    from serve_app.models.tokenizer import train_clip_bpe

    vocab, merges = train_clip_bpe()
    assert hashlib.sha256(json.dumps([vocab, merges]).encode()).hexdigest() == other_process
    # CLIP's layout: contiguous ids, every merge's parts in the vocabulary, specials last.
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert all(a in vocab and b in vocab for a, b in (m.split(" ") for m in merges))
    assert list(vocab)[-2:] == ["<|startoftext|>", "<|endoftext|>"]


# --- tiny SD -----------------------------------------------------------------------------------


def test_tiny_sd_builds_once_and_loads(sd_folder: Path, cache_dir: Path) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    marker = sd_folder / COMPLETE_MARKER
    built_at = marker.read_text()
    assert tiny.ensure_tiny_sd(cache_dir) == sd_folder
    assert marker.read_text() == built_at  # not rebuilt
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no temp folders left

    pipe = StableDiffusionPipeline.from_pretrained(sd_folder)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.safety_checker is None
    assert pipe.unet.config.cross_attention_dim == 32
    assert tuple(pipe.unet.config.block_out_channels) == (32, 64)
    assert pipe.text_encoder.config.vocab_size >= len(pipe.tokenizer)
    assert pipe.text_encoder.config.eos_token_id == pipe.tokenizer.eos_token_id
    assert pipe.tokenizer.model_max_length == MODEL_MAX_LENGTH


def test_tiny_lora_builds_once(sd_folder: Path, cache_dir: Path) -> None:
    from safetensors.torch import load_file

    folder = tiny.ensure_tiny_lora(cache_dir, 1)
    assert folder == cache_dir / "tiny-lora-1"
    weights = folder / tiny.LORA_WEIGHT_NAME
    state = load_file(weights)
    assert state and all(key.startswith("unet.") for key in state)
    assert {tuple(t.shape) for k, t in state.items() if k.endswith("lora.down.weight")} == {(4, 32), (4, 64)}
    assert {tuple(t.shape) for k, t in state.items() if k.endswith("lora.up.weight")} == {(64, 4)}
    mtime = weights.stat().st_mtime_ns
    assert tiny.ensure_tiny_lora(cache_dir, 1) == folder
    assert weights.stat().st_mtime_ns == mtime
    # Different seeds give different weights.
    other = load_file(tiny.ensure_tiny_lora(cache_dir, 2) / tiny.LORA_WEIGHT_NAME)
    key = next(iter(state))
    assert not torch.equal(state[key], other[key])


def test_parse_tiny_lora_path() -> None:
    assert tiny.parse_tiny_lora_path("tiny:7") == 7
    assert tiny.parse_tiny_lora_path("/models/lora") is None
    with pytest.raises(ValueError, match="tiny:<integer seed>"):
        tiny.parse_tiny_lora_path("tiny:abc")


# --- atomic builds -------------------------------------------------------------------------------


def test_build_atomically_races_use_one_winner(tmp_path: Path) -> None:
    """Concurrent builders all return the target; exactly one copy lands; no temp folder stays."""
    target = tmp_path / "thing"
    gate = threading.Barrier(4)
    results: list[Path] = []

    def build(folder: Path) -> None:
        (folder / "data.txt").write_text(threading.current_thread().name)

    def worker() -> None:
        gate.wait()
        results.append(build_atomically(target, build))

    threads = [threading.Thread(target=worker, name=f"builder-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [target] * 4
    assert (target / "data.txt").read_text().startswith("builder-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


def test_build_atomically_replaces_incomplete_folder(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    target.mkdir()
    (target / "half-written").write_text("x")  # no completion marker: a crashed build
    build_atomically(target, lambda folder: (folder / "data.txt").write_text("ok"))
    assert (target / "data.txt").read_text() == "ok"
    assert not (target / "half-written").exists()
    assert json.loads((target / COMPLETE_MARKER).read_text())["version"] == BUILD_VERSION


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_atomically(tmp_path / "thing", build)
    assert list(tmp_path.iterdir()) == []


def test_cli_prebuilds(cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Stand in for the vision builders (another module) so this test stays fast.
    fake_vision = types.ModuleType("serve_app.models.tiny_vision")
    fake_vision.ensure_tiny_blip = lambda cache: Path(cache) / "blip"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "serve_app.models.tiny_vision", fake_vision)
    monkeypatch.setattr("serve_app.models.tiny_vision", fake_vision, raising=False)
    tiny.main(["--cache-dir", str(cache_dir), "--lora-seeds", "1"])
    printed = capsys.readouterr().out.split()
    expected = ["tiny-sd", "tiny-instruct-pix2pix", "tiny-lora-1", "blip"]
    assert printed == [str(cache_dir / name) for name in expected]
    assert tiny._preset_lora_seeds("tiny") == [1, 2, 3]
