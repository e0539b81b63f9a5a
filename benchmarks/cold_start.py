"""Cold start: from `serve run <config>` to the first 200 on /healthcheck and to the first finished task.

    python -m benchmarks.cold_start [--presets tiny sd15 sdxl --modes cold prebuilt --repeats 1] [--smoke]

For each preset that can run here (every model `tiny` or a local folder; the others are reported as
skipped with the reason) and each mode:
- cold: an empty data_dir, so the replicas build the tiny models while they start;
- prebuilt: `python -m serve_app.models.prebuild --config <file>` first (timed on its own).

Each run writes serve_config.yaml with a free port on 127.0.0.1 and a temp data_dir to a temp file,
starts `serve run <file> --address local` (a new Ray cluster of its own, RAY_TMPDIR private, so
it never attaches to another cluster), then stops it with SIGINT; processes that still mention its
private temp dir are killed by pid (never `ray stop`, which would stop everybody's clusters).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks._desk import form_fields, submit_and_wait
from benchmarks.common import (
    DEFAULT_CACHE_DIR,
    REPO_ROOT,
    BenchRun,
    base_parser,
    bench_env,
    bench_run,
    cpu_seconds,
    kill_pids,
    pids_mentioning,
    print_table,
    short_tmpdir,
    stop_process,
)
from serve_app.presets import load_preset
from testbed.harness import desk_photo, free_port, generator_replicas, local_app_config, preset_file

NAME = "cold_start"
PRESETS = ("tiny", "sd15", "sdxl")
MODES = ("cold", "prebuilt")
POLL_S = 0.5  # between /healthcheck probes: each one costs the 2 cores a little of the start it measures


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), help="presets to try")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="model cache modes")
    parser.add_argument("--repeats", type=int, default=1, help="starts per preset and mode")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "serve_config.yaml", help="base serve config")
    parser.add_argument("--steps", type=int, default=4, help="num_inference_steps of the first task")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="give up on a start after this")
    parser.add_argument("--torch-threads", type=int, default=None, help="IMAGEGEN_TORCH_THREADS of the server")
    parser.add_argument("--desk-threshold", type=float, default=0.0, help="desk threshold (0: every photo is a desk)")
    parser.add_argument(
        "--model-cache-dir",
        type=Path,
        default=None,
        help="a persistent model cache (default: inside the temp data_dir)",
    )
    parser.add_argument("--keep-shutdown-defaults", action="store_true", help="do not shorten graceful shutdown")
    args = parser.parse_args()
    if args.smoke:  # one start, models from the persistent bench cache (prebuild is then a no-op)
        args.presets, args.modes, args.repeats, args.steps = ["tiny"], ["prebuilt"], 1, 2
        args.torch_threads = args.torch_threads or 1
        args.model_cache_dir = args.model_cache_dir or DEFAULT_CACHE_DIR / "models"
    return args


def why_not_runnable(preset_name: str) -> str | None:
    """None when every model of the preset is `tiny` or a local folder; else why it cannot run here."""
    preset = load_preset(preset_name)
    for role in ("generator", "captioner", "classifier"):
        model_id = getattr(preset, role).model_id
        if model_id != "tiny" and not Path(model_id).expanduser().is_dir():
            return (
                f"{role} {model_id!r} is a hub id: its weights must be downloaded (no network here) "
                "and sd15/sdxl need a GPU to start in reasonable time"
            )
    return None


def one_start(args: Any, preset: str, mode: str) -> dict[str, Any]:
    """One `serve run` from process start to the first finished task, then a clean stop."""
    root = short_tmpdir("igb-cs-")
    port = free_port()
    data_dir = root / "data"
    data_dir.mkdir()
    threshold = None if args.desk_threshold < 0 else args.desk_threshold
    preset_path = str(preset_file(root, preset, threshold))
    use_cache = args.model_cache_dir is not None and mode != "cold"  # cold always starts from an empty cache
    cache = args.model_cache_dir.expanduser().resolve() if use_cache else None
    config = local_app_config(
        port,
        data_dir,
        args.config,
        preset=preset_path,
        fast_shutdown=not args.keep_shutdown_defaults,
        model_cache_dir=cache,
    )
    if args.smoke:
        generator_replicas(config, 1)
    config_path = root / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    extra = {"RAY_TMPDIR": str(root / "r"), "RAY_ADDRESS": "local"}
    if args.torch_threads:
        extra["IMAGEGEN_TORCH_THREADS"] = str(args.torch_threads)
    if not args.keep_shutdown_defaults:  # as scripts/run.sh: not direct ingress's 30 s drain at the stop
        drain = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
        extra[drain] = os.environ.get(drain, "2")
    env = bench_env(**extra)
    (root / "r").mkdir()
    result: dict[str, Any] = {"preset": preset, "mode": mode, "model_cache": str(cache or data_dir / "models")}
    log_path = root / "serve-run.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        if mode == "prebuilt":
            started = time.perf_counter()
            cmd = [sys.executable, "-m", "serve_app.models.prebuild", "--config", str(config_path)]
            subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=args.timeout_s)
            result["prebuild_s"] = time.perf_counter() - started
        serve_bin = Path(sys.executable).with_name("serve")  # a venv's; else Ray's CLI from the package
        cli = [str(serve_bin)] if serve_bin.exists() else [sys.executable, "-m", "benchmarks._serve_cli"]
        cmd = [*cli, "run", str(config_path), "--address", "local"]
        with open(log_path, "wb") as log:
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            result["ready_s"] = _wait_healthy(f"{base}/healthcheck", started, args.timeout_s, proc)
            result["to_healthy_s"] = time.perf_counter() - started
            result["cpu_s_to_healthy"] = cpu_spent(cpu_before, cpu_seconds())
            outcome = asyncio.run(_first_task(base, args))
            result["to_first_task_s"] = time.perf_counter() - started
            result["first_task_s"] = outcome.finished_s
            result["first_task_status"] = outcome.final_status
            if outcome.error:
                result["first_task_error"] = outcome.error
            stopped = time.perf_counter()
            result["exit_code"] = stop_process(proc, signal.SIGINT, timeout_s=60)
            result["shutdown_s"] = time.perf_counter() - stopped
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        if log_path.exists():
            result["log_tail"] = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
    finally:
        if proc is not None:
            stop_process(proc, signal.SIGINT, timeout_s=30)
        leftovers = pids_mentioning(str(root))
        result["leftover_processes_killed"] = len(leftovers)
        kill_pids(leftovers)
        shutil.rmtree(root, ignore_errors=True)
    return result


MODEL_ROLES = ("Generator", "Captioner", "DeskClassifier", "Editor", "Translator")
APP_ROLES = ("Ingress", "TaskRunner", "ShoppingSearch")


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process role spent between two `cpu_seconds()` snapshots, largest first
    (processes that exited meanwhile are missing: a lower bound)."""
    spent = {role: round(after[role] - before.get(role, 0.0), 2) for role in after}
    return dict(sorted(((k, v) for k, v in spent.items() if v >= 0.05), key=lambda kv: -kv[1]))


