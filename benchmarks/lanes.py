"""Images/s of the step batcher on CPU: N lanes (threads) in one process against N processes.

    python -m benchmarks.lanes [--workers 2 --images 16 --steps 8 --size 64 --rounds 3] [--smoke]

- lanes: one `StepBatcher` with `lanes` = N in this process, fed N samples at a time (a step runs
  its N sub-batches at once, one per thread, as the Generator's `lanes` knob does);
- processes: N processes, each its own engine and batcher with one lane and one torch thread, each
  making its share of the images one at a time (what N Generator replicas of one lane do).

Both make `--images` images of 1 torch thread per worker with the same seeds; a round's images/s
is the images over the time the slowest worker took. This is the figure behind the laptop
profile's one lane per replica and one replica per core (serve_config.yaml).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from benchmarks._sd import make_engine, make_spec, model_cache_dir
from benchmarks.common import base_parser, bench_run, print_table

NAME = "lanes"


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    for flag, default, meaning in (
        ("--workers", 2, "lanes in one process, and processes"),
        ("--images", 16, "images per round"),
        ("--steps", 8, "denoising steps per image"),
        ("--size", 64, "image side in pixels"),
        ("--rounds", 3, "rounds of each, interleaved"),
    ):
        parser.add_argument(flag, type=int, default=default, help=meaning)
    parser.add_argument("--cache-dir", type=Path, default=None, help="tiny model cache folder")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.steps, args.rounds = 2 * args.workers, 2, 1
    return args


def _make_one(batcher: Any, seeds: list[int], steps: int, size: int) -> None:
    samples = [batcher.admit(make_spec(seed, steps, size)) for seed in seeds]
    while not all(sample.done for sample in samples):
        batcher.step(samples)
    batcher.decode(samples)


def _batcher(cache_dir: Path, lanes: int, steps: int, size: int) -> Any:
    from serve_app.models.step_batch import StepBatcher

    batcher = StepBatcher(make_engine(cache_dir, 1), lanes=lanes)
    batcher.activate(make_spec(0, steps, size))
    _make_one(batcher, list(range(lanes)), steps, size)  # warm-up
    return batcher


def in_lanes(batcher: Any, args: Any) -> float:
    started = time.perf_counter()
    for first in range(0, args.images, args.workers):
        _make_one(batcher, list(range(first, min(first + args.workers, args.images))), args.steps, args.size)
    return args.images / (time.perf_counter() - started)


def _worker(index: int, args: Any, cache_dir: Path, ready: Any, go: Any, out: Any) -> None:
    batcher = _batcher(cache_dir, 1, args.steps, args.size)
    for _ in range(args.rounds):
        ready.wait()
        go.wait()
        started = time.perf_counter()
        for seed in range(index, args.images, args.workers):
            _make_one(batcher, [seed], args.steps, args.size)
        out.put(time.perf_counter() - started)


def main() -> None:
    args = parse_args()
    cache_dir = model_cache_dir(args.cache_dir)
    with bench_run(NAME, args) as run:
        context = mp.get_context("spawn")
        ready, go, out = context.Barrier(args.workers + 1), context.Barrier(args.workers + 1), context.Queue()
        workers = [
            context.Process(target=_worker, args=(i, args, cache_dir, ready, go, out)) for i in range(args.workers)
        ]
        for worker in workers:
            worker.start()
        batcher = _batcher(cache_dir, args.workers, args.steps, args.size)
        lanes: list[float] = []
        processes: list[float] = []
        try:
            for round_ in range(args.rounds):
                ready.wait()  # the processes idle while the lanes run, and the other way round
                lanes.append(in_lanes(batcher, args))
                go.wait()
                processes.append(args.images / max(out.get(timeout=600) for _ in workers))
                print(f"round {round_ + 1}: lanes {lanes[-1]:.2f}, processes {processes[-1]:.2f} images/s")
        finally:
            for worker in workers:
                worker.join(timeout=60)
        run.results |= {"workers": args.workers, "lanes": lanes, "processes": processes}
        print_table(
            f"{args.images} images of {args.size}x{args.size}, {args.steps} steps, 1 torch thread per worker",
            ["round", f"{args.workers} lanes, images/s", f"{args.workers} processes, images/s", "processes / lanes"],
            [[i + 1, a, b, b / a] for i, (a, b) in enumerate(zip(lanes, processes, strict=True))],
            run,
        )


if __name__ == "__main__":
    main()
