"""Images/s of SD 1.5- and SDXL-shaped pipelines (random weights) and their % of the FLOP floor.

    python -m benchmarks.gpu_throughput --device cuda          # on a GPU: sd15 512²/30 steps, sdxl 1024²/20
    python -m benchmarks.gpu_throughput --smoke                # CPU: sd15-shaped, 64², 1 step, batch 1
    python -m benchmarks.gpu_throughput --device cuda --models sd15 --batches 8 --no-serve \
        --tunings default no_channels_last compile cuda_graphs vae_slicing lora lora_fused

The pipelines are built from the released models' architecture configs (benchmarks/_gpu_models.py)
with random weights: identical layers and FLOPs, no download. bfloat16 on CUDA, float32 on CPU;
classifier-free guidance 7.5 (the UNet runs on a batch of 2 per image). Measured as a plain
diffusers loop and through a Serve deployment with `@serve.batch` (N concurrent calls, batch N),
at each batch size, under each of the preset tuning options named by `--tunings` (the app's
`PipelineTuning`, applied by the same `apply_tuning` the engines use: channels_last, torch.compile,
CUDA graphs, sliced VAE decode, a rank-64 LoRA unfused and fused).

FLOP floor: FLOPs per image = UNet forward with the CFG batch x steps + VAE decode + text encoders,
counted with torch.utils.flop_counter.FlopCounterMode on the meta device (matmuls, convolutions and
attention; no compute). "% of floor" = (FLOPs per image x images/s) / peak FLOP/s of the device.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from typing import Any

import torch

from benchmarks._gpu_models import (
    ARCHS,
    TUNINGS,
    PipelineServer,
    build_pipeline,
    count_flops,
    flops_per_image,
    resolve_dtype,
    run_pipeline,
    synchronize,
    tune_pipeline,
)
from benchmarks.common import (
    BenchRun,
    base_parser,
    bench_run,
    device_name,
    latency_stats,
    local_ray,
    print_table,
    run_with_handle,
    start_serve,
)

NAME = "gpu_throughput"
# Dense bf16 tensor-core peaks (TFLOP/s), matched in this order against the device name.
PEAK_TFLOPS: list[tuple[str, float, str]] = [
    ("H200", 790.0, "H200: the lender's measured bf16 matmul rate (NVIDIA's dense spec: 989)"),
    ("H100 NVL", 835.0, "H100 NVL: NVIDIA spec, bf16 dense"),
    ("H100 PCIe", 756.0, "H100 PCIe: NVIDIA spec, bf16 dense"),
    ("H100", 989.0, "H100 SXM: NVIDIA spec, bf16 dense"),
    ("A100", 312.0, "A100: NVIDIA spec, bf16 dense"),
    ("L40S", 362.0, "L40S: NVIDIA spec, bf16 dense"),
    ("L4", 121.0, "L4: NVIDIA spec, bf16 dense"),
]


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cuda | cuda:N | cpu")
    parser.add_argument(
        "--models", nargs="+", choices=list(ARCHS), default=["sd15", "sdxl"], help="architectures (*-tiny: CPU checks)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="batch sizes")
    parser.add_argument("--iters", type=int, default=3, help="measured calls per batch size (after 1 warm-up)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: 512 sd15, 1024 sdxl)")
    parser.add_argument("--steps", type=int, default=None, help="steps (default: 30 sd15, 20 sdxl)")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale (> 1: CFG)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument(
        "--tunings",
        nargs="+",
        choices=sorted(TUNINGS),
        default=None,
        help="preset tuning options to compare (default: default and compile on CUDA, default on CPU)",
    )
    parser.add_argument("--serve", action=argparse.BooleanOptionalAction, default=True, help="also through Serve")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak (default: by device name)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads on CPU")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tunings is None:
        args.tunings = ["default", "compile"] if args.device.startswith("cuda") else ["default"]
    if args.smoke:
        args.models, args.batches, args.iters, args.serve = ["sd15"], [1], 1, False
        if not args.device.startswith("cuda"):
            args.size, args.steps, args.threads = args.size or 64, args.steps or 1, 1
    return args


def peak_for(device: str, name: str, override: float | None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it comes from) for the device; None when unknown (CPU)."""
    if override is not None:
        return override, "--peak-tflops"
    if device.startswith("cuda"):
        for key, value, why in PEAK_TFLOPS:
            if key.lower() in name.lower():
                return value, why
    return None, f"unknown for {name!r}: pass --peak-tflops to get % of floor"


