"""Poisson arrivals at increasing request rates against the whole desk flow over HTTP.

    python -m benchmarks.load_sweep [--rates 0.5 1 2 4 --requests 12 --slo-s 10] [--url URL] [--smoke]

As serving benchmarks do it (vLLM's benchmark_serving, MLPerf's server scenario): for each rate,
`--requests` submits arrive with exponential gaps (seeded); each one is `POST /v1/generate` (a
synthetic desk photo, multipart) and then `GET /v1/result/{id}` every `--poll-interval-s` until
done/failed. A rate ends when all its tasks ended; the next rate starts on an idle server.

Without `--url` the app is started in-process from serve_config.yaml (like the integration tests'
conftest: a private Ray cluster without dashboard, a temp data_dir, a free port on 127.0.0.1; the
tiny preset with the desk threshold at `--desk-threshold`, 0 = every photo is a desk, so every task
runs the generator) and stopped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._desk import TaskOutcome, form_fields, submit_and_wait
from benchmarks.common import (
    DEFAULT_CACHE_DIR,
    REPO_ROOT,
    BenchRun,
    app_workspace,
    base_parser,
    bench_run,
    latency_stats,
    percentile,
    print_table,
    running_app,
)
from testbed.harness import desk_photo, generator_replicas, local_app_config, preset_file

NAME = "load_sweep"


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="target a running server (else start one in-process)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0], help="offered req/s")
    parser.add_argument("--requests", type=int, default=12, help="arrivals per rate")
    parser.add_argument("--slo-s", type=float, default=10.0, help="goodput counts tasks done within this (e2e)")
    parser.add_argument("--steps", type=int, default=8, help="num_inference_steps of each request")
    parser.add_argument("--size", type=int, default=64, help="height and width of each request")
    parser.add_argument("--poll-interval-s", type=float, default=0.25, help="GET /v1/result period per task")
    parser.add_argument("--task-timeout-s", type=float, default=180.0, help="give up on a task after this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "serve_config.yaml", help="in-process: config")
    parser.add_argument("--preset", default="tiny", help="in-process: preset to copy")
    parser.add_argument("--desk-threshold", type=float, default=0.0, help="in-process: desk threshold (-1: keep)")
    parser.add_argument("--torch-threads", type=int, default=None, help="in-process: IMAGEGEN_TORCH_THREADS")
    parser.add_argument(
        "--model-cache-dir", type=Path, default=DEFAULT_CACHE_DIR / "models", help="in-process: tiny model cache"
    )
    args = parser.parse_args()
    if args.smoke:
        args.rates, args.requests, args.steps, args.slo_s = [2.0], 3, 2, 30.0
        args.torch_threads = args.torch_threads or 1
    return args


async def run_rate(client: httpx.AsyncClient, args: Any, rate: float, photo: bytes) -> dict[str, Any]:
    """`args.requests` Poisson arrivals at `rate` req/s; waits for every task to end."""
    rng = random.Random(f"{args.seed}-{rate}")
    gaps = [rng.expovariate(rate) for _ in range(args.requests)]
    tasks: list[asyncio.Task[TaskOutcome]] = []
    started = time.perf_counter()
    next_at = started
    for index, gap in enumerate(gaps):
        next_at += gap
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        fields = form_fields(args.steps, args.size, seed=index)
        coro = submit_and_wait(client, fields, photo, args.poll_interval_s, args.task_timeout_s)
        tasks.append(asyncio.create_task(coro))
    outcomes = await asyncio.gather(*tasks)
    ended = time.perf_counter()
    return summarize(rate, args.slo_s, sum(gaps), ended - started, list(outcomes), started)


def summarize(
    rate: float, slo_s: float, arrival_window_s: float, span_s: float, outcomes: list[TaskOutcome], t0: float
) -> dict[str, Any]:
    """Per-rate numbers: offered and completed rates, e2e percentiles, errors, 503s, goodput."""
    done = [o for o in outcomes if o.final_status == "done" and o.finished_s is not None]
    e2e = [o.finished_s for o in done if o.finished_s is not None]
    good = [x for x in e2e if x <= slo_s]
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o.final_status or "none"] = statuses.get(o.final_status or "none", 0) + 1
    errors = sum(1 for o in outcomes if o.final_status in ("failed", "timeout", "error"))
    errors += sum(1 for o in outcomes if o.final_status == "rejected" and o.submit_status != 503)
    stats = latency_stats(e2e)
    accepted = [o.accepted_s for o in outcomes if o.accepted_s is not None and o.submit_status == 202]
    return {
        "rate": rate,
        "requests": len(outcomes),
        "offered_rps": len(outcomes) / arrival_window_s if arrival_window_s > 0 else float("nan"),
        "span_s": span_s,
        "completed": len(done),
        "completed_rps": len(done) / span_s if span_s > 0 else float("nan"),
        "e2e": stats.model_dump(),
        "submit_p50_ms": percentile([a * 1e3 for a in accepted], 50),
        "errors": errors,
        "rejected_503": sum(1 for o in outcomes if o.submit_status == 503),
        "generation_skipped": sum(1 for o in done if o.error and o.error.startswith("generation_skipped")),
        "slo_s": slo_s,
        "good": len(good),
        "goodput_rps": len(good) / span_s if span_s > 0 else float("nan"),
        "statuses": statuses,
        "error_samples": sorted({o.error for o in outcomes if o.error and o.final_status != "done"})[:5],
        "raw": [
            {
                "submitted_at_s": o.started - t0,
                "submit_status": o.submit_status,
                "final_status": o.final_status,
                "e2e_s": o.finished_s,
                "polls": o.polls,
            }
            for o in outcomes
        ],
    }


async def sweep(base_url: str, args: Any) -> list[dict[str, Any]]:
    photo = desk_photo()
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, limits=limits) as client:
        results = []
        for rate in args.rates:
            result = await run_rate(client, args, rate, photo)
            print(
                f"rate {rate:g}/s: {result['completed']}/{result['requests']} done, "
                f"p50 {result['e2e']['p50_ms']:.0f} ms, 503s {result['rejected_503']}, errors {result['errors']}"
            )
            results.append(result)
        return results


def report(run: BenchRun, args: Any, results: list[dict[str, Any]]) -> None:
    rows = [
        [
            r["rate"],
            r["offered_rps"],
            r["completed"],
            r["completed_rps"],
            r["e2e"]["p50_ms"] / 1e3,
            r["e2e"]["p90_ms"] / 1e3,
            r["e2e"]["p99_ms"] / 1e3,
            r["errors"],
            r["rejected_503"],
            r["goodput_rps"],
            f"{r['good']}/{r['requests']}",
        ]
        for r in results
    ]
    print_table(
        f"Desk flow under Poisson load ({args.requests} requests per rate, {args.steps} steps, "
        f"{args.size}x{args.size}, SLO {args.slo_s:g} s)",
        ["rate", "offered/s", "done", "done/s", "p50 s", "p90 s", "p99 s", "errors", "503s", "goodput/s", "in SLO"],
        rows,
        run,
    )
    run.results["rates"] = results


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args) as run:
        if args.url:
            run.results["target"] = args.url
            results = asyncio.run(sweep(args.url.rstrip("/"), args))
        else:
            env = {"IMAGEGEN_TORCH_THREADS": str(args.torch_threads)} if args.torch_threads else {}
            with app_workspace("igb-ls-") as ws:
                threshold = None if args.desk_threshold < 0 else args.desk_threshold
                preset = str(preset_file(ws.root, args.preset, threshold))
                cache = args.model_cache_dir.expanduser().resolve()
                config = local_app_config(ws.port, ws.data_dir, args.config, preset=preset, model_cache_dir=cache)
                if args.smoke:
                    generator_replicas(config, 1)
                with running_app(config, ws.port, run, "igb-lsr-", env) as url:
                    run.results["target"] = f"in-process {args.config.name}, preset {args.preset}"
                    results = asyncio.run(sweep(url, args))
            run.notes.append(
                f"In-process server; IMAGEGEN_TORCH_THREADS={os.environ.get('IMAGEGEN_TORCH_THREADS', 'unset')}; "
                f"desk threshold {args.desk_threshold:g}; load generator on the same machine."
            )
        report(run, args, results)


if __name__ == "__main__":
    main()
