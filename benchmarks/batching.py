"""Images/s of the generator (or the editor) by batch size: a plain engine loop, then the Serve deployment.

    python -m benchmarks.batching [--sizes 1 2 4 8 16 --rounds 3 --steps 4 --size 64] [--smoke]
    python -m benchmarks.batching --model editor   # instruction edits: EditEngine / the Editor

- plain: one `SDEngine.generate` (`EditEngine.generate`) call with N specs per round (what one
  Serve batch runs);
- serve: the real `deployments.generator.Generator` (`deployments.editor.Editor`) with
  user_config max_batch_size=N and max_ongoing_requests >= N, fed N concurrent handle calls per
  round, so every batch is full.

Every request of a batch finishes when the batch does, so its latency is the batch's time;
"added" is the p50 latency at size N minus the p50 at the smallest size.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path
from typing import Any

from benchmarks._sd import make_edit_spec, make_editor, make_engine, make_spec, model_cache_dir
from benchmarks.common import (
    BenchRun,
    base_parser,
    bench_run,
    latency_stats,
    local_ray,
    print_table,
    run_with_handle,
    start_serve,
)

NAME = "batching"
ENGINES = {"generator": "SDEngine", "editor": "EditEngine (InstructPix2Pix)"}


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="max_batch_size values")
    parser.add_argument("--rounds", type=int, default=3, help="measured full batches per size")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per image")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale (CFG doubles the UNet batch)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (plain loop and replica)"
    )
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.05, help="Serve batch_wait_timeout_s")
    parser.add_argument("--cache-dir", type=Path, default=None, help="tiny model cache folder")
    parser.add_argument("--skip-serve", action="store_true", help="only the plain engine loop")
    parser.add_argument(
        "--model",
        choices=["generator", "editor"],
        default="generator",
        help="txt2img Generator or InstructPix2Pix Editor",
    )
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.rounds, args.steps, args.threads = [1, 2], 1, 2, 1
    return args


def _spec_maker(args: Any) -> Any:
    return make_edit_spec if args.model == "editor" else make_spec


def plain_loop(args: Any) -> dict[int, dict[str, Any]]:
    """Rounds of one generate() call with N specs, per batch size N."""
    make = make_editor if args.model == "editor" else make_engine
    engine = make(model_cache_dir(args.cache_dir), args.threads)
    spec = _spec_maker(args)
    results: dict[int, dict[str, Any]] = {}
    seed = 0
    for n in args.sizes:
        engine.generate([spec(seed + i, args.steps, args.size, args.guidance) for i in range(n)])  # warm-up
        times = []
        for _ in range(args.rounds):
            specs = [spec(seed + i, args.steps, args.size, args.guidance) for i in range(n)]
            seed += n
            started = time.perf_counter()
            outputs = engine.generate(specs)
            times.append(time.perf_counter() - started)
            assert len(outputs) == n
        results[n] = {"batch_times_s": times, "images_per_s": n * len(times) / sum(times)}
        print(f"plain  batch {n:>2}: {results[n]['images_per_s']:.2f} images/s")
    del engine
    gc.collect()
    return results


async def _serve_rounds(handle: Any, args: Any, n: int, seed: int) -> dict[str, Any]:
    async def one(spec: Any) -> tuple[float, int]:
        started = time.perf_counter()
        output = await handle.generate.remote(spec)
        return time.perf_counter() - started, output.batch_size

    spec = _spec_maker(args)

    async def round_(first_seed: int) -> tuple[float, list[tuple[float, int]]]:
        started = time.perf_counter()
        got = await asyncio.gather(*(one(spec(first_seed + i, args.steps, args.size, args.guidance)) for i in range(n)))
        return time.perf_counter() - started, list(got)

    await round_(seed)  # warm-up: the new batch size, the new shapes
    walls, latencies, batch_sizes = [], [], []
    for r in range(args.rounds):
        wall, got = await round_(seed + (r + 1) * n)
        walls.append(wall)
        latencies += [lat for lat, _ in got]
        batch_sizes += [b for _, b in got]
    return {
        "round_times_s": walls,
        "latencies_s": latencies,
        "images_per_s": n * len(walls) / sum(walls),
        "mean_observed_batch": sum(batch_sizes) / len(batch_sizes),
    }


def through_serve(args: Any) -> tuple[dict[int, dict[str, Any]], float]:
    """The Generator (Editor) deployment, reconfigured (user_config) to each max_batch_size in turn."""
    from ray import serve

    from deployments.editor import Editor
    from deployments.generator import Generator
    from serve_app.presets import load_preset

    deployment = Editor if args.model == "editor" else Generator

    cache = str(model_cache_dir(args.cache_dir))
    preset = load_preset("tiny")
    results: dict[int, dict[str, Any]] = {}
    with local_ray("igb-bat-", env={"IMAGEGEN_TORCH_THREADS": str(args.threads)}):
        start_serve(None)
        started = time.perf_counter()
        for n in args.sizes:
            app = deployment.options(
                max_ongoing_requests=max(args.sizes),
                max_queued_requests=-1,
                user_config={"max_batch_size": n, "batch_wait_timeout_s": args.batch_wait_timeout_s},
                ray_actor_options={"num_cpus": 1},
                graceful_shutdown_wait_loop_s=0.1,
                graceful_shutdown_timeout_s=1,
            ).bind(preset, cache)
            handle = serve.run(app, name="batching", route_prefix=None)  # user_config only: reconfigured in place
            if n == args.sizes[0]:
                startup_s = time.perf_counter() - started
            results[n] = run_with_handle(handle, lambda h, n=n: _serve_rounds(h, args, n, seed=10_000 * n))
            print(f"serve  batch {n:>2}: {results[n]['images_per_s']:.2f} images/s")
    return results, startup_s


def report(run: BenchRun, args: Any, plain: dict[int, dict[str, Any]], served: dict[int, dict[str, Any]]) -> None:
    base = args.sizes[0]
    rows = []
    for n in args.sizes:
        s = latency_stats(plain[n]["batch_times_s"])
        b = latency_stats(plain[base]["batch_times_s"])
        speedup = plain[n]["images_per_s"] / plain[base]["images_per_s"]
        rows.append([n, plain[n]["images_per_s"], speedup, s.p50_ms, s.p99_ms, s.p50_ms - b.p50_ms])
        plain[n]["latency"] = s.model_dump()
    print_table(
        f"Plain {ENGINES[args.model]} loop ({args.size}x{args.size}, {args.steps} steps, guidance {args.guidance}, "
        f"{args.threads} threads)",
        ["batch", "images/s", "x vs 1st", "latency p50 ms", "p99 ms", "added p50 ms"],
        rows,
        run,
    )
    if served:
        rows = []
        b = latency_stats(served[base]["latencies_s"])
        for n in args.sizes:
            s = latency_stats(served[n]["latencies_s"])
            speedup = served[n]["images_per_s"] / served[base]["images_per_s"]
            rows.append(
                [
                    n,
                    served[n]["images_per_s"],
                    speedup,
                    s.p50_ms,
                    s.p99_ms,
                    s.p50_ms - b.p50_ms,
                    served[n]["mean_observed_batch"],
                    served[n]["images_per_s"] / plain[n]["images_per_s"],
                ]
            )
            served[n]["latency"] = s.model_dump()
        print_table(
            f"Serve {args.model.capitalize()} deployment (N concurrent handle calls per round, max_batch_size=N)",
            ["batch", "images/s", "x vs 1st", "latency p50 ms", "p99 ms", "added p50 ms", "seen batch", "vs plain"],
            rows,
            run,
        )
    run.results |= {
        "plain": {str(n): v for n, v in plain.items()},
        "serve": {str(n): v for n, v in served.items()},
    }


def main() -> None:
    args = parse_args()
    with bench_run(NAME if args.model == "generator" else "edit_batching", args) as run:
        run.notes.append("Latency of a request = time until its batch finishes; the tiny model's images are noise.")
        plain = plain_loop(args)
        served: dict[int, dict[str, Any]] = {}
        if args.skip_serve:
            run.skipped["serve"] = "--skip-serve"
        else:
            served, run.results["serve_startup_s"] = through_serve(args)
        report(run, args, plain, served)


if __name__ == "__main__":
    main()
