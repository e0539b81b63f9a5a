"""TaskRunner deployment: runs tasks to an end state and delivers their webhooks.

Tasks reach it two ways: pushed (the ingress calls `run(task_id)` right after submit) and pulled
(a maintenance loop claims queued tasks nobody dispatched in time: the ingress died after the
insert, the runner was full, or the reaper requeued a task whose worker died). Claims are atomic
in the task store, so a task runs once at a time; a lease renewed by heartbeat marks it alive.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.config import AppArgs, get_settings, load_preset
from serve_app.errors import AppError
from serve_app.flow import DeskFlow
from serve_app.items import load_item_vocabulary
from serve_app.metrics import TaskMetrics
from serve_app.protocol import (
    Classification,
    DeskItem,
    GenerationOutput,
    GenerationSpec,
    ItemSearchResult,
    Stage,
)
from serve_app.storage import start_store
from serve_app.tasks import SqliteTaskStore, TaskRecord
from serve_app.webhooks import WebhookSender, make_msg_id

logger = logging.getLogger("ray.serve")


class HandleStages:
    """The flow's stages as calls to the other deployments."""

    def __init__(
        self,
        captioner: DeploymentHandle,
        classifier: DeploymentHandle,
        generator: DeploymentHandle,
        shopping: DeploymentHandle,
    ) -> None:
        self._captioner = captioner
        self._classifier = classifier
        self._generator = generator
        self._shopping = shopping

    async def caption(self, image_png: bytes) -> str:
        return await self._captioner.caption.remote(image_png)

    async def classify(self, image_png: bytes) -> Classification:
        return await self._classifier.classify.remote(image_png)

    async def generate(self, spec: GenerationSpec) -> GenerationOutput:
        # The LoRA name is the multiplexed model id: Serve routes to replicas that have it resident.
        handle = self._generator.options(multiplexed_model_id=spec.lora_name or "")
        return await handle.generate.remote(spec)

    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]:
        return await self._shopping.search.remote(items)


@serve.deployment
class TaskRunner:
    async def __init__(
        self,
        args: dict[str, Any],
        captioner: DeploymentHandle,
        classifier: DeploymentHandle,
        generator: DeploymentHandle,
        shopping: DeploymentHandle,
    ) -> None:
        self.args = AppArgs.model_validate(args)
        self.preset = load_preset(self.args.preset)
        settings = get_settings()
        self.tasks = SqliteTaskStore(self.args.tasks.db_path or "")
        self.images = await start_store(self.args.storage, settings)
        self.flow = DeskFlow(
            self.preset, HandleStages(captioner, classifier, generator, shopping), self.images, load_item_vocabulary()
        )
        self.webhooks = (
            WebhookSender(self.args.webhooks, settings.imagegen_webhook_secret, self.args.fetch)
            if settings.imagegen_webhook_secret
            else None
        )
        self.metrics = TaskMetrics()
        self.owner = f"runner-{uuid.uuid4().hex[:12]}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    # -- entry points ----------------------------------------------------------------------------

    async def run(self, task_id: str) -> str:
        """Claim and run a pushed task; returns its final status (or 'skipped' if not claimable)."""
        record = await asyncio.to_thread(self.tasks.claim, task_id, self.owner, self.args.tasks.lease_s)
        if record is None:
            return "skipped"
        task = asyncio.current_task()
        assert task is not None
        self._running[task_id] = task  # type: ignore[assignment]
        try:
            return await self._execute(record)
        finally:
            self._running.pop(task_id, None)

    async def check_health(self) -> None:
        await asyncio.to_thread(self.tasks.ping)
        if self._maintenance.done():
            raise RuntimeError(f"maintenance loop stopped: {self._maintenance.exception()!r}")

    # -- running a task ----------------------------------------------------------------------------

    async def _execute(self, record: TaskRecord) -> str:
        task_id = record.task_id
        started = time.perf_counter()

        async def progress(stage: Stage) -> None:
            await asyncio.to_thread(self.tasks.set_progress, task_id, stage.value)

        async def cancelled() -> bool:
            return await asyncio.to_thread(self.tasks.is_cancel_requested, task_id)

        try:
            result = await self.flow.run(record, progress, cancelled)
        except AppError as exc:
            await asyncio.to_thread(self.tasks.fail, task_id, exc.error_code, exc.message, owner=self.owner)
            status = "failed"
            self.metrics.finished(status, exc.error_code, time.perf_counter() - started)
        except asyncio.CancelledError:
            # The replica is shutting down: leave the lease to expire so the reaper requeues it.
            raise
        except Exception as exc:
            logger.exception("task %s crashed", task_id)
            await asyncio.to_thread(
                self.tasks.fail, task_id, "INTERNAL_ERROR", f"Internal error: {type(exc).__name__}", owner=self.owner
            )
            status = "failed"
            self.metrics.finished(status, "INTERNAL_ERROR", time.perf_counter() - started)
        else:
            completed = await asyncio.to_thread(self.tasks.complete, task_id, self.owner, result)
            status = "done" if completed else "lost_lease"
            self.metrics.finished(status, None, time.perf_counter() - started)
        if record.webhook_url:
            self._spawn(self._deliver_webhook(task_id))
        return status

    async def _deliver_webhook(self, task_id: str) -> None:
        lease = self.args.webhooks.max_delay_s * self.args.webhooks.max_attempts + 60
        record = await asyncio.to_thread(self.tasks.claim_webhook, task_id, lease)
        if record is None or record.webhook_url is None:
            return
        if self.webhooks is None:
            logger.error("task %s has a webhook_url but IMAGEGEN_WEBHOOK_SECRET is not set", task_id)
            await asyncio.to_thread(self.tasks.finish_webhook, task_id, False, 0)
            return
        payload = record.to_response().model_dump(mode="json", exclude_none=True)
        outcome = await self.webhooks.deliver(record.webhook_url, make_msg_id(task_id), payload)
        if not outcome.delivered:
            logger.warning("webhook for task %s not delivered: %s", task_id, outcome.last_error)
        await asyncio.to_thread(self.tasks.finish_webhook, task_id, outcome.delivered, outcome.attempts)

    # -- maintenance: heartbeat, reaper, undispatched tasks, webhooks -----------------------------

    async def _maintain(self) -> None:
        cfg = self.args.tasks
        last_purge = 0.0
        while True:
            try:
                await asyncio.to_thread(self.tasks.heartbeat, list(self._running), self.owner, cfg.lease_s)
                requeued, failed = await asyncio.to_thread(self.tasks.reap_expired, cfg.max_attempts)
                for task_id in failed:
                    self.metrics.finished("failed", "WORKER_LOST", None)
                    self._spawn(self._deliver_webhook(task_id))
                if requeued:
                    logger.warning("requeued tasks whose worker stopped: %s", requeued)
                for record in await asyncio.to_thread(self.tasks.claim_due, self.owner, cfg.lease_s, 4):
                    self._spawn(self._run_claimed(record))
                for task_id in await asyncio.to_thread(self.tasks.due_webhooks):
                    self._spawn(self._deliver_webhook(task_id))
                if time.time() - last_purge > 3600:
                    last_purge = time.time()
                    await asyncio.to_thread(self.tasks.purge_finished, cfg.ttl_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("task maintenance pass failed")
            await asyncio.sleep(cfg.sweep_interval_s)

    async def _run_claimed(self, record: TaskRecord) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running[record.task_id] = task  # type: ignore[assignment]
        try:
            await self._execute(record)
        finally:
            self._running.pop(record.task_id, None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
