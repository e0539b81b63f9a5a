"""The async driver of a `StepBatcher`: requests wait in arrival order and join the running batch
at the next step boundary; a sample leaves the batch (decoded) the step it finishes.

- Joining: a waiting request joins when it shares the running batch's join key and there is room
  (`max_batch_size`), in arrival order. Once a request with another key has waited
  `switch_after_s`, nothing more joins: the batch drains, and the oldest waiting request's key
  becomes the batch's (its LoRA loaded first). Interleaved adapters still batch; none starves.
- Progress: each request hears its own step i of n after every step.
- Cancellation: a request whose caller went away leaves at the next boundary.
- Errors: a request that cannot be admitted (its image) fails alone; a failing step fails the
  requests in it, and the loop goes on with the next.
- Cost: each image is charged its share of every step it was in (the step's time over the batch)
  and of its decode.

Runs on the deployment's event loop; every model call goes to a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from serve_app.errors import TaskCancelled
from serve_app.models.step_batch import Decoded, Sample, StepBatcher, joinable
from serve_app.stages import GenerationSpec

logger = logging.getLogger(__name__)


class Waiting(Protocol):
    """A request as the deployment holds it (deployments.batched.PendingImage)."""

    spec: GenerationSpec
    cancelled: bool

    def report(self, step: int, total: int) -> None: ...


@dataclass
class Finished:
    """A request's image, how many shared its largest step, and its share of the model's time."""

    decoded: Decoded
    peak_batch: int
    model_seconds: float


@dataclass(eq=False)
class _Entry:
    request: Waiting
    future: asyncio.Future[Finished]
    sample: Sample | None = None
    peak_batch: int = 1
    model_seconds: float = 0.0
    arrived: float = field(default_factory=time.perf_counter)


class StepLoop:
    """One batcher's queue and running batch. `load_adapter(name)` makes a LoRA resident before a
    batch of that adapter starts; `on_step(images by mode, seconds)` observes each step."""

    def __init__(
        self,
        batcher: StepBatcher,
        max_batch_size: int,
        load_adapter: Callable[[str], Awaitable[Any]] | None = None,
        on_step: Callable[[dict[str, int], float], None] | None = None,
        on_error: Callable[[BaseException, int], None] | None = None,
        switch_after_s: float = 1.0,
    ) -> None:
        self.batcher = batcher
        self.max_batch_size = max_batch_size
        self.switch_after_s = switch_after_s
        self._load_adapter = load_adapter
        self._on_step = on_step
        self._on_error = on_error
        self._queue: deque[_Entry] = deque()
        self._active: list[_Entry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._releasing: asyncio.Future[None] | None = None  # the idle loop's release of the key

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def submit(self, request: Waiting) -> asyncio.Future[Finished]:
        """Queue `request`; the future resolves with its image (or its error)."""
        loop = asyncio.get_running_loop()
        entry = _Entry(request, loop.create_future())
        self._queue.append(entry)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return entry.future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._releasing is not None:  # its thread runs on after a cancel: the batcher is not free yet
            with contextlib.suppress(Exception):
                await self._releasing

    # -- the loop -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._drop_cancelled()
            if not self._active and not self._queue:
                self._releasing = asyncio.ensure_future(asyncio.to_thread(self.batcher.release))
                await asyncio.shield(self._releasing)
                if self._active or self._queue:
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._admit()
                if self._active:
                    await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing step: its requests fail, the next ones go on
                logger.exception("a denoising step failed for %d request(s)", len(self._active))
                if self._on_error is not None:
                    self._on_error(exc, len(self._active))
                for entry in self._active:
                    _settle(entry.future, exc)
                self._active = []

    def _drop_cancelled(self) -> None:
        for entry in [e for e in (*self._queue, *self._active) if e.request.cancelled or e.future.done()]:
            _settle(entry.future, TaskCancelled())
            if entry in self._active:
                self._active.remove(entry)
            else:
                self._queue.remove(entry)

    async def _admit(self) -> None:
        """Start a batch for the queue's head when none runs; let in what joins it, in order."""
        if not self._active and self._queue:
            head = self._queue[0].request.spec
            engine = self.batcher.engine
            if head.lora_name:
                engine.pin(head.lora_name)  # from its load to its batch: nothing evicts it between
            try:
                if head.lora_name and self._load_adapter is not None:
                    await self._load_adapter(head.lora_name)
                await asyncio.to_thread(self.batcher.activate, head)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # its adapter cannot be loaded: the head fails, the rest go on
                _settle(self._queue.popleft().future, exc)
                return
            finally:
                if head.lora_name:  # shielded: a second cancel must not drop the unpin
                    await asyncio.shield(asyncio.to_thread(engine.unpin, head.lora_name))
        room = self.max_batch_size - len(self._active)
        key = self.batcher.key
        others = [entry.arrived for entry in self._queue if joinable(entry.request.spec) != key]
        waited = time.perf_counter() - min(others) if others else 0.0
        if room <= 0 or (self._active and others and waited >= self.switch_after_s):
            return  # full, or another key has waited long enough: let the batch drain
        joining = [entry for entry in self._queue if joinable(entry.request.spec) == key][:room]
        if not joining:
            return
        for entry in joining:
            self._queue.remove(entry)
        admitted = await asyncio.to_thread(self._admit_all, [entry.request.spec for entry in joining])
        for entry, sample in zip(joining, admitted, strict=True):
            if isinstance(sample, Exception):
                _settle(entry.future, sample)
            else:
                entry.sample = sample
                self._active.append(entry)

    def _admit_all(self, specs: list[GenerationSpec]) -> list[Sample | Exception]:
        admitted: list[Sample | Exception] = []
        for spec in specs:
            try:
                admitted.append(self.batcher.admit(spec))
            except Exception as exc:  # this request's input (its image): it alone fails
                admitted.append(exc)
        return admitted

    async def _step(self) -> None:
        active = self._active
        samples = [entry.sample for entry in active if entry.sample is not None]
        started = time.perf_counter()
        await asyncio.to_thread(self.batcher.step, samples)
        seconds = time.perf_counter() - started
        if self._on_step is not None:
            modes: dict[str, int] = {}
            for sample in samples:
                mode = "img2img" if sample.spec.init_image_png is not None else "txt2img"
                modes[mode] = modes.get(mode, 0) + 1
            try:
                self._on_step(modes, seconds)
            except Exception:  # an observer (metrics) failing must not fail a step that worked
                logger.exception("the step observer failed")
        for entry in active:
            assert entry.sample is not None
            entry.peak_batch = max(entry.peak_batch, len(samples))
            entry.model_seconds += seconds / len(samples)
            entry.request.report(entry.sample.index, entry.sample.total)
        done = [entry for entry in active if entry.sample is not None and entry.sample.done]
        if not done:
            return
        self._active = [entry for entry in active if entry not in done]
        started = time.perf_counter()
        try:
            decoded = await asyncio.to_thread(self.batcher.decode, [entry.sample for entry in done if entry.sample])
        except Exception as exc:  # the decode's requests fail; those still denoising go on
            logger.exception("decoding failed for %d request(s)", len(done))
            if self._on_error is not None:
                self._on_error(exc, len(done))
            for entry in done:
                _settle(entry.future, exc)
            return
        share = (time.perf_counter() - started) / len(done)
        for entry, image in zip(done, decoded, strict=True):
            if not entry.future.done():
                entry.future.set_result(Finished(image, entry.peak_batch, entry.model_seconds + share))


def _settle(future: asyncio.Future[Finished], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
