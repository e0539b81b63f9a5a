"""LoRA switching cost with SDEngine directly, and throughput of traffic mixing 1, 2 and 4 adapters.

    python -m benchmarks.lora_switch [--requests 24 --steps 4 --size 64] [--smoke]

Time to serve one request (batch 1) when its adapter is
- the same as the previous request's (no switch),
- resident but not active (`set_adapters` switch),
- not resident (`load_lora_weights`, then generate; the adapter is deleted again beforehand, untimed);
plus the bare operations (load, set_adapters, delete) on their own. Then images/s of a random mix of
1, 2 or 4 adapters served like the Generator does: arrival-order batches grouped by adapter, an LRU
of `max_loras_per_replica` resident adapters (evicting = unloading).
"""

from __future__ import annotations

import os
import random
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._sd import make_engine, make_spec, model_cache_dir
from benchmarks.common import BenchRun, base_parser, bench_run, latency_stats, print_table
from serve_app.presets import LoraSpec, load_preset

if TYPE_CHECKING:
    from serve_app.models.sd_engine import SDEngine

NAME = "lora_switch"
EXTRA_LORA_SEED = 4  # the 4th adapter, next to the tiny preset's tiny:1..3


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=24, help="measured requests per switch scenario")
    parser.add_argument("--mix-requests", type=int, default=32, help="requests per mixed-traffic run")
    parser.add_argument("--batch", type=int, default=4, help="max batch of the mixed traffic (Generator's batch)")
    parser.add_argument("--mixes", type=int, nargs="+", default=[1, 2, 4], help="adapters in the mixed traffic")
    parser.add_argument("--max-resident", type=int, default=None, help="LRU size (default: the preset's)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per image")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--cache-dir", type=Path, default=None, help="tiny model cache folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the traffic mix")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.mix_requests, args.batch, args.mixes, args.steps = 3, 4, 2, [1, 2], 1
        args.threads = 1  # robust when other processes share the cores (OpenMP spin-waits)
    return args


def adapters(cache_dir: Path) -> list[LoraSpec]:
    """The tiny preset's 3 adapters plus a 4th built with ensure_tiny_lora(cache, 4)."""
    from serve_app.models.tiny import ensure_tiny_lora

    specs = list(load_preset("tiny").loras)
    ensure_tiny_lora(cache_dir, EXTRA_LORA_SEED)
    specs.append(LoraSpec(name="bench-extra", path=f"tiny:{EXTRA_LORA_SEED}"))
    for spec in specs:  # build every adapter file up front, so loads below only read files
        if spec.path.startswith("tiny:"):
            ensure_tiny_lora(cache_dir, int(spec.path.split(":", 1)[1]))
    return specs


def _reset(engine: SDEngine, keep: list[LoraSpec]) -> None:
    """Exactly the adapters `keep` resident."""
    for name in engine.adapters:
        if name not in {s.name for s in keep}:
            engine.unload_adapter(name)
    for spec in keep:
        engine.load_adapter(spec)


def switch_scenarios(engine: SDEngine, loras: list[LoraSpec], args: Any) -> dict[str, Any]:
    """Per-request times for no switch / resident switch / load, and the bare operations."""
    a, b = loras[0], loras[1]
    seed = 0

    def request(lora: LoraSpec) -> float:
        nonlocal seed
        seed += 1
        started = time.perf_counter()
        engine.generate([make_spec(seed, args.steps, args.size, lora=lora.name, lora_scale=lora.default_scale)])
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"no_switch": [], "resident_switch": [], "load": []}
    ops: dict[str, list[float]] = {"load_lora_weights": [], "set_adapters": [], "delete_adapters": []}
    _reset(engine, [a, b])
    request(a), request(b)  # warm-up
    for i in range(args.requests):  # interleave the scenarios so drift hits them alike
        request(a)  # untimed: `a` active
        times["no_switch"].append(request(a))  # same adapter as the previous call
        times["resident_switch"].append(_switch_request(request, a, b))
        lora = a if i % 2 == 0 else b
        engine.unload_adapter(lora.name)
        started = time.perf_counter()
        engine.load_adapter(lora)
        times["load"].append(time.perf_counter() - started + request(lora))
    # The operations alone.
    pipe = engine.txt2img
    for i in range(args.requests):
        started = time.perf_counter()
        pipe.set_adapters([a.name if i % 2 else b.name], [1.0])
        ops["set_adapters"].append(time.perf_counter() - started)
        engine.unload_adapter(a.name)
        started = time.perf_counter()
        engine.load_adapter(a)
        ops["load_lora_weights"].append(time.perf_counter() - started)
        started = time.perf_counter()
        engine.unload_adapter(a.name)
        ops["delete_adapters"].append(time.perf_counter() - started)
        engine.load_adapter(a)
    return {"requests": times, "ops": ops}


