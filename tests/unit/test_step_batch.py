"""Step-level batching on the tiny SD pipeline: a sample's image is the same alone, joined to a
running batch at any step, and as the diffusers pipeline makes it; no Ray.

Tolerance: 2/255 per pixel channel (ATOL), what a batched matmul's rounding can move a uint8
level; in practice the differences are 0 or 1 level.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serve_app.errors import InvalidInput, TaskCancelled
from serve_app.models.sd_engine import SDEngine
from serve_app.models.step_batch import Decoded, Sample, StepBatcher, joinable
from serve_app.models.step_loop import Finished, StepLoop
from serve_app.presets import GeneratorModel
from serve_app.stages import GenerationSpec
from tests.support.specs import ATOL, pixels, txt2img


@pytest.fixture(scope="module")
def engine(tiny_cache_dir: Path) -> SDEngine:
    return SDEngine(GeneratorModel(model_id="tiny"), tiny_cache_dir)


@pytest.fixture
def batcher(engine: SDEngine) -> StepBatcher:
    return StepBatcher(engine)


def _array(decoded: Decoded) -> np.ndarray:
    return np.asarray(decoded.image.convert("RGB"), dtype=np.float32) / 255.0


def _run(batcher: StepBatcher, arrivals: dict[int, list[GenerationSpec]]) -> dict[int, np.ndarray]:
    """Step the batch, admitting arrivals[k] before step k; each finished sample's image, by seed."""
    batcher.activate(next(iter(arrivals.values()))[0])
    active: list[Sample] = []
    images: dict[int, np.ndarray] = {}
    step = 0
    while active or any(k >= step for k in arrivals):
        active += [batcher.admit(spec) for spec in arrivals.get(step, [])]
        batcher.step(active)
        done = [sample for sample in active if sample.done]
        for sample, decoded in zip(done, batcher.decode(done), strict=True):
            images[sample.spec.seed] = _array(decoded)
        active = [sample for sample in active if not sample.done]
        step += 1
    return images


def _png(seed: int = 5) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_sample_alone_is_the_pipelines_image(engine: SDEngine, batcher: StepBatcher) -> None:
    spec = txt2img(seed=11, negative_prompt="blurry")
    (made,) = engine.generate([spec])
    alone = _run(batcher, {0: [spec]})[11]
    assert np.abs(alone - pixels(made)).max() <= ATOL


def test_joining_a_running_batch_at_any_step_changes_no_image(batcher: StepBatcher) -> None:
    specs = [txt2img(seed=seed, num_inference_steps=steps) for seed, steps in ((1, 6), (2, 4), (3, 5))]
    alone = {spec.seed: _run(batcher, {0: [spec]})[spec.seed] for spec in specs}
    joined = _run(batcher, {0: [specs[0]], 2: [specs[1]], 3: [specs[2]]})  # each at its own step
    for spec in specs:
        assert np.abs(joined[spec.seed] - alone[spec.seed]).max() <= ATOL, spec.seed


def test_guidance_and_img2img_mix_in_one_batch(engine: SDEngine, batcher: StepBatcher) -> None:
    photo: dict[str, Any] = {"init_image_png": _png(), "strength": 0.5, "num_inference_steps": 8}
    specs = [txt2img(seed=4, guidance_scale=3.0), txt2img(seed=5, guidance_scale=9.0, **photo)]
    assert joinable(specs[0]) == joinable(specs[1])
    joined = _run(batcher, {0: [specs[0]], 1: [specs[1]]})
    for spec in specs:
        (made,) = engine.generate([spec])
        assert np.abs(joined[spec.seed] - pixels(made)).max() <= ATOL, spec.seed


def test_lanes_split_a_step_and_change_no_image(engine: SDEngine, batcher: StepBatcher) -> None:
    """Three samples over two lanes (slices of 2 and 1, stepped at once on two threads, two VAE
    calls) make each sample's image of one lane; the lane threads see no autograd."""
    specs = [txt2img(seed=seed, num_inference_steps=steps) for seed, steps in ((21, 5), (22, 4), (23, 5))]
    one_lane = _run(batcher, {0: specs[:2], 1: specs[2:]})
    lanes = StepBatcher(engine, lanes=2)
    assert lanes._in_lanes(len, specs) == [2, 1]  # type: ignore[arg-type]
    lanes.activate(specs[0])
    samples = [lanes.admit(spec) for spec in specs]
    lanes.step(samples)
    assert all(sample.latents.grad_fn is None for sample in samples), "a lane thread recorded autograd"
    two_lanes = _run(lanes, {0: specs[:2], 1: specs[2:]})
    assert lanes._pool_workers == 1
    for spec in specs:
        assert np.abs(two_lanes[spec.seed] - one_lane[spec.seed]).max() <= ATOL, spec.seed
    with pytest.raises(ValueError, match="at least 1"):
        lanes.lanes = 0


