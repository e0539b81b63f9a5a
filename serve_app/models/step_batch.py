"""Step-level (continuous) batching for Stable Diffusion: a request joins the running batch at the
next denoising step and leaves it after its own last step, instead of waiting for a whole batch.

Each sample carries its own scheduler (its timesteps and state), prompt embeddings, guidance,
generator and latents; one UNet call per step serves every active sample, each at its own
timestep (the UNet takes one timestep per batch row). The steps are the diffusers pipeline's own,
replayed per sample (encode_prompt, prepare_latents, scale_model_input, classifier-free guidance,
scheduler.step, VAE decode, the safety checker), so a sample's image is the pipeline's image for
its seed up to float rounding, alone or joined.

Samples run together only when they share what is pipeline state or tensor shape (`joinable`):
the size, the LoRA adapter and scale, seamless tiling, and whether guidance is on. SD-family
pipelines only (SDXL's added conditioning is not replayed here: it keeps static batching).

Lanes (CPU): with `lanes` > 1 a step splits the batch into up to that many sub-batches and runs
them at once, each on a thread of its own (torch releases the GIL inside its kernels), as a replica
with one torch thread per lane would use that many cores. A GPU runs the whole batch in one call:
keep 1 there. The images are the same either way (each row's arithmetic is its own).

`StepBatcher` is synchronous (call it from one worker thread at a time); `serve_app.models.step_loop`
runs it for an async deployment.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from serve_app.errors import InvalidInput
from serve_app.models.sd_engine import SDEngine, decode_init_image
from serve_app.models.tuning import Verdict, has_safety_checker
from serve_app.stages import GenerationSpec

JoinKey = tuple[Any, ...]


def joinable(spec: GenerationSpec) -> JoinKey:
    """What samples denoising in one UNet call must share."""
    return (
        spec.height,
        spec.width,
        spec.lora_name,
        spec.lora_scale if spec.lora_name else None,
        spec.tileable,
        spec.guidance_scale > 1.0,
    )


@dataclass(eq=False)
class Sample:
    """One image being denoised: its spec and its own diffusion state."""

    spec: GenerationSpec
    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor  # [1, C, h, w]
    embeds: torch.Tensor  # [2, L, D] (negative, positive) with guidance, else [1, L, D]
    extra: dict[str, Any] = field(default_factory=dict)  # the scheduler's step kwargs (eta, generator)
    index: int = 0  # the next timestep to run
    admitted_at: float = field(default_factory=time.perf_counter)

    @property
    def total(self) -> int:
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.index >= self.total


@dataclass
class Decoded:
    """A finished sample's image, before it is encoded."""

    image: Image.Image
    safety: Verdict