def cpu_groups(spent: dict[str, float]) -> tuple[float, float, float, float]:
    """(all, model replicas, the app's other replicas, everything else: Ray, Serve, this process)."""
    models = sum(v for k, v in spent.items() if k in MODEL_ROLES)
    app = sum(v for k, v in spent.items() if k in APP_ROLES)
    total = sum(spent.values())
    return total, models, app, total - models - app


def _wait_healthy(url: str, started: float, timeout_s: float, proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """Poll /healthcheck until 200; return when each deployment was first reported ready (seconds
    from `started`), and when the HTTP proxy first answered at all (`proxy`)."""
    ready: dict[str, float] = {}
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"serve run exited with {proc.returncode} before {url} answered 200")
        try:
            response = httpx.get(url, timeout=10)
        except httpx.HTTPError:
            time.sleep(POLL_S)
            continue
        now = round(time.perf_counter() - started, 2)
        ready.setdefault("proxy", now)
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
            for name, state in (body.get("deployments") or {}).items():
                if state == "ready":
                    ready.setdefault(name, now)
        if response.status_code == 200:
            return ready
        time.sleep(POLL_S)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")


async def _first_task(base: str, args: Any) -> Any:
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as client:
        fields = form_fields(args.steps, 64, seed=1)
        return await submit_and_wait(client, fields, desk_photo(), poll_interval_s=0.1, timeout_s=args.timeout_s)


def report(run: BenchRun, runs: list[dict[str, Any]]) -> None:
    rows = [
        [
            r["preset"],
            r["mode"],
            r.get("prebuild_s"),
            r.get("to_healthy_s"),
            r.get("to_first_task_s"),
            r.get("first_task_s"),
            r.get("first_task_status") or r.get("error", "-")[:40],
            r.get("shutdown_s"),
        ]
        for r in runs
    ]
    print_table(
        "Cold start of `serve run` (seconds from process start)",
        ["preset", "mode", "prebuild", "to /healthcheck 200", "to 1st task done", "1st task", "status", "shutdown"],
        rows,
        run,
    )
    names = list(dict.fromkeys(name for r in runs for name in r.get("ready_s", {})))
    if names:
        print_table(
            "First reported ready (seconds from process start; `proxy`: the first HTTP answer)",
            ["preset", "mode", *names],
            [[r["preset"], r["mode"], *(r.get("ready_s", {}).get(name) for name in names)] for r in runs],
            run,
        )
    cores = os.cpu_count() or 1
    spent = [(r, cpu_groups(r["cpu_s_to_healthy"])) for r in runs if r.get("cpu_s_to_healthy")]
    if spent:
        print_table(
            f"CPU seconds until the first 200, by whom (processes alive then); `floor`: all of it / {cores} cores",
            ["preset", "mode", "to 200 s", "cpu s", "model replicas", "other replicas", "Ray, Serve, rest", "floor s"],
            [[r["preset"], r["mode"], r["to_healthy_s"], *groups, groups[0] / cores] for r, groups in spent],
            run,
        )
    for preset, reason in run.skipped.items():
        print(f"skipped {preset}: {reason}")


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args, quiet=False) as run:
        run.notes.append(
            "`serve run` always starts Ray's dashboard; the in-process starts of the other benchmarks do not."
        )
        runs: list[dict[str, Any]] = []
        for preset in args.presets:
            reason = why_not_runnable(preset)
            if reason:
                run.skipped[preset] = reason
                continue
            for mode in args.modes:
                for attempt in range(args.repeats):
                    print(f"starting {preset} ({mode}, run {attempt + 1}/{args.repeats})...", flush=True)
                    result = one_start(args, preset, mode)
                    print(f"  { ({k: v for k, v in result.items() if k != 'log_tail'}) }", flush=True)
                    runs.append(result)
        run.results["runs"] = runs
        report(run, runs)
    if any("error" in r for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
