"""Build the tiny preset's models once before `serve run`, so replicas only load them.

Replicas would build them too (the builders are idempotent and race-safe), but doing it up
front keeps the first start quick and its errors readable. Presets with real model ids need no
build: their weights come from a hub id or a local folder.

It also writes the app's bytecode (`__pycache__`): with PYTHONDONTWRITEBYTECODE set, as on many
CI and container images, every replica process would otherwise compile the app's modules from
source again (about 1 s of CPU each, seven replicas on two cores). A stale .pyc is never used:
Python checks it against the source's mtime.

    python -m serve_app.models.prebuild --config serve_config.yaml
"""

from __future__ import annotations

import argparse
import compileall
import time
from pathlib import Path

import yaml

from serve_app.config import AppArgs
from serve_app.presets import Preset, load_preset


def prebuild(preset: Preset, cache_dir: Path) -> list[Path]:
    from serve_app.models.tiny import ensure_tiny_ip2p, ensure_tiny_lora, ensure_tiny_sd
    from serve_app.models.tiny_marian import ensure_tiny_marian
    from serve_app.models.tiny_vision import ensure_tiny_blip, ensure_tiny_clip

    built: list[Path] = []
    if preset.generator.model_id == "tiny":
        built.append(ensure_tiny_sd(cache_dir))
        for lora in preset.loras:
            if lora.path.startswith("tiny:"):
                built.append(ensure_tiny_lora(cache_dir, int(lora.path.split(":", 1)[1])))
    if preset.editor.model_id == "tiny":
        built.append(ensure_tiny_ip2p(cache_dir))
    if preset.captioner.model_id == "tiny":
        built.append(ensure_tiny_blip(cache_dir))
    if preset.classifier.model_id == "tiny":
        built.append(ensure_tiny_clip(cache_dir))
    if preset.translator.model_id == "tiny":
        built.append(ensure_tiny_marian(cache_dir))
    return built


APP_PACKAGES = ("serve_app", "deployments")


def compile_app(root: Path = Path(__file__).resolve().parents[2]) -> bool:
    """Write the bytecode of the app's packages; True when every module compiled."""
    return all(compileall.compile_dir(root / name, quiet=1) for name in APP_PACKAGES if (root / name).is_dir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="serve_config.yaml", help="serve config whose apps to prebuild")
    opts = parser.parse_args()
    started = time.perf_counter()
    if not compile_app():
        raise SystemExit("[prebuild] some modules of the app do not compile")
    print(f"[prebuild] bytecode of {', '.join(APP_PACKAGES)} in {time.perf_counter() - started:.1f}s")
    config = yaml.safe_load(Path(opts.config).read_text(encoding="utf-8"))
    for app in config.get("applications", []):
        args = AppArgs.model_validate(app.get("args") or {}).resolved()
        started = time.perf_counter()
        paths = prebuild(load_preset(args.preset), Path(args.model_cache_dir or ""))
        names = ", ".join(p.name for p in paths) or "nothing (real model ids)"
        print(f"[prebuild] {app.get('name')}: preset {args.preset}: {names} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
