"""Generator deployment: Stable Diffusion txt2img/img2img with per-request LoRA, batched.

A thin Serve shell around `SDEngine` that holds the model and nothing else: no task store, no
file of its node. Replicas, CPU/GPU shares, `max_ongoing_requests` (keep it >= max_batch_size)
and `user_config` live in serve_config.yaml, not here.

How a request flows:
- The caller picks the replica by LoRA: `handle.options(multiplexed_model_id=spec.multiplexed_model_id)`.
  Serve routes to replicas that already hold that adapter, and splits every `@serve.batch` batch
  by multiplexed model id (Ray 2.60 `_BatchQueue._split_batch_by_model_id`), so one sub-batch
  holds one adapter.
- `generate_stream` (call with `handle.options(stream=True)`) yields `GenerationProgress` while
  the batch denoises, then the `GenerationOutput`. Progress travels back over the handle, so a
  replica on any node reports the same way. `generate` is the same call without the progress.
- Cancelling the caller's handle call cancels the request here; once every request of a pipeline
  call is cancelled, the diffusion loop stops at its next step.
- Inside a batch, specs are grouped by `GenerationSpec.group_key()` (mode, size, steps, guidance,
  strength, LoRA, scale); each group is one pipeline call in a worker thread. A failing group
  fails only its own requests.
- Adapters are cached per replica by `@serve.multiplexed` (LRU of `preset.max_loras_per_replica`);
  eviction unloads the adapter from the pipeline through `LoadedAdapter.__del__`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import serve

from serve_app.batching import parse_batch_knobs
from serve_app.config import Preset
from serve_app.errors import AppError, GenerationFailed, InvalidInput
from serve_app.metrics import GeneratorMetrics
from serve_app.protocol import GenerationOutput, GenerationProgress, GenerationSpec

if TYPE_CHECKING:
    from serve_app.models.sd_engine import SDEngine

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 4
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.05
PROGRESS_MIN_INTERVAL_S = 0.25  # at most ~4 progress events per second per request


@dataclass(eq=False)
class PendingImage:
    """One caller's request inside this replica: its spec, where its progress goes, whether the
    caller went away. Lives only as long as the call; nothing of it outlives the request."""

    spec: GenerationSpec
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationProgress] | None = None
    cancelled: bool = False
    _last: float = field(default=float("-inf"))

    def report(self, step: int, total: int) -> None:
        """From the pipeline's worker thread: queue a progress event (throttled; the last step always)."""
        if self.events is None:
            return
        now = time.monotonic()
        if step < total and now - self._last < PROGRESS_MIN_INTERVAL_S:
            return
        self._last = now
        self.loop.call_soon_threadsafe(self.events.put_nowait, GenerationProgress(step=step, total=total))


class GroupControl:
    """Progress and cancellation for one pipeline call; its methods run in the worker thread.

    The group stops only when every one of its callers cancelled: an image somebody still
    waits for is never thrown away.
    """

    def __init__(self, members: Sequence[PendingImage]) -> None:
        self.members = list(members)

    def on_step(self, step: int, total: int) -> None:
        for member in self.members:
            member.report(step, total)

    def should_stop(self) -> bool:
        return bool(self.members) and all(member.cancelled for member in self.members)


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


def _error_for(exc: BaseException) -> AppError:
    """Any failure as an AppError, so the caller always gets an error code and a message."""
    if isinstance(exc, AppError):
        return exc
    return GenerationFailed(f"Image generation failed: {exc}")