def _switch_request(request: Any, a: LoraSpec, b: LoraSpec) -> float:
    """One request on a resident adapter that is not the active one (a was last; serve b, then settle on a)."""
    elapsed = request(b)
    request(a)  # untimed: make `a` active again for the next no-switch pair
    return elapsed


def mixed_traffic(engine: SDEngine, loras: list[LoraSpec], mix: int, max_resident: int, args: Any) -> dict[str, Any]:
    """images/s of `args.mix_requests` requests drawn uniformly from `mix` adapters, LRU of `max_resident`."""
    rng = random.Random(args.seed + mix)
    pool = loras[:mix]
    traffic = [rng.choice(pool) for _ in range(args.mix_requests)]
    _reset(engine, [])
    lru: OrderedDict[str, LoraSpec] = OrderedDict()
    loads = evictions = calls = 0
    started = time.perf_counter()
    for first in range(0, len(traffic), args.batch):
        batch = traffic[first : first + args.batch]
        groups: dict[str, list[int]] = {}
        for index, lora in enumerate(batch):
            groups.setdefault(lora.name, []).append(first + index)
        for name, indices in groups.items():
            spec = next(s for s in pool if s.name == name)
            if name in lru:
                lru.move_to_end(name)
            else:
                if len(lru) >= max_resident:
                    evicted, _ = lru.popitem(last=False)
                    engine.unload_adapter(evicted)
                    evictions += 1
                engine.load_adapter(spec)
                lru[name] = spec
                loads += 1
            engine.generate(
                [make_spec(i, args.steps, args.size, lora=name, lora_scale=spec.default_scale) for i in indices]
            )
            calls += 1
    elapsed = time.perf_counter() - started
    return {
        "adapters": mix,
        "max_resident": max_resident,
        "requests": len(traffic),
        "seconds": elapsed,
        "images_per_s": len(traffic) / elapsed,
        "loads": loads,
        "evictions": evictions,
        "pipeline_calls": calls,
        "mean_call_batch": len(traffic) / calls,
    }


def report(run: BenchRun, args: Any, switch: dict[str, Any], mixes: list[dict[str, Any]]) -> None:
    stats = {k: latency_stats(v) for k, v in switch["requests"].items()}
    base = stats["no_switch"]
    labels = {
        "no_switch": "no switch (same adapter)",
        "resident_switch": "resident, not active (set_adapters)",
        "load": "not resident (load_lora_weights)",
    }
    rows = [[labels[k], s.n, s.p50_ms, s.p99_ms, s.p50_ms - base.p50_ms] for k, s in stats.items()]
    print_table(
        f"Time to serve one request ({args.size}x{args.size}, {args.steps} steps, batch 1, ms)",
        ["case", "n", "p50", "p99", "added p50"],
        rows,
        run,
    )
    op_stats = {k: latency_stats(v) for k, v in switch["ops"].items()}
    print_table(
        "Adapter operations alone (ms)",
        ["operation", "n", "p50", "p99"],
        [[k, s.n, s.p50_ms, s.p99_ms] for k, s in op_stats.items()],
        run,
    )
    print_table(
        f"Mixed traffic: {args.mix_requests} requests, arrival-order batches of {args.batch} grouped by adapter",
        ["adapters", "resident LRU", "images/s", "loads", "evictions", "pipeline calls", "mean call batch"],
        [
            [m["adapters"], m["max_resident"], m["images_per_s"], m["loads"], m["evictions"]]
            + [m["pipeline_calls"], m["mean_call_batch"]]
            for m in mixes
        ],
        run,
    )
    run.results |= {
        "requests": {k: s.model_dump() for k, s in stats.items()},
        "ops": {k: s.model_dump() for k, s in op_stats.items()},
        "raw_request_times_s": switch["requests"],
        "mixed": mixes,
    }


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args) as run:
        cache = model_cache_dir(args.cache_dir)
        engine = make_engine(cache, args.threads)
        loras = adapters(cache)
        max_resident = args.max_resident or load_preset("tiny").max_loras_per_replica
        run.results["max_resident"] = max_resident
        switch = switch_scenarios(engine, loras, args)
        mixes = [mixed_traffic(engine, loras, m, max_resident, args) for m in args.mixes]
        if max(args.mixes) > max_resident:  # the same traffic with every adapter resident
            mixes.append(mixed_traffic(engine, loras, max(args.mixes), max(args.mixes), args))
        report(run, args, switch, mixes)


if __name__ == "__main__":
    main()