def time_plain(pipe: Any, args: Any, batch: int, size: int, steps: int) -> dict[str, Any]:
    """1 warm-up call (compiles, when compiled) then `iters` timed calls of `batch` images."""
    started = time.perf_counter()
    run_pipeline(pipe, batch, size, steps, args.guidance)
    synchronize(args.device)
    warmup_s = time.perf_counter() - started
    times = []
    for i in range(args.iters):
        started = time.perf_counter()
        run_pipeline(pipe, batch, size, steps, args.guidance, seed=i + 1)
        synchronize(args.device)
        times.append(time.perf_counter() - started)
    return {"warmup_s": warmup_s, "call_times_s": times, "images_per_s": batch * len(times) / sum(times)}


async def _serve_rounds(handle: Any, batch: int, iters: int) -> dict[str, Any]:
    async def round_(seed: int) -> tuple[float, list[int]]:
        started = time.perf_counter()
        got = await asyncio.gather(*(handle.generate.remote(seed + i) for i in range(batch)))
        return time.perf_counter() - started, list(got)

    warmup_s, _ = await round_(0)
    times, seen = [], []
    for r in range(iters):
        wall, got = await round_((r + 1) * batch)
        times.append(wall)
        seen += got
    return {
        "warmup_s": warmup_s,
        "call_times_s": times,
        "images_per_s": batch * len(times) / sum(times),
        "mean_observed_batch": sum(seen) / len(seen),
    }


def time_serve(args: Any, arch_name: str, tuning: str, size: int, steps: int) -> dict[int, dict[str, Any]]:
    """PipelineServer reconfigured to each batch size; N concurrent handle calls per round."""
    from ray import serve

    run = {
        "size": size,
        "steps": steps,
        "guidance": args.guidance,
        "tuning": tuning,
        "threads": args.threads,
    }
    resources = {"num_gpus": 1} if args.device.startswith("cuda") else {"num_cpus": 1}
    results: dict[int, dict[str, Any]] = {}
    for batch in args.batches:
        app = PipelineServer.options(
            max_ongoing_requests=max(args.batches),
            user_config={"max_batch_size": batch, "batch_wait_timeout_s": 0.05},
            ray_actor_options=resources,
            graceful_shutdown_wait_loop_s=0.1,
            graceful_shutdown_timeout_s=1,
            health_check_timeout_s=600,
        ).bind(arch_name, args.device, args.dtype, run)
        try:
            handle = serve.run(app, name="gpu_throughput", route_prefix=None)
            results[batch] = run_with_handle(handle, lambda h, b=batch: _serve_rounds(h, b, args.iters))
        except Exception as exc:  # e.g. out of memory at a large batch: record it, go on
            results[batch] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        print(f"  serve {arch_name} {tuning} batch {batch}: {results[batch]}", flush=True)
    serve.delete("gpu_throughput")
    return results