def test_a_failing_lane_fails_the_step_after_every_lane_stopped(batcher: StepBatcher) -> None:
    batcher.lanes = 3
    finished: list[int] = []

    def work(part: list[Any]) -> int:
        if part[0] == 0:
            raise RuntimeError("lane 0 failed")
        time.sleep(0.05)
        finished.append(part[0])
        return part[0]

    try:
        with pytest.raises(RuntimeError, match="lane 0 failed"):
            batcher._in_lanes(work, [0, 1, 2])  # type: ignore[arg-type]
        assert sorted(finished) == [1, 2], "the other lanes ran to their end before the error left"
    finally:
        batcher.lanes = 1


def test_what_cannot_share_a_unet_call_does_not_join() -> None:
    base = txt2img(seed=1)
    assert joinable(base) == joinable(txt2img(seed=2, num_inference_steps=9, guidance_scale=2.0))
    for other in (
        txt2img(seed=1, height=72),
        txt2img(seed=1, lora_name="cozy-wood"),
        txt2img(seed=1, tileable=True),
        txt2img(seed=1, guidance_scale=1.0),
    ):
        assert joinable(other) != joinable(base)


# -- the async loop ------------------------------------------------------------------------------------


class Request:
    """A request as the Generator holds it: its spec, its progress, whether its caller went away;
    `then` runs after a given step of it is reported (to make arrivals happen at a known step)."""

    def __init__(self, spec: GenerationSpec, then: dict[int, Callable[[], None]] | None = None) -> None:
        self.spec, self.cancelled = spec, False
        self.steps: list[tuple[int, int]] = []
        self.then = then or {}

    def report(self, step: int, total: int) -> None:
        self.steps.append((step, total))
        if step in self.then:
            self.then.pop(step)()


async def test_the_loop_lets_a_request_join_at_the_next_step_and_leave_at_its_last(batcher: StepBatcher) -> None:
    loop = StepLoop(batcher, max_batch_size=4)
    late = Request(txt2img(seed=2, num_inference_steps=3))
    joined: list[asyncio.Future[Finished]] = []
    first = Request(txt2img(seed=1, num_inference_steps=6), then={2: lambda: joined.append(loop.submit(late))})
    try:
        done_first = await loop.submit(first)
        done_late = await joined[0]
    finally:
        await loop.close()
    assert first.steps == [(i, 6) for i in range(1, 7)] and late.steps == [(i, 3) for i in range(1, 4)]
    assert done_first.peak_batch == 2 and done_late.peak_batch == 2, "they shared steps 3 to 5"
    alone = _run(batcher, {0: [late.spec]})[2]
    assert np.abs(_array(done_late.decoded) - alone).max() <= ATOL
    assert 0 < done_late.model_seconds and loop.active == 0 and loop.waiting == 0


async def test_a_cancelled_request_leaves_and_another_key_waits_for_the_batch_to_drain(
    batcher: StepBatcher,
) -> None:
    loop = StepLoop(batcher, max_batch_size=4)
    other_size = Request(txt2img(seed=3, height=72, num_inference_steps=2))
    gone = Request(txt2img(seed=4, num_inference_steps=6))
    runs_on = Request(
        txt2img(seed=5, num_inference_steps=4),
        then={1: lambda: setattr(gone, "cancelled", True)},
    )
    try:
        futures = [loop.submit(runs_on), loop.submit(gone), loop.submit(other_size)]
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await loop.close()
    assert isinstance(results[1], TaskCancelled) and len(gone.steps) == 1
    assert isinstance(results[0], Finished) and isinstance(results[2], Finished)
    assert other_size.steps[0] == (1, 2) and results[2].peak_batch == 1, "it ran after the 64px batch drained"
    assert results[2].decoded.image.size == (64, 72)


