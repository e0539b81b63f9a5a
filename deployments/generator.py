"""Generator deployment: Stable Diffusion txt2img/img2img with per-request LoRA, batched.

A thin Serve shell around `SDEngine`. Replicas, CPU/GPU shares, `max_ongoing_requests` (keep it
>= max_batch_size) and `user_config` live in serve_config.yaml, not here.

How a request flows:
- The caller picks the replica by LoRA: `handle.options(multiplexed_model_id=spec.lora_name or "")`.
  Serve routes to replicas that already hold that adapter, and splits every `@serve.batch` batch
  by multiplexed model id (Ray 2.60 `_BatchQueue._split_batch_by_model_id`), so one sub-batch
  holds one adapter.
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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ray import serve

from serve_app.batching import parse_batch_knobs
from serve_app.config import Preset
from serve_app.errors import AppError, GenerationFailed, InvalidInput
from serve_app.protocol import GenerationOutput, GenerationSpec

if TYPE_CHECKING:
    from serve_app.models.sd_engine import SDEngine

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 4
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.05
PROGRESS_MIN_INTERVAL_S = 0.25  # at most ~4 progress writes per second per task
CANCEL_POLL_INTERVAL_S = 0.2  # how often a running group asks the task store about cancellation
GENERATING_STAGE = "generating"


class ProgressStore(Protocol):
    """The part of `serve_app.tasks.SqliteTaskStore` the generator uses (sync, thread-safe)."""

    def set_progress(self, task_id: str, stage: str, step: int | None = None, total: int | None = None) -> None: ...

    def is_cancel_requested(self, task_id: str) -> bool: ...


class GroupProgress:
    """Progress writes and cancellation checks for one pipeline call; runs in the worker thread.

    Writes are throttled per group (every task in a group is at the same step) and the last step
    is always written. The group stops only when every one of its tasks asked to cancel: an image
    somebody still waits for is never thrown away.
    """

    def __init__(
        self,
        store: ProgressStore | None,
        task_ids: Sequence[str | None],
        min_interval_s: float = PROGRESS_MIN_INTERVAL_S,
        cancel_poll_s: float = CANCEL_POLL_INTERVAL_S,
    ) -> None:
        self.store = store
        self.task_ids = [task_id for task_id in task_ids if task_id]
        self.cancellable = store is not None and bool(task_ids) and len(self.task_ids) == len(task_ids)
        self.min_interval_s = min_interval_s
        self.cancel_poll_s = cancel_poll_s
        self._last_write = float("-inf")
        self._last_poll = float("-inf")
        self._stop = False

    def on_step(self, step: int, total: int) -> None:
        if self.store is None or not self.task_ids:
            return
        now = time.monotonic()
        if step < total and now - self._last_write < self.min_interval_s:
            return
        self._last_write = now
        for task_id in self.task_ids:
            try:
                self.store.set_progress(task_id, GENERATING_STAGE, step, total)
            except Exception:  # progress is best effort; never fail an image for it
                logger.warning("progress write failed for task %s", task_id, exc_info=True)

    def should_stop(self) -> bool:
        if not self.cancellable or self.store is None:
            return False
        now = time.monotonic()
        if self._stop or now - self._last_poll < self.cancel_poll_s:
            return self._stop
        self._last_poll = now
        try:
            self._stop = all(self.store.is_cancel_requested(task_id) for task_id in self.task_ids)
        except Exception:
            logger.warning("cancel check failed for tasks %s", self.task_ids, exc_info=True)
        return self._stop


class LoadedAdapter:
    """What the multiplexer caches per LoRA name; unloads the adapter when Serve evicts it.

    Serve calls `__del__` on LRU eviction and Python calls it again on garbage collection, so the
    unload is guarded to run once.
    """

    def __init__(self, engine: SDEngine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._guard = threading.Lock()
        self._unloaded = False

    def __del__(self) -> None:
        with self._guard:
            if self._unloaded:
                return
            self._unloaded = True
        try:
            self.engine.unload_adapter(self.name)
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

    def __init__(self, preset: dict[str, Any], model_cache_dir: str, tasks_db_path: str | None = None) -> None:
        from serve_app.models.device import configure_torch_threads
        from serve_app.models.sd_engine import SDEngine

        self.preset = Preset.model_validate(preset)
        configure_torch_threads()
        self.engine = SDEngine(
            self.preset.generator, Path(model_cache_dir), device=self.preset.device, dtype=self.preset.dtype
        )
        self.store: ProgressStore | None = None
        if tasks_db_path:
            from serve_app.tasks import SqliteTaskStore

            self.store = SqliteTaskStore(tasks_db_path)
        self.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        self.batch_wait_timeout_s = DEFAULT_BATCH_WAIT_TIMEOUT_S
        # One pipeline call (and adapter change) at a time: Serve runs the per-model sub-batches of
        # one batch concurrently, and the active adapter is pipeline state.
        self._run_lock = asyncio.Lock()

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
        await asyncio.to_thread(self.engine.load_adapter, spec)
        return LoadedAdapter(self.engine, name)

    async def generate(self, spec: GenerationSpec) -> GenerationOutput:
        """One image. Call through `handle.options(multiplexed_model_id=spec.lora_name or "")`.

        Batching happens in `_generate_batch`; this wrapper re-raises a per-request error, because
        Serve 2.60 hands every item a batch returns to its caller as a value, exceptions included.
        """
        outcome = await self._generate_batch(spec)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S)
    async def _generate_batch(self, specs: list[GenerationSpec]) -> list[GenerationOutput | AppError]:
        """One Serve batch (one multiplexed model id): each group_key group is one pipeline call."""
        model_id = serve.get_multiplexed_model_id()
        results: list[GenerationOutput | AppError | None] = [None] * len(specs)
        for indices in _group_indices(specs):
            group = [specs[i] for i in indices]
            if model_id and group[0].lora_name != model_id:
                logger.warning("spec LoRA %r differs from multiplexed_model_id %r", group[0].lora_name, model_id)
            try:
                outputs: Sequence[GenerationOutput | AppError] = await self._run_group(group)
            except Exception as exc:
                error = _error_for(exc)
                if error.status_code >= 500:
                    logger.error("generation failed for %d request(s): %s", len(group), exc, exc_info=exc)
                else:
                    logger.info("generation ended for %d request(s): %s", len(group), error.message)
                outputs = [copy.copy(error) for _ in group]  # one instance per caller
            for index, output in zip(indices, outputs, strict=True):
                results[index] = output
        return [result if result is not None else GenerationFailed() for result in results]

    async def _run_group(self, group: list[GenerationSpec]) -> list[GenerationOutput]:
        """Make the group's adapter resident (and most recently used), then run one pipeline call."""
        lora_name = group[0].lora_name
        progress = GroupProgress(self.store, [spec.task_id for spec in group])
        async with self._run_lock:
            if lora_name:
                # Under the lock, so no other group can evict this adapter before the call runs.
                await self.get_adapter(lora_name)
            return await asyncio.to_thread(self.engine.generate, group, progress.on_step, progress.should_stop)

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


def _group_indices(specs: Sequence[GenerationSpec]) -> list[list[int]]:
    from serve_app.models.sd_engine import group_specs

    return group_specs(specs)
