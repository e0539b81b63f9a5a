"""SDEngine on the tiny pipeline: batching, seeds, img2img, progress, cancellation; no Ray.

Also the Generator deployment's plain-Python parts (batch grouping and per-group errors,
progress throttling, user_config parsing), called directly without starting Serve.
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
import torch
from PIL import Image

from serve_app.errors import ConfigurationError, GenerationFailed, InvalidImage, InvalidInput, TaskCancelled
from serve_app.models.device import configure_torch_threads, resolve_device, resolve_dtype
from serve_app.models.sd_engine import SDEngine
from serve_app.presets import GeneratorModel, LoraSpec
from serve_app.stages import GenerationOutput, GenerationSpec, group_specs
from tests.support.specs import ATOL, pixels, txt2img
from tests.support.stages import CountedPins, bare_generator, run_batch

STEPS = 4
SIZE = 64
COZY_DESK: dict[str, Any] = {
    "prompt": "a cozy wooden desk with a monitor",
    "negative_prompt": "blurry",
    "num_inference_steps": STEPS,
    "height": SIZE,
    "width": SIZE,
}


@pytest.fixture(scope="module")
def engine(tiny_cache_dir: Path) -> SDEngine:
    return SDEngine(GeneratorModel(model_id="tiny"), tiny_cache_dir)


def make_spec(seed: int, **overrides: Any) -> GenerationSpec:
    return txt2img(**(COZY_DESK | overrides), seed=seed)


def init_png(seed: int = 5) -> bytes:
    """A deterministic 48x40 photo-like source (not the output size: the engine resizes it)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# --- device ------------------------------------------------------------------------------------


def test_resolve_device_and_dtype() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ConfigurationError, match="float16"):
        resolve_dtype("float16", cpu)
    with pytest.raises(ConfigurationError, match="Unknown dtype"):
        resolve_dtype("int8", cpu)
    with pytest.raises(ConfigurationError):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigurationError, match="CUDA"):
            resolve_device("cuda")


def test_configure_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.settings import get_settings

    before = torch.get_num_threads()
    monkeypatch.setenv("IMAGEGEN_TORCH_THREADS", "1")
    get_settings.cache_clear()
    try:
        assert configure_torch_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        monkeypatch.delenv("IMAGEGEN_TORCH_THREADS")
        get_settings.cache_clear()


# --- grouping ----------------------------------------------------------------------------------


def test_group_specs_groups_by_every_key_field() -> None:
    png = init_png()
    specs = [
        make_spec(1),
        make_spec(2, prompt="another prompt", negative_prompt="", task_id="t2"),  # same key as 0
        make_spec(3, height=32),
        make_spec(4, width=32),
        make_spec(5, num_inference_steps=2),
        make_spec(6, guidance_scale=3.0),
        make_spec(7, init_image_png=png),
        make_spec(8, init_image_png=png, strength=0.5),
        make_spec(9, lora_name="a"),
        make_spec(10, lora_name="a", lora_scale=0.5),
        make_spec(11, lora_name="b"),
        make_spec(12, init_image_png=png),  # joins 6
        make_spec(13, strength=0.1),  # strength is ignored for txt2img: joins 0
        make_spec(14, lora_scale=0.3),  # scale without a LoRA is ignored: joins 0
        make_spec(15, lora_name="a"),  # joins 8
    ]
    assert group_specs(specs) == [[0, 1, 12, 13], [2], [3], [4], [5], [6, 11], [7], [8, 14], [9], [10]]
    assert group_specs([]) == []


def test_mixed_keys_raise_value_error(engine: SDEngine) -> None:
    with pytest.raises(ValueError, match="group_key"):
        engine.generate([make_spec(1), make_spec(2, height=32)])
    assert engine.generate([]) == []


# --- seeds and batching --------------------------------------------------------------------------


def test_txt2img_batch_equals_single_calls(engine: SDEngine) -> None:
    seeds = [11, 22, 33]
    batch = engine.generate([make_spec(s) for s in seeds])
    singles = [engine.generate([make_spec(s)])[0] for s in seeds]
    for b, s, seed in zip(batch, singles, seeds, strict=True):
        assert b.seed == s.seed == seed
        assert b.batch_size == 3 and s.batch_size == 1
        assert b.model_id == "tiny" and b.lora_name is None and b.lora_scale is None
        assert pixels(b).shape == (SIZE, SIZE, 3)
        np.testing.assert_allclose(pixels(b), pixels(s), atol=ATOL, rtol=0)


