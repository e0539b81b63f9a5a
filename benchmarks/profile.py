"""Where the app's time goes under the peers load: py-spy samples the Ingress, TaskRunner and
Generator replicas while `benchmarks.peers`' Poisson load runs against serve_config.yaml.

    python -m benchmarks.profile [--rate 4 --requests 48 --steps 8 --size 64 --top 10] [--smoke]

First, the CPU seconds every process on the machine spent during the load, summed by role (each
Serve deployment's replicas, Ray's daemons, HAProxy, the load generator): what the model replicas
did not get. Then, for each replica: py-spy records its stacks (`--nonblocking`, so the replica never pauses) for the
load's span; the table lists the functions with the most samples on top of the stack (where the
process spends its time, waiting included: `select`/`epoll` is an idle event loop), and their
share of the samples. Needs py-spy (the bench extra) and permission to ptrace the replicas (the
same user; root in a container may need CAP_SYS_PTRACE).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_CACHE_DIR,
    REPO_ROOT,
    base_parser,
    bench_run,
    cpu_seconds,
    deploy_and_wait,
    local_ray,
    print_table,
    short_tmpdir,
)
from benchmarks.peers import many_clients, run_rate
from testbed.harness import free_port, local_app_config, preset_file
from testbed.replicas import replica_names, replica_pid

NAME = "profile"
DEPLOYMENTS = ("Ingress", "TaskRunner", "Generator")


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=4.0, help="offered req/s (Poisson)")
    parser.add_argument("--requests", type=int, default=48, help="arrivals")
    parser.add_argument("--steps", type=int, default=8, help="diffusion steps per image")
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--top", type=int, default=10, help="functions listed per replica")
    parser.add_argument("--batching", choices=["step", "static"], default="step", help="the Generator's batching")
    parser.add_argument("--model-cache-dir", type=Path, default=DEFAULT_CACHE_DIR / "models")
    args = parser.parse_args()
    args.seed, args.timeout_s, args.slo_s = 0, 120.0, 5.0
    if args.smoke:
        args.requests, args.top = 8, 5
    return args


def top_frames(raw: str, top: int) -> tuple[int, list[tuple[str, int]]]:
    """(samples, the `top` functions most often on top of the stack) from py-spy's raw output:
    one line per distinct stack, frames separated by ';', then its count."""
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        leaves[stack.rsplit(";", 1)[-1].strip()] += int(count)
    return total, leaves.most_common(top)


def _py_spy() -> str:
    """py-spy on PATH, else beside this interpreter (a virtualenv run without activating it)."""
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def measure(args: Any, run: Any) -> dict[str, Any]:
    root = short_tmpdir("igb-prof-")
    cache = args.model_cache_dir.expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with local_ray("igb-profr-"):
            port = free_port()
            (root / "data").mkdir()
            config = local_app_config(
                port,
                root / "data",
                REPO_ROOT / "serve_config.yaml",
                preset=str(preset_file(root, "tiny")),
                model_cache_dir=cache,
            )
            many_clients(config)
            generator = next(d for d in config["applications"][0]["deployments"] if d["name"] == "Generator")
            generator["user_config"] = {**generator.get("user_config", {}), "batching": args.batching}
            url = deploy_and_wait(config, port, run)
            app = config["applications"][0]["name"]
            pids = {name: replica_pid(replica_names(app, name)[0]) for name in DEPLOYMENTS}
            span = args.requests / args.rate + 5
            recorders = {
                name: subprocess.Popen(
                    [_py_spy(), "record", "--pid", str(pid), "--duration", str(int(span)), "--rate", "100"]
                    + ["--format", "raw", "--nonblocking", "--output", str(root / f"{name}.txt")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for name, pid in pids.items()
            }
            time.sleep(1.0)  # py-spy attached
            before = cpu_seconds()
            load = asyncio.run(run_rate(url, "imagegen-serve", args, args.rate))
            after = cpu_seconds()
            cpu = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
            profiles: dict[str, Any] = {}
            for name, proc in recorders.items():
                _, err = proc.communicate(timeout=span + 60)
                raw = (root / f"{name}.txt").read_text() if (root / f"{name}.txt").exists() else ""
                total, frames = top_frames(raw, args.top)
                profiles[name] = {"samples": total, "top": frames, "py_spy": err.decode()[-300:] if not raw else ""}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "load": load,
        "profiles": profiles,
        "cpu_s": dict(sorted(((k, v) for k, v in cpu.items() if v > 0.05), key=lambda kv: -kv[1])),
    }


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args) as run:
        run.results = measure(args, run)
        rows = [
            [name, f"{count / max(1, data['samples']):.0%}", frame[:110]]
            for name, data in run.results["profiles"].items()
            for frame, count in data["top"]
        ]
        load = run.results["load"]
        span = load["span_s"]
        print_table(
            f"CPU seconds per process role during the load ({span:.1f} s on {os.cpu_count()} cores)",
            ["role", "cpu s", "cores"],
            [[role, f"{sec:.2f}", f"{sec / span:.2f}"] for role, sec in run.results["cpu_s"].items()],
            run,
        )
        print_table(
            f"py-spy, {args.requests} requests at {args.rate:g}/s ({args.batching} batching): "
            f"p50 {load['latency']['p50_ms']:.0f} ms, {load['throughput_rps']:.2f} images/s; "
            "top of stack per replica",
            ["replica", "samples", "function (file:line)"],
            rows,
            run,
        )


if __name__ == "__main__":
    main()