class StepBatcher:
    """The SD pipelines of an `SDEngine`, driven one denoising step at a time."""

    def __init__(self, engine: SDEngine, lanes: int = 1) -> None:
        if engine.model.family != "sd":
            raise ValueError("step-level batching replays SD-family pipelines only")
        if engine.txt2img.unet.config.time_cond_proj_dim is not None:
            raise ValueError("step-level batching does not replay guidance-embedding (LCM) UNets")
        self.engine = engine
        self.key: JoinKey | None = None
        self._held: str | None = None  # the key's adapter, pinned in the engine while it is the key
        self.lanes = lanes
        self._pool: ThreadPoolExecutor | None = None  # the lanes past the caller's own thread
        self._pool_workers = 0

    @property
    def lanes(self) -> int:
        return self._lanes

    @lanes.setter
    def lanes(self, lanes: int) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        self._lanes = lanes

    def _in_lanes(self, work: Callable[[list[Sample]], Any], samples: list[Sample]) -> list[Any]:
        """`work` over up to `lanes` contiguous slices of `samples` at once, under the engine's lock
        (nothing changes the adapter or tiling mid-step); the results in order."""
        count = min(self.lanes, len(samples))
        size = -(-len(samples) // count)
        slices = [samples[i : i + size] for i in range(0, len(samples), size)]
        with self.engine._lock:
            self._restore_key()
            if len(slices) == 1:
                return [work(slices[0])]
            if self._pool is None or self._pool_workers < len(slices) - 1:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool_workers = len(slices) - 1
                self._pool = ThreadPoolExecutor(max_workers=self._pool_workers, thread_name_prefix="step-lane")
            others = [self._pool.submit(work, part) for part in slices[1:]]
            try:
                first = work(slices[0])
            finally:
                wait(others)  # no lane outlives the lock, whatever failed
            return [first, *(future.result() for future in others)]

    # -- the batch's shared state -------------------------------------------------------------------

    def activate(self, spec: GenerationSpec) -> None:
        """Set the pipeline state of `spec`'s join key (adapter, tiling); only with no sample active.
        The key's adapter stays pinned (`SDEngine.pin`) while it is the key: an eviction meanwhile
        waits until the next key's."""
        engine = self.engine
        with engine._lock:
            if spec.lora_name:
                engine.pin(spec.lora_name)
            try:
                engine._activate(spec.lora_name, spec.lora_scale)
                engine.set_tiling(spec.tileable)
            except BaseException:
                if spec.lora_name:
                    engine.unpin(spec.lora_name)
                raise
            prior, self._held = self._held, spec.lora_name
            self.key = joinable(spec)
            if prior:
                engine.unpin(prior)

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """Work on another join key (warm-up, traces) beside a running batch: under the engine's lock
        throughout, and the batch's key, its adapter's pin and pipeline state (adapter, tiling) back after."""
        engine = self.engine
        with engine._lock:
            prior, held = self.key, self._held
            if held:
                engine.pin(held)  # the work's own activate() drops one pin of it
            try:
                yield
            finally:
                work, self.key, self._held = self._held, prior, held
                try:
                    if work:
                        engine.unpin(work)
                finally:
                    self._restore_key()

    def release(self) -> None:
        """No batch runs (the loop is idle): drop the key and its adapter's pin, so an eviction of it
        (a static call's load, after a live switch) is not held up until a next step batch."""
        with self.engine._lock:
            held, self.key, self._held = self._held, None, None
            if held:
                self.engine.unpin(held)

    def _restore_key(self) -> None:
        """The pipeline back in the batch's state (adapter, tiling) when a pipeline call since the last
        step changed it (the Generator switched live to static batching with samples in flight):
        no-ops otherwise. Under the engine's lock."""
        if self.key is None:
            return
        _, _, lora_name, lora_scale, tileable, _ = self.key
        self.engine._activate(lora_name, lora_scale if lora_name else 0.0)
        self.engine.set_tiling(tileable)

    # -- one sample in --------------------------------------------------------------------------------

    @torch.no_grad()
    def admit(self, spec: GenerationSpec) -> Sample:
        """A sample ready for its first step: prompt embeddings, its scheduler's timesteps (from the
        strength's start for img2img) and its initial latents, drawn from its seed as the pipeline does."""
        if joinable(spec) != self.key:
            raise ValueError("activate() the sample's join key before admitting it")
        engine = self.engine
        img2img = spec.init_image_png is not None
        if img2img and int(spec.num_inference_steps * spec.strength) < 1:  # as the pipeline call refuses it
            raise InvalidInput("num_inference_steps * strength must be at least 1 for image-to-image.")
        pipe = engine.img2img if img2img else engine.txt2img
        device = engine.device
        guided = spec.guidance_scale > 1.0
        gen_device = "cpu" if device.type == "mps" else device
        generator = torch.Generator(gen_device).manual_seed(spec.seed)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        with engine._lock:
            positive, negative = pipe.encode_prompt(spec.prompt, device, 1, guided, spec.negative_prompt)
            embeds = torch.cat([negative, positive]) if guided else positive
            scheduler.set_timesteps(spec.num_inference_steps, device=device)
            shared = pipe.scheduler
            pipe.scheduler = scheduler  # the pipeline's helpers read self.scheduler: this sample's, for now
            try:
                if img2img:
                    image = pipe.image_processor.preprocess(
                        decode_init_image(spec.init_image_png or b"", spec.width, spec.height)
                    )
                    timesteps, _ = pipe.get_timesteps(spec.num_inference_steps, spec.strength, device)
                    latents = pipe.prepare_latents(image, timesteps[:1], 1, 1, embeds.dtype, device, generator)
                else:
                    timesteps = scheduler.timesteps
                    channels = pipe.unet.config.in_channels
                    latents = pipe.prepare_latents(
                        1, channels, spec.height, spec.width, embeds.dtype, device, generator
                    )
                extra = pipe.prepare_extra_step_kwargs(generator, 0.0)
            finally:
                pipe.scheduler = shared
        return Sample(spec=spec, scheduler=scheduler, timesteps=timesteps, latents=latents, embeds=embeds, extra=extra)

    # -- every active sample one step ------------------------------------------------------------------

    def step(self, samples: list[Sample]) -> None:
        """One UNet call for every sample (one per lane), each at its own timestep, then each
        sample's scheduler step; advances every sample's index."""
        if samples:
            self._in_lanes(self._step, samples)

    def _unet_inputs(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The UNet call's (sample, timesteps, encoder hidden states) for every sample at its own
        timestep; with guidance in the pipeline's layout: every negative row, then every positive row."""
        times = [sample.timesteps[sample.index] for sample in samples]
        scaled = [
            sample.scheduler.scale_model_input(sample.latents, t) for sample, t in zip(samples, times, strict=True)
        ]
        latents = torch.cat(scaled)
        timesteps = torch.stack([torch.as_tensor(t, device=latents.device) for t in times]).reshape(-1)
        if self.key and self.key[5]:
            hidden = torch.cat([sample.embeds[:1] for sample in samples] + [sample.embeds[1:] for sample in samples])
            return torch.cat([latents, latents]), torch.cat([timesteps, timesteps]), hidden
        return latents, timesteps, torch.cat([sample.embeds for sample in samples])

    def trace_ahead(self, spec: GenerationSpec, sizes: list[int]) -> None:
        """With a traced UNet (tuning.trace_unet): start the background traces of `spec`'s shape at
        each batch size in `sizes`, so the first requests find them made (a replica's start)."""
        if self.engine.traced is None:
            return
        with self.aside(), torch.no_grad():
            self.activate(spec)
            for size in sizes:
                samples = [self.admit(spec.model_copy(update={"seed": seed})) for seed in range(size)]
                self.engine.denoise_ahead(*self._unet_inputs(samples))

    @torch.no_grad()
    def _step(self, samples: list[Sample]) -> None:
        guided = bool(self.key and self.key[5])
        times = [sample.timesteps[sample.index] for sample in samples]
        noise = self.engine.denoise(*self._unet_inputs(samples))
        if guided:
            uncond, text = noise.chunk(2)
            scales = torch.tensor(
                [sample.spec.guidance_scale for sample in samples], device=noise.device, dtype=noise.dtype
            ).reshape(-1, 1, 1, 1)
            noise = uncond + scales * (text - uncond)
        for row, (sample, t) in enumerate(zip(samples, times, strict=True)):
            sample.latents = sample.scheduler.step(
                noise[row : row + 1], t, sample.latents, **sample.extra, return_dict=False
            )[0]
            sample.index += 1

    # -- finished samples out ----------------------------------------------------------------------------

    def decode(self, samples: list[Sample]) -> list[Decoded]:
        """The finished samples' images (one VAE call per lane), checked by the weights' safety checker."""
        if not samples:
            return []
        return [decoded for part in self._in_lanes(self._decode, samples) for decoded in part]

    @torch.no_grad()
    def _decode(self, samples: list[Sample]) -> list[Decoded]:
        pipe = self.engine.txt2img
        latents = torch.cat([sample.latents for sample in samples])
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        image, flags = pipe.run_safety_checker(image, self.engine.device, samples[0].embeds.dtype)
        denormalize = [not flag for flag in flags] if flags is not None else [True] * len(samples)
        pil = pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=denormalize)
        if not has_safety_checker(pipe) or flags is None:
            return [Decoded(image=img, safety="not_run") for img in pil]
        return [
            Decoded(image=img, safety="flagged" if flag else "passed") for img, flag in zip(pil, flags, strict=True)
        ]
