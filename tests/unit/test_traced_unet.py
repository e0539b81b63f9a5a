"""The CPU's compiled path (`tuning.trace_unet`): step-level batching's UNet calls through a
TorchScript graph per shape give the eager images (within ATOL, 2/255 per channel; in practice
the same uint8 pixels), are traced off the request path, and never stand in for a LoRA or tiling.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.models.sd_engine import SDEngine
from serve_app.models.step_batch import StepBatcher
from serve_app.models.traced import MAX_RETRIES, TracedUNet
from serve_app.presets import GeneratorModel, LoraSpec, PipelineTuning
from serve_app.stages import GenerationSpec
from tests.support.specs import ATOL, txt2img


@pytest.fixture(scope="module")
def traced(tiny_cache_dir: Path) -> SDEngine:
    return SDEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(trace_unet=True)), tiny_cache_dir)


@pytest.fixture(scope="module")
def eager(tiny_cache_dir: Path) -> SDEngine:
    return SDEngine(GeneratorModel(model_id="tiny"), tiny_cache_dir)


def _image(engine: SDEngine, spec: GenerationSpec) -> np.ndarray:
    batcher = StepBatcher(engine)
    batcher.activate(spec)
    sample = batcher.admit(spec)
    while not sample.done:
        batcher.step([sample])
    (decoded,) = batcher.decode([sample])
    return np.asarray(decoded.image.convert("RGB"), dtype=np.float32) / 255.0


def _inputs(rows: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(rows)
    sample = torch.randn(rows, 4, 32, 32, generator=generator)
    return sample, torch.full((rows,), 500, dtype=torch.long), torch.randn(rows, 77, 32, generator=generator)


def test_the_traced_graph_makes_the_eager_image_and_a_shape_not_prepared_runs_eagerly(
    traced: SDEngine, eager: SDEngine
) -> None:
    assert traced.traced is not None and eager.traced is None
    spec = txt2img(seed=31, num_inference_steps=4)
    first = _image(traced, spec)  # no graph for the shape: eager, and no trace starts on its own
    assert traced.traced.eager_calls == 4 and traced.traced.traced_calls == 0
    traced.traced.wait()
    assert traced.traced.shapes == 0
    StepBatcher(traced).trace_ahead(spec, [1])
    traced.traced.wait()
    assert traced.traced.shapes == 1
    again = _image(traced, spec)
    assert traced.traced.traced_calls == 4, "the four steps did not run the traced graph"
    reference = _image(eager, spec)
    assert np.abs(again - reference).max() <= ATOL
    assert np.abs(first - reference).max() <= ATOL
    assert traced.info()["traced_unet_shapes"] == 1


def test_a_lora_or_tiling_runs_eagerly_and_the_base_graph_is_used_again_after(
    traced: SDEngine, eager: SDEngine
) -> None:
    assert traced.traced is not None
    spec = txt2img(seed=32, num_inference_steps=3)
    StepBatcher(traced).trace_ahead(spec, [1])
    traced.traced.wait()
    for engine in (traced, eager):
        engine.load_adapter(LoraSpec(name="tiny-7", path="tiny:7"))
    styled = txt2img(seed=32, num_inference_steps=3, lora_name="tiny-7", lora_scale=1.0)
    calls = traced.traced.traced_calls
    with_lora = _image(traced, styled)
    assert traced.traced.traced_calls == calls, "a LoRA step ran the base model's graph"
    assert np.abs(with_lora - _image(eager, styled)).max() <= ATOL
    assert np.abs(with_lora - _image(traced, spec)).max() > ATOL, "the adapter changed nothing: a useless check"
    calls = traced.traced.traced_calls
    tiled = _image(traced, txt2img(seed=32, num_inference_steps=3, tileable=True))
    assert traced.traced.traced_calls == calls, "a tiled step ran the untiled graph"
    assert np.abs(tiled - _image(eager, txt2img(seed=32, num_inference_steps=3, tileable=True))).max() <= ATOL
    base = _image(traced, spec)
    assert traced.traced.traced_calls == calls + 3
    assert np.abs(base - _image(eager, spec)).max() <= ATOL


@pytest.mark.parametrize(
    "reads",
    [
        [0, 1, 1, 1, 1],  # prepare; the trace's start: changed, so it is not made; the retry's prepare, start, end
        [0, 0, 1, 1, 1, 1],  # prepare; the trace's start and end: changed mid-trace; the retry's three reads
    ],
    ids=["changed-before-it-started", "changed-while-tracing"],
)
def test_a_trace_the_state_changed_under_is_thrown_away_and_made_again_from_the_next_base_call(
    eager: SDEngine, reads: list[int]
) -> None:
    versions = iter(reads)
    unet = TracedUNet(eager.txt2img.unet, threading.RLock(), lambda: next(versions))
    sample, timesteps, hidden = _inputs()
    expected = eager.txt2img.unet(sample, timesteps, encoder_hidden_states=hidden, return_dict=False)[0]
    unet.prepare(sample, timesteps, hidden)
    unet.wait()
    assert unet.shapes == 0
    assert torch.allclose(unet(sample, timesteps, hidden, base=True), expected, atol=1e-5)
    assert unet.eager_calls == 1  # eager, and the shape's trace starts again
    unet.wait()
    assert unet.shapes == 1
    assert torch.allclose(unet(sample, timesteps, hidden, base=True), expected, atol=1e-5)
    assert unet.traced_calls == 1
    assert torch.allclose(unet(sample, timesteps, hidden, base=False), expected, atol=1e-5)
    assert unet.traced_calls == 1 and unet.eager_calls == 2, "not the base model, yet the graph ran"
    assert next(versions, None) is None, "the reads did not go as the test says"


def test_a_shape_whose_traces_keep_being_thrown_away_stays_eager_after_three_retries(eager: SDEngine) -> None:
    reads = iter(range(1000))  # every read a new state: every trace is thrown away before it starts
    traces = 0

    def version() -> int:
        return next(reads)

    unet = TracedUNet(eager.txt2img.unet, threading.RLock(), version)
    original = unet._trace

    def counted(*args: object) -> None:
        nonlocal traces
        traces += 1
        original(*args)  # type: ignore[arg-type]

    unet._trace = counted  # type: ignore[method-assign]
    sample, timesteps, hidden = _inputs()
    unet.prepare(sample, timesteps, hidden)
    unet.wait()
    for _ in range(6):
        unet(sample, timesteps, hidden, base=True)
        unet.wait()
    assert traces == 1 + MAX_RETRIES
    assert unet.shapes == 0 and unet.eager_calls == 6


def test_a_shape_that_cannot_be_traced_runs_eagerly() -> None:
    class Untraceable(torch.nn.Module):
        traces = 0

        def forward(
            self, sample: torch.Tensor, timesteps: torch.Tensor, encoder_hidden_states: torch.Tensor, return_dict: bool
        ) -> tuple[torch.Tensor]:
            if torch.jit.is_tracing():
                Untraceable.traces += 1
                raise RuntimeError("cannot be traced")
            return (sample * 2,)

    sample, timesteps, hidden = _inputs()
    unet = TracedUNet(Untraceable(), threading.RLock(), lambda: 0)
    for _ in range(2):
        unet.prepare(sample, timesteps, hidden)
        unet.wait()
    assert Untraceable.traces == 1, "a failed shape was traced again"
    assert torch.equal(unet(sample, timesteps, hidden, base=True), sample * 2)
    assert unet.shapes == 0 and unet.eager_calls == 1


def test_tracing_ahead_makes_the_default_shapes_before_the_first_request(tiny_cache_dir: Path) -> None:
    engine = SDEngine(GeneratorModel(model_id="tiny", tuning=PipelineTuning(trace_unet=True)), tiny_cache_dir)
    assert engine.traced is not None
    batcher = StepBatcher(engine)
    batcher.trace_ahead(txt2img(seed=0), [1, 2])
    engine.traced.wait()
    assert engine.traced.shapes == 2  # 2 and 4 rows (classifier-free guidance doubles them)
    _image(engine, txt2img(seed=40, num_inference_steps=2))
    assert engine.traced.eager_calls == 0 and engine.traced.traced_calls == 2
    lora = txt2img(seed=0, lora_name="tiny-8")
    engine.load_adapter(LoraSpec(name="tiny-8", path="tiny:8"))
    batcher.trace_ahead(lora.model_copy(update={"height": 32, "width": 32}), [1])
    engine.traced.wait()
    assert engine.traced.shapes == 2, "a LoRA's shape was traced as the base model's"