def bench_model(args: Any, arch_name: str, peak: float | None) -> dict[str, Any]:
    arch = ARCHS[arch_name]
    size, steps = args.size or arch.size, args.steps or arch.steps
    dtype = resolve_dtype(args.dtype, args.device)
    counts = count_flops(arch, size, size, args.guidance)
    per_image = flops_per_image(counts, steps)
    out: dict[str, Any] = {
        "size": size,
        "steps": steps,
        "dtype": str(dtype).removeprefix("torch."),
        "flops": counts,
        "flops_per_image": per_image,
        "floor_s_per_image": per_image / (peak * 1e12) if peak else None,
        "runs": [],
    }
    print(f"{arch_name}: {size}x{size}, {steps} steps, {out['dtype']}, {per_image / 1e12:.2f} TFLOP/image", flush=True)
    out["build_s"] = {}
    for tuning in args.tunings:  # a fresh pipeline each: channels_last, compile and LoRA change it
        started = time.perf_counter()
        pipe = build_pipeline(arch, args.device, dtype)
        tune_pipeline(pipe, tuning, args.device)
        out["build_s"][tuning] = time.perf_counter() - started
        for batch in args.batches:
            try:
                result = time_plain(pipe, args, batch, size, steps)
            except torch.cuda.OutOfMemoryError as exc:
                result = {"error": f"OutOfMemoryError: {str(exc)[:200]}"}
                torch.cuda.empty_cache()
            print(f"  plain {arch_name} {tuning} batch {batch}: {result}", flush=True)
            out["runs"].append({"path": "plain", "tuning": tuning, "batch": batch, **result})
        del pipe
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.serve:
        for tuning in args.tunings:
            for batch, result in time_serve(args, arch_name, tuning, size, steps).items():
                out["runs"].append({"path": "serve", "tuning": tuning, "batch": batch, **result})
    for entry in out["runs"]:
        ips = entry.get("images_per_s")
        entry["ms_per_image"] = 1e3 / ips if ips else None
        entry["achieved_tflops"] = per_image * ips / 1e12 if ips else None
        entry["pct_of_floor"] = 100.0 * per_image * ips / (peak * 1e12) if ips and peak else None
        if "call_times_s" in entry:
            entry["call_latency"] = latency_stats(entry["call_times_s"]).model_dump()
    return out


def report(run: BenchRun, args: Any, models: dict[str, Any], peak: float | None, peak_why: str) -> None:
    for name, m in models.items():
        rows = [
            [
                r["path"],
                r["tuning"],
                r["batch"],
                r.get("images_per_s"),
                r.get("ms_per_image"),
                r.get("achieved_tflops"),
                r.get("pct_of_floor"),
                r.get("warmup_s"),
                (r.get("error") or "")[:40],
            ]
            for r in m["runs"]
        ]
        floor = m["floor_s_per_image"]
        print_table(
            f"{name}-shaped ({m['size']}x{m['size']}, {m['steps']} steps, CFG {args.guidance:g}, {m['dtype']}, "
            f"{args.device}): {m['flops_per_image'] / 1e12:.2f} TFLOP/image, floor "
            + (f"{floor * 1e3:.1f} ms/image at {peak:g} TFLOP/s" if floor else "n/a (no peak)"),
            ["path", "tuning", "batch", "images/s", "ms/image", "TFLOP/s", "% of floor", "warm-up s", "error"],
            rows,
            run,
        )
    print(f"\npeak: {peak if peak is not None else 'n/a'} TFLOP/s ({peak_why})")


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args, device=args.device) as run:
        if args.device == "cpu":
            torch.set_num_threads(args.threads)
            torch.set_flush_denormal(True)  # random weights: denormals would make CPU kernels crawl
        name = device_name(args.device)
        peak, peak_why = peak_for(args.device, name, args.peak_tflops)
        run.results |= {"device_name": name, "peak_tflops": peak, "peak_source": peak_why}
        run.notes.append(
            "Random weights with the released architectures (same FLOPs); images are noise. "
            f"What ran: models {args.models}, batches {args.batches}, tunings {args.tunings}, serve {args.serve}, "
            f"size {args.size or 'per model'}, steps {args.steps or 'per model'}."
        )
        if not args.serve:
            run.skipped["serve"] = "--no-serve" if not args.smoke else "--smoke"
        models: dict[str, Any] = {}
        if args.serve:
            with local_ray("igb-gpu-", env={"OMP_NUM_THREADS": str(args.threads)}):
                start_serve(None)
                for arch_name in args.models:
                    models[arch_name] = bench_model(args, arch_name, peak)
        else:
            for arch_name in args.models:
                models[arch_name] = bench_model(args, arch_name, peak)
        run.results["models"] = models
        report(run, args, models, peak, peak_why)


if __name__ == "__main__":
    main()