def test_img2img_batch_equals_single_calls(engine: SDEngine) -> None:
    seeds = [11, 22, 33]
    source = init_png()
    batch = engine.generate([make_spec(s, init_image_png=source, strength=0.75) for s in seeds])
    singles = [engine.generate([make_spec(s, init_image_png=source, strength=0.75)])[0] for s in seeds]
    for b, s in zip(batch, singles, strict=True):
        assert pixels(b).shape == (SIZE, SIZE, 3)  # resized from 48x40
        np.testing.assert_allclose(pixels(b), pixels(s), atol=ATOL, rtol=0)
    # img2img starts from the photo: not the same as txt2img with the same seed.
    txt = engine.generate([make_spec(11)])[0]
    assert np.abs(pixels(txt) - pixels(batch[0])).mean() > 0.01


def test_same_seed_identical_different_seeds_differ(engine: SDEngine) -> None:
    first = engine.generate([make_spec(7)])[0]
    again = engine.generate([make_spec(7)])[0]
    other = engine.generate([make_spec(8)])[0]
    assert first.image_png == again.image_png
    assert np.abs(pixels(first) - pixels(other)).mean() > 0.01


def test_bad_init_image_is_invalid_image(engine: SDEngine) -> None:
    with pytest.raises(InvalidImage):
        engine.generate([make_spec(1, init_image_png=b"not a png")])


def test_img2img_with_zero_effective_steps_is_invalid_input(engine: SDEngine) -> None:
    with pytest.raises(InvalidInput, match="strength"):
        engine.generate([make_spec(1, init_image_png=init_png(), num_inference_steps=1, strength=0.5)])


# --- progress and cancellation -------------------------------------------------------------------


def test_on_step_reports_every_step(engine: SDEngine) -> None:
    calls: list[tuple[int, int]] = []
    engine.generate([make_spec(1), make_spec(2)], on_step=lambda i, n: calls.append((i, n)))
    assert calls == [(i, STEPS) for i in range(1, STEPS + 1)]

    # img2img runs int(steps * strength) denoising steps.
    calls.clear()
    engine.generate(
        [make_spec(1, init_image_png=init_png(), num_inference_steps=4, strength=0.5)],
        on_step=lambda i, n: calls.append((i, n)),
    )
    assert calls == [(1, 2), (2, 2)]


def test_should_stop_interrupts_and_raises_task_cancelled(engine: SDEngine) -> None:
    calls: list[tuple[int, int]] = []
    with pytest.raises(TaskCancelled):
        engine.generate(
            [make_spec(1, num_inference_steps=6)],
            on_step=lambda i, n: calls.append((i, n)),
            should_stop=lambda: len(calls) >= 2,
        )
    assert calls == [(1, 6), (2, 6)]

    # Cancelled before it starts: no denoising at all.
    calls.clear()
    with pytest.raises(TaskCancelled):
        engine.generate([make_spec(1)], on_step=lambda i, n: calls.append((i, n)), should_stop=lambda: True)
    assert calls == []

    # The pipeline resets its interrupt flag: the next call runs fully.
    engine.generate([make_spec(1)], on_step=lambda i, n: calls.append((i, n)), should_stop=lambda: False)
    assert calls == [(i, STEPS) for i in range(1, STEPS + 1)]


def test_info(engine: SDEngine) -> None:
    info = engine.info()
    assert info["model_id"] == "tiny" and info["family"] == "sd"
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert isinstance(info["adapters"], list)
    # img2img shares the txt2img weights (no second copy).
    assert engine.img2img.unet is engine.txt2img.unet
    assert engine.img2img.vae is engine.txt2img.vae
    assert engine.img2img.text_encoder is engine.txt2img.text_encoder


# --- Generator deployment logic (no Ray) ----------------------------------------------------------


async def test_progress_is_throttled_and_the_last_step_always_reported() -> None:
    from deployments.generator import GroupControl, PendingImage

    loop = asyncio.get_running_loop()
    members = [PendingImage(make_spec(1), loop, events=asyncio.Queue()) for _ in range(2)]
    quiet = PendingImage(make_spec(2), loop)  # a caller without a stream (generate): no events
    control = GroupControl([*members, quiet])
    for step in range(1, 6):
        control.on_step(step, 5)  # from the worker thread in real runs; thread-safe either way
    await asyncio.sleep(0)
    for member in members:
        assert member.events is not None
        seen = [member.events.get_nowait() for _ in range(member.events.qsize())]
        assert [(e.step, e.total) for e in seen] == [(1, 5), (5, 5)], "first step, then throttled, last always"


async def test_a_pipeline_call_stops_only_when_every_caller_cancelled() -> None:
    from deployments.generator import GroupControl, PendingImage

    loop = asyncio.get_running_loop()
    a, b = PendingImage(make_spec(1), loop), PendingImage(make_spec(2), loop)
    control = GroupControl([a, b])
    assert control.should_stop() is False
    a.cancelled = True
    assert control.should_stop() is False, "an image somebody still waits for is never thrown away"
    b.cancelled = True
    assert control.should_stop() is True


