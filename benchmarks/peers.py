"""Side by side with the peer: Ray's documented Stable Diffusion example vs this app, same tiny
SD model, same Poisson load, one image per request.

    python -m benchmarks.peers [--rates 1 2 4 --requests 24 --steps 8 --size 64 --slo-s 5] [--smoke]
    python -m benchmarks.peers --device cuda --model-dir DIR --size 512 --steps 30 --slo-s 5   # a GPU

- peer: benchmarks/_peer_app.py, the shape of Ray's doc example (ingress -> one model deployment,
  one image per call, no batching, no multiplexing, a synchronous `generate`), autoscaling as this
  app's Generator does (1 to 2 replicas of 0.5 CPU here) so both get the same CPU;
- this app: serve_config.yaml on the tiny preset, through its OpenAI-compatible
  `POST /v1/images/generations`, which answers when the image is done: the durable task store,
  the task runner, the batching Generator (its serve_config batch knobs) and local storage are all
  on the path the peer lacks.

Each request to the app comes from its own client address (`X-Forwarded-For`, which the app is
told to read: `many_clients`), so the per-caller cap on waiting requests (`long_requests`) does not
hold the load generator to 8 in flight: it stands for many clients, as against the peer.
Both are started in turn in one private Ray cluster (each alone on the machine), each rate's
arrivals are the same seeded exponential gaps, and each request times one HTTP call from send to
its image (the app's answer carries the image as b64_json, the peer's is the PNG body).
Goodput: images back within `--slo-s`, per second of the rate's span.

`--app-max-wait-s none 2` runs the app once as shipped (no bound in time) and once with
`admission.max_predicted_wait_s: 2` (its time bound set from the SLO, as an operator with that SLO
would): the tasks it cannot finish within the bound at the recent rate get `503
QUEUE_WAIT_TOO_LONG` at once instead of a place at the back of a growing queue.

On a GPU (`--device cuda`): both load `--model-dir` (a diffusers SD folder, e.g. the SD 1.5-shaped
random weights `benchmarks.gpu_session` saves) in float16; the peer as Ray's doc example runs it
(one replica with `num_gpus: 1`, `torch.autocast`), the app from serve_config.gpu.yaml with a preset
whose generator is that folder (the other models stay tiny: nothing is downloaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.common import (
    DEFAULT_CACHE_DIR,
    REPO_ROOT,
    BenchRun,
    base_parser,
    bench_run,
    deploy_and_wait,
    latency_stats,
    local_ray,
    print_table,
    short_tmpdir,
)
from testbed.harness import free_port, generator_replicas, local_app_config, preset_file, wait_http_ok

NAME = "peers"
PROMPT = "a cozy wooden desk with a monitor, a keyboard and a plant"
TARGETS = ("ray-doc-example", "imagegen-serve", "imagegen-serve-static")


def wait_bound(text: str) -> float | None:
    """`--app-max-wait-s` values: seconds, or none (no bound in time)."""
    return None if text.lower() == "none" else float(text)


def keep_mb(text: str) -> int | None:
    """`--app-malloc-keep-mb` values: MiB, or shipped (the app's default, IMAGEGEN_MALLOC_KEEP_MB unset)."""
    return None if text.lower() == "shipped" else int(text)


def target_name(batching: str, max_wait_s: float | None, malloc_keep_mb: int | None = None) -> str:
    """The app's label in the tables: its batching, its bound in time and its Generator's allocator
    setting, when not as shipped."""
    name = TARGETS[1] if batching == "step" else TARGETS[2]
    if max_wait_s is not None:
        name = f"{name} wait<={max_wait_s:g}s"
    return name if malloc_keep_mb is None else f"{name} keep={malloc_keep_mb}MiB"


def _order(target: str) -> tuple[int, str]:
    return (next(i for i, t in enumerate(TARGETS) if target.split(" ")[0] == t), target)


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="offered req/s")
    parser.add_argument("--requests", type=int, default=24, help="arrivals per rate")
    parser.add_argument("--steps", type=int, default=8, help="diffusion steps per image")
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--slo-s", type=float, default=5.0, help="goodput counts images back within this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per model replica (both)")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="give up on one request after this")
    parser.add_argument(
        "--app-batching",
        nargs="+",
        choices=["step", "static"],
        default=["step"],
        help="the app's Generator batching, each a run of its own (step: requests join at the next step)",
    )
    parser.add_argument(
        "--app-max-wait-s",
        nargs="+",
        type=wait_bound,
        default=[None],
        help="the app's admission.max_predicted_wait_s, each a run of its own (none: as shipped, no bound)",
    )
    parser.add_argument(
        "--app-malloc-keep-mb",
        nargs="+",
        type=keep_mb,
        default=[None],
        help="the app's Generator replicas' IMAGEGEN_MALLOC_KEEP_MB, each a run of its own (shipped: as "
        "shipped; 0: glibc's defaults, freed activations go back to the OS after each step)",
    )
    parser.add_argument(
        "--app-eager",
        action="store_true",
        help="run the app's UNet eagerly, as the peer's (drop the preset's generator tuning: no traced UNet)",
    )
    parser.add_argument(
        "--model-cache-dir", type=Path, default=DEFAULT_CACHE_DIR / "models", help="tiny model cache (both)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both models run")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="a diffusers SD folder both load (default: the tiny model)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.rates, args.requests, args.steps, args.slo_s = [2.0], 4, 2, 30.0
    return args


