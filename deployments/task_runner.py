"""TaskRunner deployment: runs tasks to an end state and delivers their webhooks.

Tasks reach it two ways: pushed (the ingress calls `run(task_id)` right after submit) and pulled
(a maintenance loop claims queued tasks nobody dispatched in time: the ingress died after the
insert, the runner was full, or the reaper requeued a task whose worker died). Claims are atomic
in the task store, so a task runs once at a time; a lease renewed by heartbeat marks it alive.

The runner is the only deployment of the flow that touches the task store. Model replicas get
their inputs over handles and stream progress back; a client's cancel reaches a running task
here (the maintenance loop sees the flag) and travels on as the cancellation of the in-flight
handle call, which the Generator turns into stopping its diffusion loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app import article_flow, edit_flow, image_flow, scene_flow, texture_flow
from serve_app.article_flow import ArticleFlow
from serve_app.backends import BackendRegistry
from serve_app.backends.restoration import build_restorer
from serve_app.config import AppArgs
from serve_app.edit_flow import EditFlow
from serve_app.errors import AppError, TaskCancelled
from serve_app.flow import DeskFlow, Flow, FlowError, OnStep
from serve_app.image_flow import ImageFlow
from serve_app.items import load_item_vocabulary
from serve_app.metrics import TaskMetrics
from serve_app.presets import load_preset
from serve_app.retention import RetentionSweeper
from serve_app.scene_flow import SceneFlow
from serve_app.settings import get_settings
from serve_app.stages import (
    Classification,
    DeskItem,
    GenerationOutput,
    GenerationProgress,
    GenerationSpec,
    ItemSearchResult,
)
from serve_app.storage import start_store
from serve_app.tasks import TaskRecord, open_task_store
from serve_app.tasks.records import Stage
from serve_app.tasks.views import task_view
from serve_app.texture_flow import TextureFlow
from serve_app.webhooks import WebhookSender, make_msg_id
from serve_app.writing import build_writer

logger = logging.getLogger("ray.serve")

QUEUE_DEPTH_INTERVAL_S = 5.0  # how often a runner refreshes the queue-depth gauge (Ray exports every 10 s)


class HandleStages:
    """The flow's stages as calls to the other deployments."""

    def __init__(
        self,
        captioner: DeploymentHandle,
        classifier: DeploymentHandle,
        generator: DeploymentHandle,
        shopping: DeploymentHandle,
        editor: DeploymentHandle,
    ) -> None:
        self._captioner = captioner
        self._classifier = classifier
        self._generator = generator
        self._shopping = shopping
        self._editor = editor

    async def caption(self, image_png: bytes) -> str:
        return await self._captioner.caption.remote(image_png)

    async def classify(self, image_png: bytes) -> Classification:
        return await self._classifier.classify.remote(image_png)

    async def generate(self, spec: GenerationSpec, on_step: OnStep) -> GenerationOutput:
        """Stream the Generator's progress into `on_step` (the Editor's, for an instruction edit);
        cancelling this coroutine cancels the call."""
        if spec.is_edit:
            handle = self._editor.options(stream=True)
        else:
            # The LoRA name is the multiplexed model id: Serve routes to replicas that have it resident.
            handle = self._generator.options(stream=True, multiplexed_model_id=spec.multiplexed_model_id)
        stream = handle.generate_stream.remote(spec)
        output: GenerationOutput | None = None
        try:
            async for event in stream:
                if isinstance(event, GenerationProgress):
                    await on_step(event.step, event.total)
                else:
                    output = event
        except asyncio.CancelledError:
            stream.cancel()
            raise
        if output is None:
            raise AppError("The generator ended its stream without an image.", error_code="GENERATION_FAILED")
        return output

    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]:
        return await self._shopping.search.remote(items)