def test_parse_batch_knobs() -> None:
    from serve_app.batching import parse_batch_knobs

    assert parse_batch_knobs({}) == (None, None)
    assert parse_batch_knobs({"max_batch_size": 8, "batch_wait_timeout_s": 0}) == (8, 0.0)
    for bad in ({"max_batch_size": 0}, {"max_batch_size": 2.5}, {"max_batch_size": True}, {"batch_wait_timeout_s": -1}):
        with pytest.raises(ConfigurationError):
            parse_batch_knobs(bad)


class FakeEngine(CountedPins):
    """Records calls; fails any group whose prompt says so."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[GenerationSpec]] = []

    def generate(
        self,
        specs: list[GenerationSpec],
        on_step: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[GenerationOutput]:
        self.calls.append(list(specs))
        if specs[0].prompt == "boom":
            raise RuntimeError("kaput")
        if specs[0].prompt == "cancel":
            raise TaskCancelled()
        return [GenerationOutput(image_png=b"png", seed=s.seed, model_id="fake", batch_size=len(specs)) for s in specs]


async def test_generator_batch_fails_only_the_failing_group() -> None:
    from deployments.generator import Generator, PendingImage

    cls = Generator.func_or_class
    gen = bare_generator(FakeEngine())
    adapters: list[str] = []

    async def get_adapter(name: str) -> None:
        if name == "missing":
            raise InvalidInput(f"Unknown LoRA adapter {name!r}.")
        adapters.append(name)

    gen.get_adapter = get_adapter
    specs = [
        make_spec(1),
        make_spec(2, prompt="boom", height=32),
        make_spec(3),
        make_spec(4, lora_name="cozy"),
        make_spec(5, prompt="cancel", width=32),
        make_spec(6, lora_name="missing"),
    ]
    results = await run_batch(gen, specs)

    assert [type(r).__name__ for r in results] == [
        "GenerationOutput",
        "GenerationFailed",
        "GenerationOutput",
        "GenerationOutput",
        "TaskCancelled",
        "InvalidInput",
    ]
    assert [r.seed for r in results if isinstance(r, GenerationOutput)] == [1, 3, 4]
    assert results[0].batch_size == 2  # specs 0 and 2 shared one call
    assert isinstance(results[1], GenerationFailed) and "kaput" in results[1].message
    assert adapters == ["cozy"]
    assert gen.engine.pins == {"cozy": 0, "missing": 0}, "each group's adapter is pinned for its call only"
    assert [[s.seed for s in call] for call in gen.engine.calls] == [[1, 3], [2], [4], [5]]

    # The public method re-raises a per-request error instead of returning it.
    async def fake_batch(pending: PendingImage) -> Any:
        assert pending.events is None or pending.events.empty()
        return TaskCancelled() if pending.spec.seed == 0 else "ok"

    gen._generate_batch = fake_batch
    assert await cls.generate(gen, make_spec(1)) == "ok"
    with pytest.raises(TaskCancelled):
        await cls.generate(gen, make_spec(0))
    assert [event async for event in cls.generate_stream(gen, make_spec(1))] == ["ok"]
    with pytest.raises(TaskCancelled):
        async for _ in cls.generate_stream(gen, make_spec(0)):
            pass


def test_loaded_adapter_unloads_once() -> None:
    from deployments.generator import LoadedAdapter

    class Recorder:
        unloaded: list[str] = []

        def unload_adapter(self, name: str) -> None:
            self.unloaded.append(name)

    engine = Recorder()
    adapter = LoadedAdapter(engine, "cozy")  # type: ignore[arg-type]
    adapter.__del__()  # what Serve's multiplexer calls on LRU eviction
    adapter.__del__()
    del adapter  # and what garbage collection calls later
    assert engine.unloaded == ["cozy"]


def test_family_mismatch_is_a_configuration_error(tiny_cache_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="sdxl"):
        SDEngine(GeneratorModel(model_id="tiny", family="sdxl"), tiny_cache_dir)


async def test_cancelling_the_caller_stops_the_diffusion_loop() -> None:
    """What the runner's `stream.cancel()` becomes in the replica: the request's coroutine is
    cancelled, and the running pipeline call sees should_stop() at its next step."""
    import threading

    from deployments.generator import Generator, PendingImage

    started, observed = threading.Event(), threading.Event()

    class LoopingEngine:
        steps = 0

        def generate(self, specs: Any, on_step: Any = None, should_stop: Any = None) -> Any:
            for step in range(1, 10_000):
                self.steps = step
                on_step(step, 10_000)
                started.set()
                if should_stop():
                    observed.set()
                    raise TaskCancelled()
                time.sleep(0.001)
            raise AssertionError("the loop was never told to stop")

    cls = Generator.func_or_class
    gen = bare_generator(LoopingEngine())

    async def unbatched(pending: PendingImage) -> Any:  # @serve.batch needs a replica; same code path
        return (await cls._generate_batch.__wrapped__(gen, [pending]))[0]

    gen._generate_batch = unbatched
    events: list[Any] = []

    async def consume() -> None:
        async for event in cls.generate_stream(gen, make_spec(1)):
            events.append(event)

    caller = asyncio.ensure_future(consume())
    await asyncio.to_thread(started.wait, 10)
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await asyncio.to_thread(observed.wait, 10), "should_stop() never turned true"
    assert gen.engine.steps < 10_000 and events and events[0].step == 1


def test_the_gpu_share_report_says_when_a_model_does_not_fit() -> None:
    from serve_app.models.device import gpu_share_report

    gib = 1024**3
    fits, line = gpu_share_report("Generator", 2 * gib, 0.8, 16 * gib)
    assert fits and "2.00 GiB of a 12.80 GiB share" in line
    fits, line = gpu_share_report("Captioner", 2 * gib, 0.1, 16 * gib)
    assert not fits and "raise num_gpus" in line
    assert gpu_share_report("Generator", 10 * gib, None, 16 * gib)[0], "no share: the whole GPU"


# -- seamless tiling --------------------------------------------------------------------------------


def _shift_equivariant(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, shift: int, scale: int) -> bool:
    """Whether rolling the input by `shift` (both axes) rolls the output by `shift * scale`."""
    with torch.no_grad():
        plain = fn(z)
        rolled = fn(torch.roll(z, shifts=(shift, shift), dims=(-2, -1)))
    expected = torch.roll(plain, shifts=(shift * scale, shift * scale), dims=(-2, -1))
    return torch.allclose(rolled, expected, atol=1e-4)


def test_tiling_pads_the_unet_and_vae_circularly_so_the_image_wraps_without_a_seam(engine: SDEngine) -> None:
    """A seam-free tile means the left edge continues the right edge as any column continues its
    neighbour: exactly when every layer is equivariant to a circular shift. With zero padding the
    edges are special and rolling the latents does not roll the image; with tiling on it does, for
    the VAE decoder (pixels) and the UNet (each denoising step)."""
    vae, unet = engine.txt2img.vae, engine.txt2img.unet
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, vae.config.latent_channels, 8, 8, generator=generator)
    text = torch.randn(1, 4, unet.config.cross_attention_dim, generator=generator)
    upscale = 2 ** (len(vae.config.block_out_channels) - 1)
    unet_stride = 2 ** (len(unet.config.block_out_channels) - 1)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z).sample

    def denoise(z: torch.Tensor) -> torch.Tensor:
        return unet(z, 10, encoder_hidden_states=text).sample

    with engine._lock:
        try:
            assert not _shift_equivariant(decode, latents, 1, upscale)  # zero padding: the edges show
            assert not _shift_equivariant(denoise, latents, unet_stride, 1)
            engine.set_tiling(True)
            assert _shift_equivariant(decode, latents, 1, upscale)
            assert _shift_equivariant(denoise, latents, unet_stride, 1)
        finally:
            engine.set_tiling(False)
        assert not _shift_equivariant(decode, latents, 1, upscale)  # and off again for normal images


def test_tileable_specs_batch_apart_and_leave_the_pipeline_as_it_was(engine: SDEngine) -> None:
    plain, tiled = make_spec(3), make_spec(3, tileable=True)
    assert group_specs([plain, tiled, make_spec(4)]) == [[0, 2], [1]]
    before = pixels(engine.generate([plain])[0])
    engine.generate([tiled])
    assert np.allclose(pixels(engine.generate([plain])[0]), before, atol=ATOL)


def test_an_adapter_change_that_fails_part_way_leaves_the_state_unknown(
    engine: SDEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the next call sets its state again rather than trusting the old one (nor the base-model
    graph a traced UNet keeps for that old state)."""
    engine._activate(None, 0.0)
    assert engine._is_base()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("set_adapters failed")

    monkeypatch.setitem(engine._adapters, "half-set", LoraSpec(name="half-set", path="tiny:9"))
    monkeypatch.setattr(engine.txt2img, "enable_lora", lambda: None)
    monkeypatch.setattr(engine.txt2img, "set_adapters", broken)
    with pytest.raises(RuntimeError):
        engine._activate("half-set", 1.0)
    assert engine._state is None and not engine._is_base()
