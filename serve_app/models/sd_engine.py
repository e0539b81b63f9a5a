"""Stable Diffusion (1.5 / XL) text-to-image and image-to-image with resident LoRA adapters; no Ray.

One base pipeline is loaded once; the img2img pipeline is derived from it with `from_pipe`, so
both share the same weights. LoRA adapters are loaded next to the base weights under their own
names and switched per call (`set_adapters` / `disable_lora`), never by reloading the base model.

Every method blocks on CPU/GPU work: call it from a worker thread (`asyncio.to_thread`). One lock
serialises pipeline calls and adapter changes, because the active adapter is pipeline state.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from serve_app.errors import ConfigurationError, GenerationFailed, InvalidInput, TaskCancelled
from serve_app.images import decode_image, encode_png
from serve_app.models.device import log_gpu_share, resolve_device, resolve_dtype
from serve_app.models.pins import Pins
from serve_app.models.tiny import LORA_WEIGHT_NAME, ensure_tiny_lora, ensure_tiny_sd, parse_tiny_lora_path
from serve_app.models.traced import TracedUNet
from serve_app.models.tuning import apply_tuning, has_safety_checker, load_kwargs, local_or_hub, verdicts
from serve_app.presets import GeneratorModel, LoraSpec
from serve_app.stages import GenerationOutput, GenerationSpec

logger = logging.getLogger(__name__)

# peft's notes on the expected flow (several named adapters on one model; deleting the active one).
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
warnings.filterwarnings("ignore", message=r"Adapter .* was active which is now deleted", category=UserWarning)

OnStep = Callable[[int, int], None]
ShouldStop = Callable[[], bool]

PNG_COMPRESS_LEVEL = 3  # fast to write; a 1024x1024 PNG at level 6 costs ~3x the time for ~5% less


def _dtype_kwarg() -> str:
    """`dtype` on diffusers that deprecated `torch_dtype` (0.42+), `torch_dtype` before."""
    try:
        from diffusers.utils.deprecation_utils import _TORCH_DTYPE_DEPRECATION_MESSAGE  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


# The pipeline classes a model folder's model_index.json may name, per preset family.
_FAMILY_CLASSES = {
    "sd": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
    "sdxl": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
}


def _pipeline_classes(model: GeneratorModel, source: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(txt2img class, img2img class) of the preset's family, after checking that the model's
    model_index.json names a pipeline of that family (e.g. sdxl weights given as sd are refused).

    The concrete classes, not AutoPipeline: AutoPipeline imports every pipeline family diffusers
    has (ControlNet, Kandinsky, ...), about 1.5 s of CPU in every Generator replica's start."""
    from diffusers import (
        DiffusionPipeline,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    config_kwargs = {k: v for k, v in kwargs.items() if k in ("revision", "cache_dir", "token")}
    class_name = DiffusionPipeline.load_config(source, **config_kwargs).get("_class_name")
    if class_name not in _FAMILY_CLASSES[model.family]:
        raise ConfigurationError(
            f"Generator model {model.model_id!r} loads as {class_name}, not a {model.family} pipeline."
        )
    if model.family == "sdxl":
        return StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline
    return StableDiffusionPipeline, StableDiffusionImg2ImgPipeline


_TRUSTED_MAX_PIXELS = 1 << 28  # bounds were checked at intake; this only stops a corrupt record


def decode_init_image(data: bytes, width: int, height: int) -> Image.Image:
    """The img2img source as RGB at the requested size (EXIF orientation applied, alpha on white, as
    the captioner and classifier see it); InvalidImage when it cannot be decoded. The ingress
    bounded its size when it took the photo in."""
    rgb = decode_image(data, max_pixels=_TRUSTED_MAX_PIXELS, max_bytes=max(1, len(data)))
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    return rgb


class StepCallback:
    """A pipeline's `callback_on_step_end`: reports progress, and interrupts the denoising loop
    at the next step once `should_stop()` turns True (then `interrupted` is True)."""

    def __init__(self, expected_steps: int, on_step: OnStep | None, should_stop: ShouldStop | None) -> None:
        self.expected_steps = expected_steps
        self.on_step = on_step
        self.should_stop = should_stop
        self.interrupted = False

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        total = int(getattr(pipe, "_num_timesteps", 0) or self.expected_steps)
        if self.on_step is not None:
            self.on_step(step + 1, total)
        if self.should_stop is not None and step + 1 < total and self.should_stop():
            self.interrupted = True
            pipe._interrupt = True
        return callback_kwargs


def seeded_call(specs: Sequence[GenerationSpec], device: torch.device) -> dict[str, Any]:
    """A diffusers call's shared inputs for specs of one group: their prompts, the group's steps
    and guidance, and one seeded generator per image (CPU generators on MPS), so a seed gives the
    same image alone or in a batch."""
    first = specs[0]
    gen_device = "cpu" if device.type == "mps" else device
    return {
        "prompt": [spec.prompt for spec in specs],
        "negative_prompt": [spec.negative_prompt for spec in specs],
        "num_inference_steps": first.num_inference_steps,
        "guidance_scale": first.guidance_scale,
        "generator": [torch.Generator(gen_device).manual_seed(spec.seed) for spec in specs],
        "output_type": "pil",
    }


def outputs(
    specs: Sequence[GenerationSpec], pipe: Any, result: Any, model_id: str, seconds: float
) -> list[GenerationOutput]:
    """One GenerationOutput per spec: its PNG, seed, adapter, the batch's size and time, and the
    safety checker's verdict."""
    verdict_of = verdicts(pipe, result, len(specs))
    return [
        GenerationOutput(
            image_png=encode_png(image, PNG_COMPRESS_LEVEL),
            seed=spec.seed,
            model_id=model_id,
            lora_name=spec.lora_name,
            lora_scale=spec.lora_scale if spec.lora_name else None,
            batch_size=len(specs),
            seconds=seconds,
            safety=verdict,
        )
        for spec, image, verdict in zip(specs, result.images, verdict_of, strict=True)
    ]


def check_group(specs: Sequence[GenerationSpec]) -> None:
    """One pipeline call takes specs of one group_key only."""
    key = specs[0].group_key()
    if any(spec.group_key() != key for spec in specs[1:]):
        raise ValueError("All specs in one generate() call must share the same group_key().")


def pipeline_source(
    model: GeneratorModel, tiny_builder: Callable[[Path], Path], cache_dir: Path
) -> tuple[str, dict[str, Any]]:
    """(folder or hub id, from_pretrained kwargs) for a preset model: `tiny` built offline by `tiny_builder`."""
    source = str(tiny_builder(cache_dir)) if model.model_id == "tiny" else local_or_hub(model.model_id)
    kwargs: dict[str, Any] = {}
    if model.revision:
        kwargs["revision"] = model.revision
    return source, kwargs


class SDEngine:
    """A loaded SD/SDXL pipeline pair (txt2img + img2img) and its resident LoRA adapters."""

    def __init__(
        self,
        model: GeneratorModel,
        cache_dir: Path | str,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._lock = threading.RLock()
        self._adapters: dict[str, LoraSpec] = {}
        self._pins = Pins()  # the adapters a batch runs on: an unload meanwhile waits for them
        # (adapter or None, scale) last set on the pipeline; None when unknown (after a load/unload).
        self._state: tuple[str | None, float] | None = None
        self._tiling = False  # whether the UNet's and VAE's convolutions pad circularly now
        self._version = 0  # bumped by every adapter or tiling change (a traced UNet graph checks it)

        # 1. Base pipeline: `tiny` is built offline; anything else is a hub id or a local folder.
        started = time.perf_counter()
        source, kwargs = pipeline_source(model, ensure_tiny_sd, self.cache_dir)
        dtype_kwargs = {_dtype_kwarg(): self.dtype}
        kwargs.update(dtype_kwargs)
        try:
            txt2img_class, img2img_class = _pipeline_classes(model, source, kwargs)
            kwargs.update(load_kwargs(model.tuning, dtype_kwargs))
            self.txt2img = txt2img_class.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"Could not load generator model {model.model_id!r}: {exc}") from exc
        self.txt2img.to(self.device)
        # 2. The preset's tuning (channels_last on CUDA by default, VAE decode, torch.compile);
        # SDPA is diffusers' default attention processor.
        apply_tuning(self.txt2img, model.tuning, self.device)
        self._fused: str | None = None  # the adapter merged into the base weights (tuning.fuse_lora)
        self.txt2img.set_progress_bar_config(disable=True)
        # 3. img2img shares every component with txt2img (no second copy of the weights).
        self.img2img = img2img_class.from_pipe(self.txt2img)
        self.img2img.set_progress_bar_config(disable=True)
        # 4. The CPU's compiled path for step-level batching: the UNet traced per shape.
        self.traced: TracedUNet | None = None
        if model.tuning.trace_unet:
            if self.device.type == "cpu":
                self.traced = TracedUNet(self.txt2img.unet, self._lock, lambda: self._version)
            else:
                logger.info("tuning.trace_unet is for CPU; on %s the UNet runs as loaded", self.device)
        logger.info(
            "loaded %s (%s) on %s/%s in %.1fs",
            model.model_id,
            model.family,
            self.device,
            self.dtype,
            time.perf_counter() - started,
        )
        log_gpu_share(f"generator {model.model_id}", self.device)

    # --- LoRA ------------------------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        """Names of the resident adapters, in load order."""
        return list(self._adapters)

    def pipeline_adapters(self) -> set[str]:
        """Adapter names the pipeline's components actually hold (for checks and tests)."""
        try:
            listed = self.txt2img.get_list_adapters()
        except ValueError:
            return set()
        return {name for names in listed.values() for name in names}

    def _lora_source(self, spec: LoraSpec) -> tuple[str, str | None]:
        """(path or hub id, weight file name) for `load_lora_weights`."""
        seed = parse_tiny_lora_path(spec.path)
        if seed is not None:
            return str(ensure_tiny_lora(self.cache_dir, seed)), LORA_WEIGHT_NAME
        path = Path(spec.path).expanduser()
        if path.is_file():
            return str(path.parent), path.name
        if path.is_dir():
            return str(path), spec.weight_name
        return spec.path, spec.weight_name  # a hub repo id

    def load_adapter(self, spec: LoraSpec) -> None:
        """Make adapter `spec.name` resident (no-op when it already is); the base model stays."""
        with self._lock:
            self._pins.cancel(spec.name)  # loaded again before a deferred unload: it stays
            if spec.name in self._adapters:
                return
            self._unfuse()  # a merged adapter's delta must come out before the adapter set changes
            started = time.perf_counter()
            try:
                source, weight_name = self._lora_source(spec)
                kwargs: dict[str, Any] = {"adapter_name": spec.name}
                if weight_name:
                    kwargs["weight_name"] = weight_name
                self.txt2img.load_lora_weights(source, **kwargs)
            except Exception as exc:
                if spec.name in self.pipeline_adapters():
                    self.txt2img.delete_adapters(spec.name)  # drop a half-loaded adapter
                raise GenerationFailed(f"Failed to load LoRA adapter {spec.name!r}: {exc}") from exc
            finally:
                self._state = None  # loading may change which adapter is active
                self._version += 1
            self._adapters[spec.name] = spec
            elapsed_ms = (time.perf_counter() - started) * 1e3
            logger.info("loaded LoRA %s from %s in %.0f ms", spec.name, spec.path, elapsed_ms)

    def unload_adapter(self, name: str) -> None:
        """Delete adapter `name` from the pipeline (no-op when it is not resident); while a batch runs
        on it (`pin`), at the last `unpin` (serve_app.models.pins)."""
        self._unload(name, deferred=False)

    def _unload(self, name: str, deferred: bool) -> None:
        """`deferred`: the last pin's carrying out of an earlier unload, only if it still stands."""
        with self._lock:
            if name not in self._adapters:
                return
            if deferred and not self._pins.due(name):
                return  # pinned or loaded again since the unload: it stays
            if not deferred and self._pins.defer(name):
                logger.info("LoRA %s is evicted while a batch runs on it: unloaded when the batch is done", name)
                return
            del self._adapters[name]
            self._unfuse()
            self.txt2img.delete_adapters(name)
            self._state = None
            self._version += 1
            logger.info("unloaded LoRA %s", name)

    def pin(self, name: str) -> None:
        """Keep adapter `name` (loaded or not yet) resident until `unpin`; callable from an event loop."""
        self._pins.add(name)

    def unpin(self, name: str) -> None:
        """Drop one pin; the last carries out an unload deferred meanwhile (it waits for a running call)."""
        if self._pins.drop(name):
            self._unload(name, deferred=True)

    def _unfuse(self) -> None:
        """Take a merged adapter back out of the base weights (before any adapter change)."""
        if self._fused is not None:
            self.txt2img.unfuse_lora()
            self._fused = None

    def _activate(self, name: str | None, scale: float) -> None:
        """Point the shared UNet/text encoder at one adapter and scale, or at none. With
        `tuning.fuse_lora` the adapter is merged into the base weights at its scale (unmerged
        before the next change), so a run of calls with one adapter pays no LoRA matmuls."""
        wanted = (name, scale if name else 0.0)
        if wanted == self._state:
            return
        self._version += 1
        self._state = None  # unknown until the change below is whole (a failure part-way leaves it so)
        self._unfuse()
        if name is None:
            if self._adapters:
                self.txt2img.disable_lora()
        else:
            if name not in self._adapters:
                raise ValueError(f"LoRA adapter {name!r} is not loaded; call load_adapter first.")
            self.txt2img.enable_lora()
            self.txt2img.set_adapters([name], [scale])
            if self.model.tuning.fuse_lora:
                self.txt2img.fuse_lora(adapter_names=[name])  # at the scale set_adapters gave it
                self._fused = name
        self._state = wanted

    def set_tiling(self, on: bool) -> None:
        """Seamless tiling: pad every 2-D convolution of the UNet and the VAE circularly, so the
        image wraps around without a seam (a texture repeats cleanly); off again for normal images.

        Circular padding makes every layer equivariant to a circular shift (the convolutions by
        construction; GroupNorm and spatial attention have no position), so the image's left edge
        continues its right edge as any column continues its neighbour. Shared pipeline state:
        call under the lock, as generate does."""
        if on == self._tiling:
            return
        self._version += 1
        for model in (self.txt2img.unet, self.txt2img.vae):
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.padding_mode = "circular" if on else "zeros"
        self._tiling = on

    # --- generation ------------------------------------------------------------------------------

    def denoise(self, sample: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """One UNet call of step-level batching (under the lock): the traced graph for this shape when
        the preset traces and the pipeline is the base model (no adapter active, no tiling)."""
        if self.traced is not None:
            return self.traced(sample, timesteps, hidden, base=self._is_base())
        return self.txt2img.unet(sample, timesteps, encoder_hidden_states=hidden, return_dict=False)[0]

    def denoise_ahead(self, sample: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor) -> None:
        """Start tracing `denoise`'s graph for these inputs' shape in the background (under the lock)."""
        if self.traced is not None and self._is_base():
            self.traced.prepare(sample, timesteps, hidden)

    def _is_base(self) -> bool:
        """The pipeline is the base model: no adapter active (so none merged: `_activate` unmerges
        first), no tiling."""
        return self._state == (None, 0.0) and not self._tiling

    def generate(
        self,
        specs: Sequence[GenerationSpec],
        on_step: OnStep | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[GenerationOutput]:
        """Generate one image per spec in a single pipeline call; specs must share one group_key.

        Each image uses its own seeded generator, so a seed gives the same image alone or in a
        batch. `on_step(done, total)` reports denoising progress. When `should_stop()` turns True
        the loop is interrupted at the next step and TaskCancelled is raised.
        """
        # 1. Check the batch.
        if not specs:
            return []
        first = specs[0]
        check_group(specs)
        is_img2img = first.init_image_png is not None
        expected_steps = int(first.num_inference_steps * first.strength) if is_img2img else first.num_inference_steps
        if expected_steps < 1:
            raise InvalidInput("num_inference_steps * strength must be at least 1 for image-to-image.")
        if should_stop is not None and should_stop():
            raise TaskCancelled()

        # 2. Inputs: prompts, per-image generators (CPU generators on MPS), img2img sources.
        call = seeded_call(specs, self.device)
        if is_img2img:
            call["image"] = [decode_init_image(spec.init_image_png or b"", first.width, first.height) for spec in specs]
            call["strength"] = first.strength
        else:
            call["height"] = first.height
            call["width"] = first.width

        # 3. Progress and cancellation from the step-end callback.
        steps = StepCallback(expected_steps, on_step, should_stop)
        call["callback_on_step_end"] = steps

        # 4. Run under the lock: the active adapter is pipeline state shared by both pipelines.
        pipe = self.img2img if is_img2img else self.txt2img
        with self._lock:
            started = time.perf_counter()
            self._activate(first.lora_name, first.lora_scale)
            self.set_tiling(first.tileable)
            result = pipe(**call)
            seconds = time.perf_counter() - started
        if steps.interrupted:
            raise TaskCancelled()

        # 5. PNG bytes out, each with the safety checker's verdict.
        return outputs(specs, pipe, result, self.model.model_id, seconds)

    def info(self) -> dict[str, Any]:
        """What the replica serves, for GET /info and health pages."""
        return {
            "model_id": self.model.model_id,
            "family": self.model.family,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "adapters": self.adapters,
            "safety_checker": has_safety_checker(self.txt2img),
            "tuning": self.model.tuning.model_dump(exclude_defaults=True),
            **({"traced_unet_shapes": self.traced.shapes} if self.traced is not None else {}),
        }