@dataclass
class Sample:
    sent_at_s: float
    status: int | str
    seconds: float | None = None
    sent_wall: float = 0.0  # time.time() at send, to line up with the task store's clock


async def _peer_call(client: httpx.AsyncClient, args: Any, seed: int) -> tuple[int, bool]:
    params = {"prompt": PROMPT, "img_size": args.size, "steps": args.steps, "seed": seed}
    response = await client.get("/imagine", params=params)
    return response.status_code, response.headers.get("content-type") == "image/png" and bool(response.content)


def many_clients(config: dict[str, Any]) -> dict[str, Any]:
    """The app told to take each request's client address from X-Forwarded-For (127.0.0.1, the
    load generator, is a trusted proxy by default): the load stands for many clients, as the peer's
    load does, instead of one caller held to `long_requests.per_caller` waiting requests."""
    for app in config["applications"]:
        args = app.setdefault("args", {})
        args["long_requests"] = {**args.get("long_requests", {}), "client_ip_header": "X-Forwarded-For"}
    return config


def client_address(index: int) -> dict[str, str]:
    """Request `index`'s client, one address per request (see `many_clients`)."""
    return {"X-Forwarded-For": f"10.3.{index // 250 % 250}.{index % 250 + 1}"}


async def _app_call(client: httpx.AsyncClient, args: Any, seed: int) -> tuple[int, bool]:
    body = {
        "prompt": PROMPT,
        "size": f"{args.size}x{args.size}",
        "response_format": "b64_json",
        "seed": seed,
        "num_inference_steps": args.steps,
    }
    response = await client.post("/v1/images/generations", json=body, headers=client_address(seed))
    ok = response.status_code == 200 and bool(response.json().get("data", [{}])[0].get("b64_json"))
    return response.status_code, ok


async def run_rate(base_url: str, target: str, args: Any, rate: float) -> dict[str, Any]:
    """`args.requests` Poisson arrivals at `rate`; waits for every answer."""
    rng = random.Random(f"{args.seed}-{rate}")
    gaps = [rng.expovariate(rate) for _ in range(args.requests)]
    call = _peer_call if target == "ray-doc-example" else _app_call
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=args.timeout_s, limits=limits) as client:
        started = time.perf_counter()

        async def one(index: int, at: float) -> Sample:
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - started)))
            sent, sent_wall = time.perf_counter(), time.time()
            try:
                status, ok = await call(client, args, index)
            except httpx.HTTPError as exc:
                return Sample(sent - started, type(exc).__name__, sent_wall=sent_wall)
            status = status if ok or status != 200 else "no image"
            return Sample(sent - started, status, time.perf_counter() - sent, sent_wall)

        arrivals = [sum(gaps[: i + 1]) for i in range(len(gaps))]
        samples = await asyncio.gather(*(one(i, at) for i, at in enumerate(arrivals)))
        span = time.perf_counter() - started
    done = [s.seconds for s in samples if s.status == 200 and s.seconds is not None]
    good = [x for x in done if x <= args.slo_s]
    statuses: dict[str, int] = {}
    for sample in samples:
        statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
    return {
        "target": target,
        "rate": rate,
        "offered_rps": len(samples) / arrivals[-1] if arrivals and arrivals[-1] > 0 else float("nan"),
        "requests": len(samples),
        "done": len(done),
        "throughput_rps": len(done) / span,
        "latency": latency_stats(done).model_dump(),
        "good": len(good),
        "goodput_rps": len(good) / span,
        "span_s": span,
        "statuses": statuses,
        "samples": [  # [sent at s, status, seconds to the image, sent at (epoch s)]
            [round(s.sent_at_s, 3), s.status, None if s.seconds is None else round(s.seconds, 3), round(s.sent_wall, 4)]
            for s in samples
        ],
    }


