"""What the batched diffusion deployments (Generator, Editor) share: one request's life inside a
replica, Serve batching, progress streaming and cancellation. Not a deployment itself.

- `generate_stream` (call with `handle.options(stream=True)`) yields `GenerationProgress` while
  the batch denoises, then the `GenerationOutput`. Progress travels back over the handle, so a
  replica on any node reports the same way. `generate` is the same call without the progress.
- Cancelling the caller's handle call cancels the request here; once every request of a pipeline
  call is cancelled, the diffusion loop stops at its next step.
- Inside a batch, specs are grouped by `GenerationSpec.group_key()`; each group is one pipeline
  call (`_run_group`, the subclass's) in a worker thread. A failing group fails only its own requests.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from serve_app.batching import ModelReplica
from serve_app.errors import AppError, ContentFiltered, GenerationFailed
from serve_app.metrics import ModelMetrics
from serve_app.stages import GenerationOutput, GenerationProgress, GenerationSpec, group_specs

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


def error_for(exc: BaseException) -> AppError:
    """Any failure as an AppError, so the caller always gets an error code and a message."""
    if isinstance(exc, AppError):
        return exc
    return GenerationFailed(f"Image generation failed: {exc}")


class BatchedPipeline(ModelReplica):
    """The Serve side of a batched diffusion model; subclasses load the model and run a group."""

    batched = "_generate_batch"
    metrics: ModelMetrics
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S

    async def generate_stream(self, spec: GenerationSpec) -> AsyncIterator[GenerationProgress | GenerationOutput]:
        """Progress events while the image is made, then the image. Call through
        `handle.options(stream=True)` (the Generator: with `multiplexed_model_id`)."""
        events: asyncio.Queue[GenerationProgress] = asyncio.Queue()
        pending = PendingImage(spec, asyncio.get_running_loop(), events=events)
        batch = asyncio.ensure_future(self._enqueue(pending))
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
        """One image, no progress."""
        pending = PendingImage(spec, asyncio.get_running_loop())
        batch = asyncio.ensure_future(self._enqueue(pending))
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

    def _enqueue(self, pending: PendingImage) -> Awaitable[GenerationOutput | AppError]:
        """Where a request goes to be made: Serve's batching (one pipeline call per group) unless
        a subclass has something else (the Generator's step-level batching)."""
        return self._generate_batch(pending)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S)
    async def _generate_batch(self, batch: list[PendingImage]) -> list[GenerationOutput | AppError]:
        """One Serve batch: each group_key group is one pipeline call.

        Serve 2.60 hands every item a batch returns to its caller as a value, exceptions included,
        so a per-request error is returned here and raised by the caller-side method."""
        self.metrics.batch(len(batch))
        specs = [pending.spec for pending in batch]
        results: list[GenerationOutput | AppError | None] = [None] * len(batch)
        for indices in group_specs(specs):
            group = [batch[i] for i in indices]
            try:
                outputs: Sequence[GenerationOutput | AppError] = await self._run_group(group)
            except Exception as exc:
                error = error_for(exc)
                self.metrics.failed(error, len(group))
                if error.status_code >= 500:
                    logger.error("generation failed for %d request(s): %s", len(group), exc, exc_info=exc)
                else:
                    logger.info("generation ended for %d request(s): %s", len(group), error.message)
                outputs = [copy.copy(error) for _ in group]  # one instance per caller
            for index, output in zip(indices, outputs, strict=True):
                results[index] = screened(output)
        return [result if result is not None else GenerationFailed() for result in results]

    async def _run_group(self, group: list[PendingImage]) -> list[GenerationOutput]:
        """One pipeline call for a group of specs sharing a group_key."""
        raise NotImplementedError


def screened(output: GenerationOutput | AppError) -> GenerationOutput | AppError:
    """A flagged image (black, from the safety checker) is never delivered as done: its caller
    gets CONTENT_FILTERED; the other images of the batch are unaffected."""
    if isinstance(output, GenerationOutput) and output.safety == "flagged":
        return ContentFiltered()
    return output


def _unwrap(outcome: GenerationOutput | BaseException) -> GenerationOutput:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