async def test_interleaved_keys_batch_by_key_and_a_waiting_key_is_not_starved(batcher: StepBatcher) -> None:
    """Arrivals 64, 72, 64: the two 64px requests share steps, the 72px one runs next. With
    switch_after_s 0, a request of the running key that comes once another key waits does not join."""
    loop = StepLoop(batcher, max_batch_size=4)
    a, b, c = (Request(txt2img(seed=s, height=h, num_inference_steps=3)) for s, h in ((1, 64), (2, 72), (3, 64)))
    try:
        done = await asyncio.gather(loop.submit(a), loop.submit(b), loop.submit(c))
    finally:
        await loop.close()
    assert [d.peak_batch for d in done] == [2, 1, 2]

    strict = StepLoop(batcher, max_batch_size=4, switch_after_s=0.0)
    late: list[asyncio.Future[Finished]] = []
    d, e = Request(txt2img(seed=4, height=72, num_inference_steps=2)), Request(txt2img(seed=5, num_inference_steps=2))
    first = Request(
        txt2img(seed=6, num_inference_steps=3),
        then={1: lambda: late.extend([strict.submit(d), strict.submit(e)])},
    )
    try:
        first_done = await strict.submit(first)
        rest = await asyncio.gather(*late)
    finally:
        await strict.close()
    assert first_done.peak_batch == 1 and [r.peak_batch for r in rest] == [1, 1], "e waited its turn behind d"
    assert d.steps and e.steps


def test_a_pipeline_call_between_steps_leaves_the_batch_in_its_own_state(engine: SDEngine) -> None:
    """The Generator switched live to static batching while samples still step: its pipeline call
    sets its own adapter and tiling, and the next step puts the batch's back."""
    tiled = txt2img(seed=51, num_inference_steps=4, tileable=True)
    alone = _run(StepBatcher(engine), {0: [tiled]})[51]
    plain = _run(StepBatcher(engine), {0: [txt2img(seed=51, num_inference_steps=4)]})[51]
    assert np.abs(alone - plain).max() > ATOL, "tiling changed nothing: a useless check"
    batcher = StepBatcher(engine)
    batcher.activate(tiled)
    sample = batcher.admit(tiled)
    batcher.step([sample])
    engine.generate([txt2img(seed=52, num_inference_steps=2)])  # a static call: untiled
    assert not engine._tiling
    while not sample.done:
        batcher.step([sample])
    (decoded,) = batcher.decode([sample])
    assert np.abs(_array(decoded) - alone).max() <= ATOL


def test_a_warm_up_beside_a_running_batch_leaves_the_batch_its_key_and_state(engine: SDEngine) -> None:
    """A live reconfigure warms new batch sizes at the default key while a tiled batch runs."""
    from serve_app.models.warmup import warm_up
    from serve_app.presets import load_preset

    tiled = txt2img(seed=53, num_inference_steps=3, tileable=True)
    alone = _run(StepBatcher(engine), {0: [tiled]})[53]
    batcher = StepBatcher(engine)
    batcher.activate(tiled)
    sample = batcher.admit(tiled)
    batcher.step([sample])
    warm_up(engine, load_preset("tiny").defaults, [1], batcher)
    assert batcher.key == joinable(tiled) and engine._tiling
    while not sample.done:
        batcher.step([sample])
    (decoded,) = batcher.decode([sample])
    assert np.abs(_array(decoded) - alone).max() <= ATOL


def test_an_img2img_sample_with_no_step_is_refused_alone(batcher: StepBatcher) -> None:
    """2 steps at strength 0.3 denoise no step: the pipeline call refuses it, and so does admit
    (before, it took a place in the batch and failed every step of it)."""
    spec = txt2img(seed=9, init_image_png=_png(), strength=0.3, num_inference_steps=2)
    batcher.activate(spec)
    with pytest.raises(InvalidInput, match="at least 1"):
        batcher.admit(spec)


class FailingDecode(StepBatcher):
    """A VAE that fails once (out of memory, say)."""

    failures = 1

    def decode(self, samples: list[Sample]) -> list[Decoded]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the VAE ran out of memory")
        return super().decode(samples)


