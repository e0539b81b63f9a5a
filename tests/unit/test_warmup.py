"""The compiled UNet's warm-up: after it, a batch of a warmed size compiles nothing more, and a
size it did not warm compiles on its first call (so the count below can tell them apart). The
aot_eager backend: the same Dynamo capture per shape as inductor, without its C++ build."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo.config as dynamo_config
from torch._dynamo.utils import counters

from serve_app.models.sd_engine import SDEngine
from serve_app.models.step_batch import StepBatcher
from serve_app.models.warmup import allow_graphs, batch_sizes, warm_up
from serve_app.presets import GenerationDefaults, GeneratorModel, PipelineTuning
from tests.support.specs import txt2img

DEFAULTS = GenerationDefaults(num_inference_steps=4, guidance_scale=7.5, height=64, width=64)


def _compiles() -> int:
    """Graphs Dynamo has captured so far in this process."""
    return int(counters["stats"]["unique_graphs"])


@pytest.fixture(scope="module")
def compiled(tiny_cache_dir: Path) -> SDEngine:
    torch._dynamo.reset()
    tuning = PipelineTuning(compile="default", compile_backend="aot_eager")
    return SDEngine(GeneratorModel(model_id="tiny", tuning=tuning), tiny_cache_dir)


def test_the_sizes_a_replica_runs() -> None:
    assert batch_sizes(4, lanes=1, step_level=True) == [1, 2, 3, 4]
    assert batch_sizes(4, lanes=2, step_level=True) == [1, 2]
    assert batch_sizes(5, lanes=2, step_level=True) == [1, 2, 3]
    assert batch_sizes(3, lanes=2, step_level=False) == [1, 2, 3]


def test_after_the_warm_up_a_warmed_step_batch_compiles_nothing(compiled: SDEngine) -> None:
    batcher = StepBatcher(compiled, lanes=2)
    seconds = warm_up(compiled, DEFAULTS, [1, 2], batcher)
    assert sorted(seconds) == [1, 2]
    before = _compiles()
    specs = [txt2img(seed=seed, num_inference_steps=3) for seed in (1, 2, 3, 4)]
    batcher.activate(specs[0])
    samples = [batcher.admit(spec) for spec in specs]
    while not all(sample.done for sample in samples):
        batcher.step(samples)  # two lanes of 2
    batcher.decode(samples)
    assert _compiles() == before, "a warmed batch shape was compiled again"
    batcher.lanes = 1
    batcher.step([batcher.admit(spec) for spec in specs[:3]])  # 3 in one call: never warmed
    assert _compiles() > before


def test_the_static_path_is_warmed_per_batch_size(compiled: SDEngine) -> None:
    warm_up(compiled, DEFAULTS, [3])
    before = _compiles()
    compiled.generate([txt2img(seed=seed, num_inference_steps=2) for seed in range(3)])
    assert _compiles() == before


def test_dynamo_keeps_enough_graphs_for_every_warmed_shape() -> None:
    limit = dynamo_config.recompile_limit
    try:
        allow_graphs(40)
        assert dynamo_config.recompile_limit >= 40
        allow_graphs(2)  # never lowers it
        assert dynamo_config.recompile_limit >= 40
    finally:
        dynamo_config.recompile_limit = limit