@serve.deployment
class TaskRunner:
    async def __init__(
        self,
        args: AppArgs,
        captioner: DeploymentHandle,
        classifier: DeploymentHandle,
        generator: DeploymentHandle,
        shopping: DeploymentHandle,
        editor: DeploymentHandle,
    ) -> None:
        self.args = args
        settings = get_settings()
        self.tasks = await asyncio.to_thread(open_task_store, args.tasks, settings)
        self.images = await start_store(args.storage, settings)
        stages = HandleStages(captioner, classifier, generator, shopping, editor)
        # Cloud clients and the prompt writer are shared by every task of this replica (one rate
        # limiter per provider per replica).
        preset = load_preset(args.preset)
        self.backends = BackendRegistry(args.backends, preset.generator.model_id, preset.editor.model_id)
        self.writer = build_writer(args.prompt_writer)
        self.restorer = build_restorer(args.edits.face_restoration, args.backends)
        common: dict[str, Any] = {"retries": args.retries, "writer": self.writer}
        self.flows: dict[str, Flow] = {  # task kind -> the flow that runs it
            "desk": DeskFlow(stages, self.images, load_item_vocabulary(), **common),
            image_flow.KIND: ImageFlow(stages, self.images, **common),
            scene_flow.KIND: SceneFlow(stages, self.images, backends=self.backends, **common),
            article_flow.KIND: ArticleFlow(stages, self.images, backends=self.backends, **common),
            edit_flow.KIND: EditFlow(stages, self.images, backends=self.backends, restorer=self.restorer, **common),
            texture_flow.KIND: TextureFlow(stages, self.images, backends=self.backends, cache=self.tasks, **common),
        }
        self.webhooks = (
            WebhookSender(args.webhooks, settings.imagegen_webhook_secret, args.fetch)
            if settings.imagegen_webhook_secret
            else None
        )
        self.metrics = TaskMetrics()
        self.images.on_error = self.metrics.storage_failed
        self.retention = RetentionSweeper(self.tasks, self.images, args.retention, self.metrics)
        self.worker = f"runner-{uuid.uuid4().hex[:12]}"
        self._running: dict[str, tuple[asyncio.Task[Any], str]] = {}  # task id -> (coroutine, lease)
        self._stopping: dict[str, str] = {}  # task id -> why its coroutine was cancelled: cancelled | lost
        self._background: set[asyncio.Task[Any]] = set()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    # -- entry points ----------------------------------------------------------------------------

    async def run(self, task_id: str) -> str:
        """Claim and run a pushed task; returns its final status (or 'skipped' if not claimable)."""
        record = await asyncio.to_thread(self.tasks.queue.claim, task_id, self.worker, self.args.tasks.lease_s)
        if record is None:
            return "skipped"
        return await self._run_claimed(record)

    async def check_health(self) -> None:
        await asyncio.to_thread(self.tasks.ping)
        if self._maintenance.done():
            raise RuntimeError(f"maintenance loop stopped: {self._maintenance.exception()!r}")

    # -- running a task ----------------------------------------------------------------------------

    async def _run_claimed(self, record: TaskRecord) -> str:
        # A claim sets updated_at: the wait is from the submit to this claim.
        self.metrics.claimed(record.kind, record.attempts, record.updated_at - record.created_at)
        task = asyncio.current_task()
        if task is not None and record.lease_owner:
            self._running[record.task_id] = (task, record.lease_owner)
        try:
            return await self._execute(record)
        finally:
            self._running.pop(record.task_id, None)
            self._stopping.pop(record.task_id, None)

    async def _execute(self, record: TaskRecord) -> str:
        task_id = record.task_id
        lease = record.lease_owner or ""
        started = time.perf_counter()
        queue = self.tasks.queue

        async def progress(stage: Stage, step: int | None = None, total: int | None = None) -> None:
            await asyncio.to_thread(self.tasks.set_progress, task_id, stage.value, step, total)

        async def cancelled() -> bool:
            return task_id in self._stopping or await asyncio.to_thread(self.tasks.is_cancel_requested, task_id)

        error: AppError | None = None
        partial: dict[str, Any] | None = None
        try:
            outcome = await self.flows[record.kind].run(record, progress, cancelled)
        except FlowError as exc:
            error, partial = exc, exc.partial
        except asyncio.CancelledError:
            why = self._stopping.get(task_id)
            if why is None:
                raise  # the replica is shutting down: the lease expires and the reaper requeues it
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if why == "lost":  # another worker (or the reaper) has the task now: touch nothing
                logger.warning("task %s: lease lost, its work here stopped", task_id)
                return "lost_lease"
            error = TaskCancelled()
        except Exception as exc:
            logger.exception("task %s crashed", task_id)
            error = AppError(f"Internal error: {type(exc).__name__}")
        if error is not None:
            await asyncio.to_thread(queue.fail, task_id, error.error_code, error.message, lease=lease, result=partial)
            status = "failed"
            self.metrics.finished(status, error.error_code, time.perf_counter() - started)
            self.metrics.variant_finished(record.kind, partial, status)
        else:
            keys = ([record.input_key] if record.input_key else []) + outcome.object_keys
            completed = await asyncio.to_thread(queue.complete, task_id, lease, outcome.result, keys)
            status = "done" if completed else "lost_lease"
            self.metrics.finished(status, None, time.perf_counter() - started)
            if completed:
                self.metrics.stage_timings(record.kind, outcome.result)
                self.metrics.variant_finished(record.kind, outcome.result, status)
        if record.webhook_url:
            self._spawn(self._deliver_webhook(task_id))
        return status

    async def _deliver_webhook(self, task_id: str) -> None:
        """One attempt at a finished task's webhook; a retryable failure schedules the next one in
        the outbox (picked up by a maintenance pass on any runner once it is due)."""
        cfg = self.args.webhooks
        outbox = self.tasks.outbox
        record = await asyncio.to_thread(outbox.claim, task_id, cfg.timeout_s + 60)
        if record is None or record.webhook_url is None:
            return
        if self.webhooks is None:
            logger.error("task %s has a webhook_url but IMAGEGEN_WEBHOOK_SECRET is not set", task_id)
            await asyncio.to_thread(outbox.finish, task_id, False, 0)
            return
        payload = task_view(record).model_dump(mode="json", exclude_none=True)
        result = await self.webhooks.attempt(record.webhook_url, make_msg_id(task_id), payload)
        made = record.webhook_attempts + 1
        if not result.delivered:
            self.metrics.webhook_failed(result.error_code)
        if result.retryable and made < cfg.max_attempts:
            delay = self.webhooks.delay_after(made, result)
            logger.info(
                "webhook for task %s attempt %d failed (%s); next in %.1f s", task_id, made, result.last_error, delay
            )
            await asyncio.to_thread(outbox.retry_later, task_id, 1, delay)
            return
        if not result.delivered:
            logger.warning("webhook for task %s not delivered after %d attempts: %s", task_id, made, result.last_error)
        await asyncio.to_thread(outbox.finish, task_id, result.delivered, 1)

    # -- maintenance: heartbeat, cancellation, reaper, undispatched tasks, webhooks, retention -------

    async def _maintain(self) -> None:
        cfg = self.args.tasks
        queue = self.tasks.queue
        last_retention = time.monotonic()
        next_depth = 0.0
        while True:
            try:
                leases = {task_id: lease for task_id, (_, lease) in self._running.items()}
                for task_id in await asyncio.to_thread(queue.heartbeat, leases, cfg.lease_s):
                    self._stop_running(task_id, "lost")
                for task_id in await asyncio.to_thread(queue.cancel_requested, list(leases)):
                    self._stop_running(task_id, "cancelled")
                requeued, failed = await asyncio.to_thread(queue.reap_expired, cfg.max_attempts)
                for task_id in failed:
                    self.metrics.finished("failed", "WORKER_LOST", None)
                    self._spawn(self._deliver_webhook(task_id))
                if requeued:
                    logger.warning("requeued tasks whose worker stopped: %s", requeued)
                for record in await asyncio.to_thread(queue.claim_due, self.worker, cfg.lease_s, 4):
                    self._spawn(self._run_claimed(record))
                for task_id in await asyncio.to_thread(self.tasks.outbox.due):
                    self._spawn(self._deliver_webhook(task_id))
                if time.monotonic() - last_retention >= self.args.retention.sweep_interval_s:
                    last_retention = time.monotonic()
                    await self.retention.sweep()
                if time.monotonic() >= next_depth:  # the queue-depth gauge, last and not on every tick
                    next_depth = time.monotonic() + QUEUE_DEPTH_INTERVAL_S
                    self.metrics.queue_depth(await asyncio.to_thread(self.tasks.active_counts))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("task maintenance pass failed")
            await asyncio.sleep(cfg.sweep_interval_s)

    def _stop_running(self, task_id: str, why: str) -> None:
        """Stop a task this replica runs, because a client cancelled it or its lease is gone:
        cancel its coroutine (and with it the in-flight handle call, which stops the Generator's loop)."""
        running = self._running.get(task_id)
        if running is None or task_id in self._stopping:
            return
        self._stopping[task_id] = why
        running[0].cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