async def test_a_failing_decode_fails_its_own_requests_and_the_batch_goes_on(engine: SDEngine) -> None:
    """Before: the finished requests were out of the batch when their decode failed, so nothing ever
    answered them, and the error failed the requests still denoising instead."""
    errors: list[int] = []
    loop = StepLoop(FailingDecode(engine), max_batch_size=4, on_error=lambda exc, count: errors.append(count))
    short, long = Request(txt2img(seed=7, num_inference_steps=1)), Request(txt2img(seed=8, num_inference_steps=3))
    try:
        both = asyncio.gather(loop.submit(short), loop.submit(long), return_exceptions=True)
        results = await asyncio.wait_for(both, timeout=120)  # a bound on a hang, not a speed check
    finally:
        await loop.close()
    assert isinstance(results[0], RuntimeError) and "out of memory" in str(results[0])
    assert isinstance(results[1], Finished) and results[1].peak_batch == 2
    assert errors == [1]


async def test_a_failing_step_observer_fails_no_request(batcher: StepBatcher) -> None:
    def broken(modes: dict[str, int], seconds: float) -> None:
        raise RuntimeError("a metrics backend is down")

    loop = StepLoop(batcher, max_batch_size=2, on_step=broken)
    try:
        done = await asyncio.wait_for(loop.submit(Request(txt2img(seed=11, num_inference_steps=2))), timeout=120)
    finally:
        await loop.close()
    assert isinstance(done, Finished)


async def test_a_live_switch_to_static_that_evicts_the_batchs_adapter_fails_neither_path(engine: SDEngine) -> None:
    """One adapter a replica (`max_loras_per_replica` 1) and `batching` switched live from step to
    static: a static group loads tiny-2 while the step loop's batch runs on tiny-1, and Serve's
    multiplexer evicts tiny-1 for it. Before, the unload landed between two steps and the batch's
    next step failed ("not loaded"); now it waits until the batch is done, and both images are
    the ones made alone."""
    from collections import OrderedDict

    from deployments.generator import LoadedAdapter
    from serve_app.presets import LoraSpec
    from tests.support.stages import bare_generator, run_batch

    adapters = {f"tiny-{n}": LoraSpec(name=f"tiny-{n}", path=f"tiny:{n}") for n in (1, 2)}
    on_one = txt2img(seed=61, num_inference_steps=6, lora_name="tiny-1")
    on_two = txt2img(seed=62, num_inference_steps=2, lora_name="tiny-2")
    for spec in adapters.values():
        engine.load_adapter(spec)
    reference = StepBatcher(engine)
    alone_one = _run(reference, {0: [on_one]})[61]
    reference.activate(txt2img(seed=0))  # a batcher keeps its key's adapter pinned until its next key
    alone_two = engine.generate([on_two])[0].image_png
    for name in adapters:
        engine.unload_adapter(name)

    resident: OrderedDict[str, LoadedAdapter] = OrderedDict()

    async def multiplexer(name: str) -> LoadedAdapter:
        """Serve's `serve.multiplexed(max_num_models_per_replica=1)`: LRU, `__del__` on eviction."""
        if name in resident:
            resident.move_to_end(name)
            return resident[name]
        while resident:
            _, evicted = resident.popitem(last=False)
            await asyncio.get_running_loop().run_in_executor(None, evicted.__del__)
        resident[name] = await gen._load_adapter(name)
        return resident[name]

    gen = bare_generator(engine, adapters=adapters, get_adapter=multiplexer)
    loop = StepLoop(StepBatcher(engine), max_batch_size=4, load_adapter=gen._resident)
    static: list[asyncio.Future[list[Any]]] = []
    kept: list[bool] = []

    def switch() -> None:
        """Between steps 2 and 3: the multiplexer evicts tiny-1 to make room for the static group."""
        _, evicted = resident.popitem(last=False)
        evicted.__del__()
        kept.append("tiny-1" in engine.adapters)
        static.append(asyncio.ensure_future(run_batch(gen, [on_two])))

    try:
        stepped = await asyncio.wait_for(loop.submit(Request(on_one, then={2: switch})), timeout=120)
        (called,) = await asyncio.wait_for(static[0], timeout=120)  # bounds on a hang, not speed checks
        for _ in range(1200):  # the idle loop lets the batch's adapter go
            if "tiny-1" not in engine.adapters:
                break
            await asyncio.sleep(0.05)
    finally:
        await loop.close()
    assert kept == [True], "the eviction waited for the batch"
    assert np.abs(_array(stepped.decoded) - alone_one).max() <= ATOL
    assert called.image_png == alone_two and called.lora_name == "tiny-2"
    assert engine.adapters == ["tiny-2"] and engine.pipeline_adapters() == {"tiny-2"}, "unloaded once it was done"
    assert engine._pins._counts == {}, "every pin was dropped, once"
    engine.unload_adapter("tiny-2")
