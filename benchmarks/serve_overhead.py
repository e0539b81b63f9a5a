"""Serve overhead vs a bare FastAPI server, side by side under the same closed-loop load.

    python -m benchmarks.serve_overhead [--concurrency 16 --requests 400] [--smoke]

Targets (all on 127.0.0.1, measured in interleaved rounds so drift hits them alike):
- bare: FastAPI under uvicorn in a subprocess, the same work in-process;
- serve-default / serve-tuned: the same routes behind Serve's proxy and an ingress deployment
  (see benchmarks/_overhead_apps.py for what differs).

Routes: /noop (ingress only), /hop (ingress -> 1 deployment), /model (ingress -> tiny MLP),
/chain (ingress -> A -> B -> C -> D). Added latency = Serve's percentile minus bare's percentile.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import httpx

from benchmarks.common import (
    REPO_ROOT,
    BenchRun,
    LoadOutcome,
    base_parser,
    bench_env,
    bench_run,
    closed_loop,
    latency_stats,
    local_ray,
    print_table,
    start_serve,
    stop_process,
)
from testbed.harness import free_port, wait_http_ok

NAME = "serve_overhead"
ROUTES = ("noop", "hop", "model", "chain")
VARIANTS = ("default", "tuned")
CHAIN_HOPS = 4


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (closed loop)")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per route and target")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds the requests are split into")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured requests per route and target")
    parser.add_argument("--peak-concurrency", type=int, nargs="+", default=[4, 16, 64], help="levels for peak req/s")
    parser.add_argument("--peak-requests", type=int, default=400, help="requests per peak level (on /noop)")
    parser.add_argument("--tuned-max-ongoing", type=int, default=64, help="max_ongoing_requests of the tuned app")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time cap of one load run")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="Serve apps to run")
    args = parser.parse_args()
    if args.smoke:  # one Serve app: 6 replicas start in ~15 s on 2 cores instead of ~30 s for 12
        args.concurrency, args.requests, args.rounds, args.warmup = 4, 24, 1, 4
        args.peak_concurrency, args.peak_requests, args.max_seconds = [8], 40, 15.0
        args.variants = ["tuned"]
    args.targets = ["bare", *[f"serve-{v}" for v in args.variants]]
    return args


async def _load(client: httpx.AsyncClient, url: str, concurrency: int, total: int, max_s: float) -> LoadOutcome:
    async def call() -> int:
        response = await client.get(url)
        return response.status_code

    return await closed_loop(call, concurrency, total, max_s)


async def measure(args: Any, bases: dict[str, str]) -> dict[str, Any]:
    """Latency per route and target, then peak req/s of /noop per concurrency level."""
    targets: list[str] = args.targets
    connections = max([*args.peak_concurrency, args.concurrency])
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=None)
    clients = {t: httpx.AsyncClient(base_url=bases[t], timeout=30.0, limits=limits) for t in targets}
    try:
        for route in ROUTES:  # warm up every path (connections, replicas' first calls)
            for target in targets:
                await _load(clients[target], f"/{route}", args.concurrency, args.warmup, args.max_seconds)
        samples: dict[str, dict[str, LoadOutcome]] = {r: {t: LoadOutcome() for t in targets} for r in ROUTES}
        per_round = max(1, args.requests // args.rounds)
        for round_index in range(args.rounds):
            order = targets[round_index % len(targets) :] + targets[: round_index % len(targets)]
            for route in ROUTES:
                for target in order:
                    got = await _load(clients[target], f"/{route}", args.concurrency, per_round, args.max_seconds)
                    acc = samples[route][target]
                    acc.latencies_s += got.latencies_s
                    acc.statuses.update(got.statuses)
                    acc.elapsed_s += got.elapsed_s
        peak: dict[str, dict[int, float]] = {t: {} for t in targets}
        for level in args.peak_concurrency:
            for target in targets:
                got = await _load(clients[target], "/noop", level, args.peak_requests, args.max_seconds)
                peak[target][level] = got.throughput
    finally:
        for client in clients.values():
            await client.aclose()
    return {"samples": samples, "peak": peak}


def report(run: BenchRun, args: Any, measured: dict[str, Any]) -> None:
    samples: dict[str, dict[str, LoadOutcome]] = measured["samples"]
    peak: dict[str, dict[int, float]] = measured["peak"]
    targets: list[str] = args.targets
    stats = {r: {t: latency_stats(samples[r][t].latencies_s) for t in targets} for r in ROUTES}
    latency_rows = []
    for route in ROUTES:
        for target in targets:
            s, o = stats[route][target], samples[route][target]
            latency_rows.append([route, target, s.n, s.p50_ms, s.p90_ms, s.p99_ms, o.throughput, o.errors])
    print_table(
        f"Latency per route (closed loop, concurrency {args.concurrency}, ms)",
        ["route", "target", "n", "p50", "p90", "p99", "req/s", "errors"],
        latency_rows,
        run,
    )

    added_rows = []
    added: dict[str, dict[str, dict[str, float]]] = {}
    for target in targets[1:]:
        added[target] = {}
        for route in ROUTES:
            a50 = stats[route][target].p50_ms - stats[route]["bare"].p50_ms
            a99 = stats[route][target].p99_ms - stats[route]["bare"].p99_ms
            added[target][route] = {"added_p50_ms": a50, "added_p99_ms": a99}
            added_rows.append([target, route, a50, a99])
        # What one handle hop costs on top of the ingress alone.
        hop50 = stats["hop"][target].p50_ms - stats["noop"][target].p50_ms
        hop99 = stats["hop"][target].p99_ms - stats["noop"][target].p99_ms
        chain50 = (stats["chain"][target].p50_ms - stats["noop"][target].p50_ms) / CHAIN_HOPS
        chain99 = (stats["chain"][target].p99_ms - stats["noop"][target].p99_ms) / CHAIN_HOPS
        added[target]["per_hop"] = {"added_p50_ms": hop50, "added_p99_ms": hop99}
        added[target]["per_hop_in_chain"] = {"added_p50_ms": chain50, "added_p99_ms": chain99}
        added_rows.append([target, "1 hop (hop - noop)", hop50, hop99])
        added_rows.append([target, "per hop in chain ((chain - noop)/4)", chain50, chain99])
    print_table(
        "Added latency vs bare FastAPI (Serve percentile - bare percentile, ms)",
        ["target", "what", "added p50", "added p99"],
        added_rows,
        run,
    )

    levels = list(args.peak_concurrency)
    peak_rows = [[t, *[peak[t][c] for c in levels], max(peak[t].values())] for t in targets]
    print_table("Requests/s on /noop by concurrency", ["target", *[f"c={c}" for c in levels], "peak"], peak_rows, run)

    run.results |= {
        "latency": {r: {t: stats[r][t].model_dump() for t in targets} for r in ROUTES},
        "throughput_rps": {r: {t: samples[r][t].throughput for t in targets} for r in ROUTES},
        "statuses": {r: {t: dict(samples[r][t].statuses) for t in targets} for r in ROUTES},
        "added": added,
        "peak_rps": {t: {str(c): v for c, v in peak[t].items()} for t in targets},
        "peak_rps_max": {t: max(peak[t].values()) for t in targets},
    }


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args, quiet=False) as run:
        run.notes += [
            "Load generator, bare server and Serve share the same machine; latencies include the client's own time.",
            "Added latency is a difference of percentiles, not a percentile of differences.",
            "serve-default: Serve defaults (max_ongoing_requests=5, access logs on) and a nested chain. "
            f"serve-tuned: max_ongoing_requests={args.tuned_max_ongoing}, access logs off, chain composed by "
            "passing DeploymentResponses unawaited. Both reuse handles bound at construction; the proxy "
            "(shared, access log off, keep-alive on) is the same for both.",
        ]
        bare_port, serve_port = free_port(), free_port()
        env = bench_env(OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "uvicorn", "benchmarks._bare_server:app", "--host", "127.0.0.1"]
        cmd += ["--port", str(bare_port), "--log-level", "warning", "--no-access-log"]
        bare = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)
        try:
            with local_ray("igb-ovh-"):
                from ray import serve
                from ray.serve import RunTarget

                from benchmarks._overhead_apps import build_app

                start_serve(serve_port)
                t0 = time.perf_counter()
                apps = [
                    RunTarget(target=build_app(v, args.tuned_max_ongoing), name=v, route_prefix=f"/{v}")
                    for v in args.variants
                ]
                serve.run_many(apps)
                run.results["startup_s"] = time.perf_counter() - t0
                print(f"serve apps {args.variants} ready in {run.results['startup_s']:.1f}s")
                wait_http_ok(f"http://127.0.0.1:{bare_port}/noop", 60, bare)
                bases = {"bare": f"http://127.0.0.1:{bare_port}"}
                bases.update({f"serve-{v}": f"http://127.0.0.1:{serve_port}/{v}" for v in args.variants})
                measured = asyncio.run(measure(args, bases))
        finally:
            stop_process(bare)
        report(run, args, measured)


if __name__ == "__main__":
    main()
