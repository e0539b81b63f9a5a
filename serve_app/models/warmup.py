"""A compiled UNet's warm-up: one call per batch shape the replica will run, before it takes traffic.

torch.compile (the preset's `tuning.compile`, `dynamic=False`) traces and compiles the UNet again
for each new input shape; on a GPU that is tens of seconds per shape, which the first request of a
new batch size would otherwise wait for. The Generator calls `warm_up` from `reconfigure` (Serve
runs it before the replica is ready, and again when `max_batch_size` or `lanes` change), at the
preset's default size and guidance: the shapes most requests have. Another size still compiles on
its first request.

- Step-level batching: every sub-batch a lane can run, 1 to ceil(max_batch_size / lanes) samples
  (x2 rows with classifier-free guidance), one denoising step and the VAE decode each.
- Static batching: one 1-step pipeline call per batch size, 1 to max_batch_size.

Dynamo keeps a bounded number of graphs per function; `allow_graphs` raises that bound so the
warmed shapes are not evicted by the next one.
"""

from __future__ import annotations

import logging
import time

import torch

from serve_app.models.sd_engine import SDEngine
from serve_app.models.step_batch import StepBatcher
from serve_app.presets import GenerationDefaults
from serve_app.stages import GenerationSpec

logger = logging.getLogger(__name__)

WARM_UP_PROMPT = "warm-up"


def batch_sizes(max_batch_size: int, lanes: int, step_level: bool) -> list[int]:
    """The batch sizes one UNet call of this replica can see."""
    largest = -(-max_batch_size // lanes) if step_level else max_batch_size
    return list(range(1, largest + 1))


def allow_graphs(count: int) -> None:
    """Let dynamo keep at least `count` compiled graphs per function (torch's default is 8)."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch releases
        if getattr(dynamo_config, name, count) < count:
            setattr(dynamo_config, name, count)


def default_spec(defaults: GenerationDefaults, seed: int = 0, steps: int = 2) -> GenerationSpec:
    """A warm-up spec at the preset's default size and guidance."""
    return GenerationSpec(
        prompt=WARM_UP_PROMPT,
        num_inference_steps=steps,
        guidance_scale=defaults.guidance_scale,
        height=defaults.height,
        width=defaults.width,
        seed=seed,
    )


def warm_up(
    engine: SDEngine, defaults: GenerationDefaults, sizes: list[int], batcher: StepBatcher | None = None
) -> dict[int, float]:
    """Run each batch size once at the defaults' shape (through `batcher` when given); seconds per size."""
    allow_graphs(4 * max(sizes, default=1) + 8)  # sizes x (guided or not) x a few image sizes
    seconds: dict[int, float] = {}
    for size in sizes:
        started = time.perf_counter()
        specs = [default_spec(defaults, seed) for seed in range(size)]
        if batcher is not None:
            with batcher.aside(), torch.no_grad():  # a live reconfigure: a batch may be running
                batcher.activate(specs[0])
                samples = [batcher.admit(spec) for spec in specs]
                batcher._step(samples)  # one sub-batch of `size`, as one lane runs it
                batcher._decode(samples)
        else:
            engine.generate([spec.model_copy(update={"num_inference_steps": 1}) for spec in specs])
        seconds[size] = time.perf_counter() - started
    if sizes:
        logger.info("warmed the compiled UNet for batch sizes %s in %.1fs", sizes, sum(seconds.values()))
    return seconds
