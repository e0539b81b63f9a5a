"""Generator deployment: Stable Diffusion txt2img/img2img with per-request LoRA, batched.

A thin Serve shell around `SDEngine` that holds the model and nothing else: no task store, no
file of its node. Replicas, CPU/GPU shares, `max_ongoing_requests` (keep it >= max_batch_size)
and `user_config` live in serve_config.yaml, not here.

How a request flows:
- The caller picks the replica by LoRA: `handle.options(multiplexed_model_id=spec.multiplexed_model_id)`.
  Serve routes to replicas that already hold that adapter, and splits every `@serve.batch` batch
  by multiplexed model id (Ray 2.60 `_BatchQueue._split_batch_by_model_id`), so one sub-batch
  holds one adapter.
- Batching, progress streaming and cancellation are `deployments.batched.BatchedPipeline`'s:
  inside a batch, specs are grouped by `GenerationSpec.group_key()` (mode, size, steps, guidance,
  strength, LoRA, scale); each group is one pipeline call in a worker thread.
- Adapters are cached per replica by `@serve.multiplexed` (LRU of `preset.max_loras_per_replica`);
  eviction unloads the adapter from the pipeline through `LoadedAdapter.__del__`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import serve

from deployments.batched import (
    DEFAULT_BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    BatchedPipeline,
    GroupControl,
    PendingImage,
    error_for,
    screened,
)
from serve_app.errors import AppError, ConfigurationError, InvalidInput
from serve_app.metrics import GeneratorMetrics
from serve_app.presets import Preset
from serve_app.stages import GenerationOutput

if TYPE_CHECKING:
    from serve_app.models.sd_engine import SDEngine
    from serve_app.models.step_loop import StepLoop

logger = logging.getLogger(__name__)

__all__ = ["Generator", "GroupControl", "LoadedAdapter", "PendingImage"]


class LoadedAdapter:
    """What the multiplexer caches per LoRA name; unloads the adapter when Serve evicts it.

    Serve calls `__del__` on LRU eviction and Python calls it again on garbage collection, so the
    unload is guarded to run once.
    """

    def __init__(self, engine: SDEngine, name: str, metrics: GeneratorMetrics | None = None) -> None:
        self.engine = engine
        self.name = name
        self.metrics = metrics
        self._guard = threading.Lock()
        self._unloaded = False

    def __del__(self) -> None:
        with self._guard:
            if self._unloaded:
                return
            self._unloaded = True
        try:
            self.engine.unload_adapter(self.name)
            if self.metrics is not None:
                self.metrics.lora_evicted(self.name)
        except Exception:  # pragma: no cover - called from GC / Serve's executor; log only
            logger.warning("unloading LoRA %s failed", self.name, exc_info=True)


@serve.deployment
class Generator(BatchedPipeline):
    """Generates images with the preset's SD/SDXL model and its LoRA adapters."""

    def __init__(self, preset: Preset, model_cache_dir: str) -> None:
        from serve_app.models.device import configure_replica_process
        from serve_app.models.sd_engine import SDEngine

        self.preset = preset
        self.adapters = {spec.name: spec for spec in preset.loras}  # the multiplexer's model ids
        configure_replica_process()
        self.engine = SDEngine(
            self.preset.generator, Path(model_cache_dir), device=self.preset.device, dtype=self.preset.dtype
        )
        self.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        self.batch_wait_timeout_s = DEFAULT_BATCH_WAIT_TIMEOUT_S
        # One pipeline call (and adapter change) at a time: Serve runs the per-model sub-batches of
        # one batch concurrently, and the active adapter is pipeline state.
        self._run_lock = asyncio.Lock()
        self.metrics = GeneratorMetrics()
        self._lora_loads = 0  # adapters loaded so far: a pipeline call that loads none was a cache hit
        self._warmed: set[tuple[str, int]] = set()  # (batching, batch size) compiled at start
        self._traced_ahead = False  # the traced UNet's default shapes were started (tuning.trace_unet)

        # The LRU size comes from the preset, so the multiplexed loader is wired per instance (Ray
        # 2.60 supports `self.x = serve.multiplexed(...)(fn)`, see `_callable_uses_multiplexing`).
        async def load_lora(model_id: str) -> LoadedAdapter:
            return await self._load_adapter(model_id)

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=self.preset.max_loras_per_replica)(load_lora)
        # Step-level batching (SD family): requests join the running batch at the next step.
        self.batching = "step" if self.preset.generator.family == "sd" else "static"
        self.steps: StepLoop | None = None
        if self.batching == "step":
            from serve_app.models.step_batch import StepBatcher
            from serve_app.models.step_loop import StepLoop

            self.steps = StepLoop(
                StepBatcher(self.engine),
                self.max_batch_size,
                load_adapter=self._resident,
                on_step=self.metrics.pipeline_step,
                on_error=lambda exc, count: self.metrics.failed(exc, count),
            )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs: max_batch_size, batch_wait_timeout_s, `batching`: step (requests join the
        running batch at the next denoising step; SD family) or static (one pipeline call per batch),
        and `lanes`: sub-batches of a step run at once, each on a thread (CPU; 1 on a GPU)."""
        super().reconfigure(user_config)
        lanes = user_config.get("lanes")
        if lanes is not None and (isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 64):
            raise ConfigurationError(f"user_config.lanes must be an integer from 1 to 64, got {lanes!r}.")
        batching = user_config.get("batching")
        if batching is not None:
            if batching not in ("step", "static"):
                raise ConfigurationError(f"user_config.batching must be step or static, got {batching!r}.")
            if batching == "step" and self.steps is None:
                logger.warning(
                    "user_config.batching step: the %s family keeps static batching", self.preset.generator.family
                )
                batching = "static"
            self.batching = batching
        if self.steps is not None:
            self.steps.max_batch_size = self.max_batch_size
            if lanes is not None:
                self.steps.batcher.lanes = lanes
        self._warm_up()

    def _warm_up(self) -> None:
        """With a compiled UNet: compile each batch shape this replica can run now, before traffic
        (serve_app.models.warmup); shapes warmed once stay warm. With a traced one (CPU): start
        tracing those shapes in the background, once, at the replica's start (Serve calls
        reconfigure before the replica takes traffic); other shapes run eagerly."""
        from serve_app.models.warmup import batch_sizes, default_spec

        if self.engine.traced is not None and self.steps is not None and not self._traced_ahead:
            self._traced_ahead = True
            sizes = batch_sizes(self.max_batch_size, self.steps.batcher.lanes, step_level=True)
            self.steps.batcher.trace_ahead(default_spec(self.preset.defaults), sizes)
        if self.preset.generator.tuning.compile_mode() is None:
            return
        from serve_app.models.warmup import warm_up

        step_level = self.batching == "step" and self.steps is not None
        lanes = self.steps.batcher.lanes if self.steps is not None else 1
        key = "step" if step_level else "static"
        sizes = [n for n in batch_sizes(self.max_batch_size, lanes, step_level) if (key, n) not in self._warmed]
        batcher = self.steps.batcher if step_level and self.steps is not None else None
        warm_up(self.engine, self.preset.defaults, sizes, batcher)
        self._warmed.update((key, n) for n in sizes)

    def _enqueue(self, pending: PendingImage) -> Awaitable[GenerationOutput | AppError]:
        if self.batching == "step" and self.steps is not None:
            return self._step_generate(pending)
        return super()._enqueue(pending)

    async def _step_generate(self, pending: PendingImage) -> GenerationOutput | AppError:
        """Through the step loop; the PNG is encoded here, while the loop runs the next steps."""
        assert self.steps is not None
        spec = pending.spec
        try:
            finished = await self.steps.submit(pending)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return error_for(exc)
        from serve_app.images import encode_png
        from serve_app.models.sd_engine import PNG_COMPRESS_LEVEL

        png = await asyncio.to_thread(encode_png, finished.decoded.image, PNG_COMPRESS_LEVEL)
        output = GenerationOutput(
            image_png=png,
            seed=spec.seed,
            model_id=self.engine.model.model_id,
            lora_name=spec.lora_name,
            lora_scale=spec.lora_scale if spec.lora_name else None,
            batch_size=finished.peak_batch,
            seconds=finished.model_seconds,
            model_seconds=finished.model_seconds,
            safety=finished.decoded.safety,
        )
        return screened(output)

    async def _resident(self, name: str) -> None:
        """Make LoRA `name` resident (and most recently used) before a batch of it starts."""
        loads = self._lora_loads
        await self.get_adapter(name)
        if self._lora_loads == loads:
            self.metrics.lora_hit(name)

    async def _load_adapter(self, name: str) -> LoadedAdapter:
        """Load LoRA `name` (the multiplexed model id: a name the ingress resolved in the preset)
        into the engine; called by the multiplexer on a miss."""
        spec = self.adapters.get(name)
        if spec is None:  # a caller that skipped the ingress (a handle call with another id)
            raise InvalidInput(f"Unknown LoRA adapter {name!r}.")
        self._lora_loads += 1
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.engine.load_adapter, spec)
        except Exception:
            self.metrics.lora_loaded(name, time.perf_counter() - started, ok=False)
            raise
        self.metrics.lora_loaded(name, time.perf_counter() - started, ok=True)
        return LoadedAdapter(self.engine, name, self.metrics)

    async def _run_group(self, group: list[PendingImage]) -> list[GenerationOutput]:
        """Make the group's adapter resident (and most recently used), then run one pipeline call."""
        specs = [pending.spec for pending in group]
        lora_name = specs[0].lora_name
        mode = "img2img" if specs[0].init_image_png is not None else "txt2img"
        control = GroupControl(group)
        async with self._run_lock:
            # Under the lock no other group evicts its adapter; the pin keeps the step loop's loads (a
            # live switch of `batching`) from evicting it before or during the call.
            if lora_name:
                self.engine.pin(lora_name)
            try:
                if lora_name:
                    loads = self._lora_loads
                    await self.get_adapter(lora_name)
                    if self._lora_loads == loads:
                        self.metrics.lora_hit(lora_name)
                with self.metrics.pipeline_call(mode, len(specs)):
                    return await asyncio.to_thread(self.engine.generate, specs, control.on_step, control.should_stop)
            finally:
                if lora_name:  # shielded: a second cancel must not drop the unpin
                    await asyncio.shield(asyncio.to_thread(self.engine.unpin, lora_name))

    def info(self) -> dict[str, Any]:
        """Model id, family, device, dtype, resident adapters and the live batching knobs."""
        return {
            **self.engine.info(),
            "max_loras_per_replica": self.preset.max_loras_per_replica,
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "batching": self.batching,
            "lanes": self.steps.batcher.lanes if self.steps is not None else 1,
        }
