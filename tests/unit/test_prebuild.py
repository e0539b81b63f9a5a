"""`python -m serve_app.models.prebuild`: every tiny model a preset names, and the app's bytecode."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from serve_app.models.prebuild import compile_app, prebuild
from serve_app.presets import load_preset


def test_prebuild_builds_every_tiny_model_of_the_preset(tiny_cache_dir: Path) -> None:
    built = prebuild(load_preset("tiny"), tiny_cache_dir)
    # The generator and its tiny LoRAs, the editor, the captioner, the classifier and the
    # translator: a replica of any of them then only loads.
    assert [path.name for path in built] == [
        "tiny-sd",
        "tiny-lora-1",
        "tiny-lora-2",
        "tiny-lora-3",
        "tiny-instruct-pix2pix",
        "tiny-blip",
        "tiny-clip",
        "tiny-marian",
    ]
    assert all(path.is_dir() and any(path.iterdir()) for path in built)


def test_compile_app_writes_bytecode_python_uses(tmp_path: Path) -> None:
    package = tmp_path / "serve_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 41 + 1\n")
    assert compile_app(tmp_path)
    cached = Path(importlib.util.cache_from_source(str(package / "mod.py")))
    assert cached.is_file()
    (package / "broken.py").write_text("def (:\n")
    assert not compile_app(tmp_path)