STAGES = ("to task", "to claim", "generate", "rest of run", "to answer")


def server_breakdown(db_path: Path, result: dict[str, Any]) -> dict[str, float] | None:
    """Where the app's time went for one rate's images, from its task store (SQLite, same clock):
    p50 ms of send -> task made (HTTP, proxy, ingress, insert), -> claimed (dispatch, claim),
    the generate stage, the rest of the run (its other stages and writes), done -> answer back."""
    if not db_path.exists():
        return None
    import sqlite3

    first = min(sample[3] for sample in result["samples"]) - 1.0
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT request, created_at, started_at, finished_at, result FROM tasks"
            " WHERE status = 'done' AND created_at >= ?",
            (first,),
        ).fetchall()
    by_seed = {json.loads(request).get("seed"): row for request, *row in rows}
    parts: list[tuple[float, ...]] = []
    for seed, (_, status, seconds, sent_wall) in enumerate(result["samples"]):  # request i has seed i
        row = by_seed.get(seed)
        if status != 200 or seconds is None or row is None:
            continue
        created, started, finished, stored = row
        timings = json.loads(stored or "{}").get("timings", {})
        generate = float(timings.get("generate", 0.0))
        parts.append(
            (
                created - sent_wall,
                started - created,
                generate,
                finished - started - generate,
                sent_wall + seconds - finished,
            )
        )
    if not parts:
        return None
    return {name: round(statistics.median(p[i] for p in parts) * 1e3, 1) for i, name in enumerate(STAGES)}


def _generator(config: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == "Generator")


