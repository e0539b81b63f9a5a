"""A model replica's allocator setting, before and after: IMAGEGEN_MALLOC_KEEP_MB 0 (glibc's defaults)
against the shipped 1024, on each way a replica runs the model.

    python -m benchmarks.allocator [--rounds 3 --batches 15 --steps 8 --size 64 --keep-mb 0 1024] [--smoke]

Each (path, setting) runs in a fresh interpreter (the setting is process-wide and permanent), the
settings interleaved round by round: tiny models, one torch thread, batches of two images, after
three warm-up batches. Per batch: wall time, CPU seconds in the kernel, minor page faults (pages
the kernel had to hand the process again). The paths:
- pipeline: a diffusers pipeline call (`SDEngine.generate`: static batching, the Generator's path
  when step batching is off);
- edit: the Editor's InstructPix2Pix call (`EditEngine.generate`);
- step: the step loop (`StepBatcher`, the Generator's default), its UNet traced as the tiny preset
  ships it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._sd import model_cache_dir
from benchmarks.common import REPO_ROOT, base_parser, bench_env, bench_run, print_table

NAME = "allocator"
PATHS = ("pipeline", "edit", "step")

# One measurement, in its own interpreter: argv = path, keep_mb, batches, steps, size, cache dir.
PROBE = """
import json, resource, sys, time
from pathlib import Path
path, keep_mb, batches, steps, size, cache = sys.argv[1], *map(int, sys.argv[2:6]), Path(sys.argv[6])
from serve_app.models.device import configure_allocator
configured = configure_allocator(keep_mb)
from benchmarks._sd import make_edit_spec, make_editor, make_engine, make_spec
if path == "edit":
    engine = make_editor(cache, 1)
    def batch(i):
        engine.generate([make_edit_spec(2 * i, steps, size), make_edit_spec(2 * i + 1, steps, size)])
elif path == "pipeline":
    engine = make_engine(cache, 1)
    def batch(i):
        engine.generate([make_spec(2 * i, steps, size), make_spec(2 * i + 1, steps, size)])
else:
    from serve_app.models.step_batch import StepBatcher
    engine = make_engine(cache, 1)
    batcher = StepBatcher(engine)
    batcher.activate(make_spec(0, steps, size))
    batcher.trace_ahead(make_spec(0, steps, size), [1, 2])
    if engine.traced is not None:
        engine.traced.wait()
    def batch(i):
        samples = [batcher.admit(make_spec(2 * i + k, steps, size)) for k in range(2)]
        while not all(sample.done for sample in samples):
            batcher.step(samples)
        batcher.decode(samples)
for i in range(3):
    batch(i)
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for i in range(batches):
    batch(i)
wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "configured": configured,
    "ms_per_batch": wall / batches * 1000,
    "kernel_cpu_ms_per_batch": (after.ru_stime - before.ru_stime) / batches * 1000,
    "page_faults_per_batch": (after.ru_minflt - before.ru_minflt) / batches,
}))
"""


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="how the model runs")
    parser.add_argument("--keep-mb", nargs="+", type=int, default=[0, 1024], help="settings compared")
    for flag, default, meaning in (
        ("--rounds", 3, "rounds, the settings interleaved"),
        ("--batches", 15, "timed batches of two images per measurement"),
        ("--steps", 8, "denoising steps per image"),
        ("--size", 64, "image side in pixels"),
    ):
        parser.add_argument(flag, type=int, default=default, help=meaning)
    parser.add_argument("--cache-dir", type=Path, default=None, help="tiny model cache folder")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.batches, args.steps, args.paths = 1, 2, 2, ["pipeline"]
    return args


def measure(path: str, keep_mb: int, args: Any, cache: Path) -> dict[str, Any]:
    argv = [path, str(keep_mb), str(args.batches), str(args.steps), str(args.size), str(cache)]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=REPO_ROOT,
        env=bench_env(IMAGEGEN_TORCH_THREADS="1"),
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    cache = model_cache_dir(args.cache_dir)
    with bench_run(NAME, args) as run:
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {p: {str(k): [] for k in args.keep_mb} for p in args.paths}
        for round_ in range(args.rounds):
            for path in args.paths:
                for keep_mb in args.keep_mb:
                    result = measure(path, keep_mb, args, cache)
                    runs[path][str(keep_mb)].append(result)
                    print(f"round {round_ + 1}, {path}, keep {keep_mb} MiB: {result}", flush=True)
        run.results["runs"] = runs
        base = str(args.keep_mb[0])
        rows = []
        for path, by_keep in runs.items():
            for keep, results in by_keep.items():
                ms = [r["ms_per_batch"] for r in results]
                ratio = [a["ms_per_batch"] / b["ms_per_batch"] for a, b in zip(results, by_keep[base], strict=True)]
                rows.append(
                    [
                        path,
                        keep,
                        statistics.median(ms),
                        statistics.median(r["kernel_cpu_ms_per_batch"] for r in results),
                        statistics.median(r["page_faults_per_batch"] for r in results),
                        " ".join(f"{x:.3f}" for x in ratio),
                    ]
                )
        print_table(
            f"Batches of 2 tiny images, {args.steps} steps, {args.size}x{args.size}, 1 torch thread "
            f"(medians of {args.rounds} rounds; time / keep {base}'s, per round)",
            ["path", "keep MiB", "ms/batch", "kernel CPU ms/batch", "page faults/batch", f"time / keep {base}"],
            rows,
            run,
        )


if __name__ == "__main__":
    main()
