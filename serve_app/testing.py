"""Run this app in-process the way `serve run serve_config.yaml` does, for tests and benchmarks.

One place for what the integration tests and the benchmarks both need: a free port, the serve
config with local overrides, a preset copy with another desk threshold, the deploy itself
(serve_start + deploy_apps of the YAML's schema), a readiness wait, and a synthetic desk photo.
"""

from __future__ import annotations

import copy
import io
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from serve_app.paths import CONFIGS_DIR, REPO_ROOT


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_serve_config(path: Path | str | None = None) -> dict[str, Any]:
    """serve_config.yaml (or `path`) as a dict."""
    return yaml.safe_load(Path(path or REPO_ROOT / "serve_config.yaml").read_text(encoding="utf-8"))


def local_app_config(
    port: int,
    data_dir: Path,
    config_path: Path | str | None = None,
    preset: str | None = None,
    fast_shutdown: bool = True,
    model_cache_dir: Path | None = None,
) -> dict[str, Any]:
    """The serve config with HTTP on 127.0.0.1:`port`, a private data_dir, optionally another preset/model cache."""
    config = copy.deepcopy(load_serve_config(config_path))
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    for app in config["applications"]:
        args = app.setdefault("args", {})
        args["data_dir"] = str(data_dir)
        args["public_base_url"] = f"http://127.0.0.1:{port}"
        if preset is not None:
            args["preset"] = preset
        if model_cache_dir is not None:
            args["model_cache_dir"] = str(model_cache_dir)
        if fast_shutdown:
            for deployment in app.get("deployments", []):
                deployment.setdefault("graceful_shutdown_wait_loop_s", 0.1)
                deployment.setdefault("graceful_shutdown_timeout_s", 1)
    return config


def preset_file(folder: Path, base: str = "tiny", desk_threshold: float | None = None, name: str | None = None) -> Path:
    """A copy of preset `base` in `folder` (optionally with another desk threshold); its path."""
    data = yaml.safe_load((CONFIGS_DIR / "presets" / f"{base}.yaml").read_text(encoding="utf-8"))
    if desk_threshold is not None:
        data["name"] = f"{base}-bench"
        data["classifier"]["threshold"] = desk_threshold
    if name is not None:
        data["name"] = name
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def deploy_config(config: dict[str, Any]) -> None:
    """Deploy a serve config dict the way `serve run config.yaml` does (serve_start + deploy_apps)."""
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    client.deploy_apps(schema, _blocking=False)


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen[Any] | None = None) -> float:
    """Poll `url` until it answers 200; return the seconds waited. Fails if `proc` exits first."""
    import httpx

    started = time.perf_counter()
    last = ""
    while time.perf_counter() - started < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered: {last}")
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return time.perf_counter() - started
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s: {last}")


def desk_photo(width: int = 96, height: int = 80, seed: int = 0) -> bytes:
    """A synthetic JPEG 'desk': a wooden surface, a dark monitor, a keyboard bar, some noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = (200, 200, 210)
    pixels[height // 2 :, :] = (150, 100, 60)
    pixels[height // 8 : height // 2, width // 3 : 2 * width // 3] = (20, 20, 25)
    pixels[5 * height // 8 : 5 * height // 8 + 8, width // 4 : 3 * width // 4] = (60, 60, 60)
    noisy = np.clip(pixels.astype(int) + rng.integers(-8, 8, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG")
    return buffer.getvalue()