def _deploy_peer(port: int, http_options: dict[str, Any], args: Any, run: BenchRun, generator: dict[str, Any]) -> str:
    from ray import serve
    from ray.serve._private import api as serve_api

    from benchmarks._peer_app import APIIngress, StableDiffusion

    serve_api.serve_start(http_options=http_options, proxy_location="HeadOnly")  # as the app's config does
    if args.device == "cuda":  # Ray's doc example: one GPU per replica (one GPU here: one replica)
        model = StableDiffusion.options(num_replicas=1, ray_actor_options={"num_gpus": 1})
    else:  # the app's Generator's autoscaling and CPU share, so both get the same CPU when loaded
        model = StableDiffusion.options(
            autoscaling_config=dict(generator["autoscaling_config"]), ray_actor_options={"num_cpus": 0.5}
        )
    source = str(args.model_dir) if args.model_dir else ""
    t0 = time.perf_counter()
    peer = model.bind(str(args.model_cache_dir), args.torch_threads, source, args.device)
    serve.run(APIIngress.bind(peer), name="peer", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/healthcheck", timeout_s=300)
    run.results["peer_startup_s"] = time.perf_counter() - t0
    return url


def _preset(root: Path, args: Any) -> Path:
    """The tiny preset (with `--app-eager`, no generator tuning); with `--model-dir`, its generator is that
    folder (on `--device`, float16 on a GPU) and its defaults and limits take `--size` and `--steps`."""
    path = preset_file(root, "tiny")
    other_model = args.model_dir is not None or args.device != "cpu"
    if not (other_model or args.app_eager):
        return path
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if args.app_eager:
        data["generator"].pop("tuning", None)
    if other_model:
        if args.model_dir is not None:
            data["generator"] = {**data["generator"], "model_id": str(args.model_dir.resolve())}
        data["device"] = args.device
        data["dtype"] = "float16" if args.device == "cuda" else "float32"
        data["defaults"] = {**data.get("defaults", {}), "height": args.size, "width": args.size}
        limits = data.setdefault("limits", {})
        limits["max_side"] = max(int(limits.get("max_side", 0)), args.size)
        limits["max_steps"] = max(int(limits.get("max_steps", 0)), args.steps)
        limits["max_request_cost"] = None
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def measure(args: Any, run: BenchRun) -> list[dict[str, Any]]:
    from ray import serve

    results: list[dict[str, Any]] = []
    root = short_tmpdir("igb-peers-")
    cache = args.model_cache_dir.expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    args.model_cache_dir = cache
    try:
        with local_ray("igb-peersr-", env={"IMAGEGEN_TORCH_THREADS": str(args.torch_threads)}):
            port = free_port()
            data_dir = root / "data"
            data_dir.mkdir()
            preset = str(_preset(root, args))
            profile = "serve_config.gpu.yaml" if args.device == "cuda" else "serve_config.yaml"
            config = local_app_config(port, data_dir, REPO_ROOT / profile, preset=preset, model_cache_dir=cache)
            if getattr(args, "smoke", False):  # numbers meaningless: one Generator (and one peer replica) to start
                generator_replicas(config, 1)
            many_clients(config)

            url = _deploy_peer(port, config["http_options"], args, run, _generator(config))
            for rate in args.rates:
                results.append(asyncio.run(run_rate(url, "ray-doc-example", args, rate)))
                _print(results[-1])
            serve.delete("peer")

            variants = [
                (b, w, k) for b in args.app_batching for w in args.app_max_wait_s for k in args.app_malloc_keep_mb
            ]
            for batching, max_wait_s, malloc_keep_mb in variants:
                generator = _generator(config)
                generator["user_config"] = {**generator.get("user_config", {}), "batching": batching}
                actor_options = generator.setdefault("ray_actor_options", {})
                actor_options.pop("runtime_env", None)
                if malloc_keep_mb is not None:
                    actor_options["runtime_env"] = {"env_vars": {"IMAGEGEN_MALLOC_KEEP_MB": str(malloc_keep_mb)}}
                admission = config["applications"][0]["args"].setdefault("admission", {})
                admission["max_predicted_wait_s"] = max_wait_s
                target = target_name(batching, max_wait_s, malloc_keep_mb)
                url = deploy_and_wait(config, port, run)
                startup = "app_startup_s" if target == TARGETS[1] else f"app_startup_s[{target}]"
                run.results[startup] = run.results.pop("startup_s")
                for rate in args.rates:
                    results.append(asyncio.run(run_rate(url, target, args, rate)))
                    results[-1]["server_p50_ms"] = server_breakdown(data_dir / "tasks.db", results[-1])
                    _print(results[-1])
                serve.delete(config["applications"][0]["name"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def _print(result: dict[str, Any]) -> None:
    print(
        f"{result['target']} at {result['rate']:g}/s: {result['done']}/{result['requests']} images, "
        f"p50 {result['latency']['p50_ms']:.0f} ms, statuses {result['statuses']}"
    )


def report(run: BenchRun, args: Any, results: list[dict[str, Any]]) -> None:
    ordered = sorted(results, key=lambda r: (r["rate"], _order(r["target"])))
    rows = [
        [
            r["rate"],
            r["target"],
            r["offered_rps"],
            f"{r['done']}/{r['requests']}",
            r["throughput_rps"],
            r["latency"]["p50_ms"] / 1e3,
            r["latency"]["p99_ms"] / 1e3,
            r["goodput_rps"],
        ]
        for r in ordered
    ]
    print_table(
        f"Same {'SD model from ' + args.model_dir.name if args.model_dir else 'tiny SD model'} on {args.device}, "
        f"same Poisson load ({args.requests} requests per rate, {args.steps} steps, "
        f"{args.size}x{args.size}, SLO {args.slo_s:g} s)",
        ["rate", "target", "offered/s", "images", "images/s", "p50 s", "p99 s", "goodput/s"],
        rows,
        run,
    )
    breakdown = [
        [r["rate"], r["target"], *(r["server_p50_ms"][name] for name in STAGES)]
        for r in ordered
        if r.get("server_p50_ms")
    ]
    if breakdown:
        print_table(
            "Where the app's time went (p50 ms per stage, from its task store; done images only)",
            ["rate", "target", *STAGES],
            breakdown,
            run,
        )
    run.results["rates"] = results
    run.notes.append(
        f"Both apps in one private Ray cluster, one after the other; torch threads {args.torch_threads} per "
        "model replica; the load generator on the same machine."
    )


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args) as run:
        os.environ.setdefault("IMAGEGEN_TORCH_THREADS", str(args.torch_threads))
        results = measure(args, run)
        report(run, args, results)


if __name__ == "__main__":
    main()