@serve.deployment
class Generator:
    """Generates images with the preset's SD/SDXL model and its LoRA adapters."""

    def __init__(self, preset: Preset, model_cache_dir: str) -> None:
        from serve_app.models.device import configure_torch_threads
        from serve_app.models.sd_engine import SDEngine

        self.preset = preset
        configure_torch_threads()
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

        # The LRU size comes from the preset, so the multiplexed loader is wired per instance (Ray
        # 2.60 supports `self.x = serve.multiplexed(...)(fn)`, see `_callable_uses_multiplexing`).
        async def load_lora(model_id: str) -> LoadedAdapter:
            return await self._load_adapter(model_id)

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=self.preset.max_loras_per_replica)(load_lora)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs: max_batch_size, batch_wait_timeout_s."""
        size, wait = parse_batch_knobs(user_config)
        if size is not None:
            self._generate_batch.set_max_batch_size(size)
            self.max_batch_size = size
        if wait is not None:
            self._generate_batch.set_batch_wait_timeout_s(wait)
            self.batch_wait_timeout_s = wait

    async def _load_adapter(self, name: str) -> LoadedAdapter:
        """Load LoRA `name` from the preset's registry into the engine (called by the multiplexer)."""
        spec = self.preset.lora(name)
        if spec is None:
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

    async def generate_stream(self, spec: GenerationSpec) -> AsyncIterator[GenerationProgress | GenerationOutput]:
        """Progress events while the image is made, then the image. Call through
        `handle.options(stream=True, multiplexed_model_id=spec.multiplexed_model_id)`."""
        events: asyncio.Queue[GenerationProgress] = asyncio.Queue()
        pending = PendingImage(spec, asyncio.get_running_loop(), events=events)
        batch = asyncio.ensure_future(self._generate_batch(pending))
        try:
            while not batch.done():
                event = asyncio.ensure_future(events.get())
                await asyncio.wait({event, batch}, return_when=asyncio.FIRST_COMPLETED)
                if event.done():
                    yield event.result()
                else:
                    event.cancel()
            while not events.empty():
                yield events.get_nowait()
            yield _unwrap(batch.result())
        except (asyncio.CancelledError, GeneratorExit):
            self._abandon(pending, batch)
            raise

    async def generate(self, spec: GenerationSpec) -> GenerationOutput:
        """One image, no progress. Call through `handle.options(multiplexed_model_id=spec.multiplexed_model_id)`."""
        pending = PendingImage(spec, asyncio.get_running_loop())
        batch = asyncio.ensure_future(self._generate_batch(pending))
        try:
            return _unwrap(await batch)
        except asyncio.CancelledError:
            self._abandon(pending, batch)
            raise

    @staticmethod
    def _abandon(pending: PendingImage, batch: asyncio.Future[Any]) -> None:
        """The caller went away: drop the request from a batch not yet started, and let a running
        pipeline call stop once all of its callers are gone."""
        pending.cancelled = True
        batch.cancel()

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S)
    async def _generate_batch(self, batch: list[PendingImage]) -> list[GenerationOutput | AppError]:
        """One Serve batch (one multiplexed model id): each group_key group is one pipeline call.

        Serve 2.60 hands every item a batch returns to its caller as a value, exceptions included,
        so a per-request error is returned here and raised by the caller-side method."""
        self.metrics.batch(len(batch))
        specs = [pending.spec for pending in batch]
        results: list[GenerationOutput | AppError | None] = [None] * len(batch)
        for indices in _group_indices(specs):
            group = [batch[i] for i in indices]
            try:
                outputs: Sequence[GenerationOutput | AppError] = await self._run_group(group)
            except Exception as exc:
                error = _error_for(exc)
                self.metrics.failed(error, len(group))
                if error.status_code >= 500:
                    logger.error("generation failed for %d request(s): %s", len(group), exc, exc_info=exc)
                else:
                    logger.info("generation ended for %d request(s): %s", len(group), error.message)
                outputs = [copy.copy(error) for _ in group]  # one instance per caller
            for index, output in zip(indices, outputs, strict=True):
                results[index] = output
        return [result if result is not None else GenerationFailed() for result in results]

    async def _run_group(self, group: list[PendingImage]) -> list[GenerationOutput]:
        """Make the group's adapter resident (and most recently used), then run one pipeline call."""
        specs = [pending.spec for pending in group]
        lora_name = specs[0].lora_name
        mode = "img2img" if specs[0].init_image_png is not None else "txt2img"
        control = GroupControl(group)
        async with self._run_lock:
            if lora_name:
                # Under the lock, so no other group can evict this adapter before the call runs.
                loads = self._lora_loads
                await self.get_adapter(lora_name)
                if self._lora_loads == loads:
                    self.metrics.lora_hit(lora_name)
            with self.metrics.pipeline_call(mode, len(specs)):
                return await asyncio.to_thread(self.engine.generate, specs, control.on_step, control.should_stop)

    async def check_health(self) -> None:
        """Serve calls this periodically; a replica without a loaded model is unhealthy."""
        if getattr(self, "engine", None) is None:
            raise RuntimeError("generator model not loaded")

    def info(self) -> dict[str, Any]:
        """Model id, family, device, dtype, resident adapters and the live batching knobs."""
        return {
            **self.engine.info(),
            "max_loras_per_replica": self.preset.max_loras_per_replica,
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }


def _unwrap(outcome: GenerationOutput | BaseException) -> GenerationOutput:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _group_indices(specs: Sequence[GenerationSpec]) -> list[list[int]]:
    from serve_app.models.sd_engine import group_specs

    return group_specs(specs)
