"""The task worker: runs tasks to an end state and delivers their webhooks. The TaskRunner
deployment is a thin shell over one.

Tasks reach it two ways: pushed (the ingress calls `run(task_id)` right after submit) and pulled
(the maintenance loop claims queued tasks nobody dispatched in time: the ingress died after the
insert, the runner was full, or the reaper requeued a task whose worker died). Claims are atomic
in the task store, so a task runs once at a time; a lease renewed by heartbeat marks it alive.

The worker is the only part of the graph that touches the task store on the runner's side. Model
replicas get their inputs over handles and stream progress back; a client's cancel reaches a
running task here (the maintenance loop sees the flag) and travels on as the cancellation of the
in-flight handle call, which the Generator turns into stopping its diffusion loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from serve_app.errors import AppError, TaskCancelled
from serve_app.flows.kit import Flow, FlowError
from serve_app.metrics import TaskMetrics
from serve_app.storage.base import ImageStore
from serve_app.tasks.config import RetentionConfig, TasksConfig
from serve_app.tasks.records import Stage, TaskRecord
from serve_app.tasks.retention import RetentionSweeper
from serve_app.tasks.store import TaskStore
from serve_app.tasks.views import webhook_body
from serve_app.webhooks import WebhookConfig, WebhookSender, make_msg_id

T = TypeVar("T")
logger = logging.getLogger("ray.serve")

QUEUE_DEPTH_INTERVAL_S = 5.0  # how often a worker refreshes the queue-depth gauge (Ray exports every 10 s)


class TaskWorker:
    """Claims, runs and finishes tasks with `flows` (task kind -> its product's flow), and keeps
    the queue moving: heartbeats, cancellation, the reaper, undispatched tasks, webhooks, retention."""

    def __init__(
        self,
        *,
        tasks: TaskStore,
        images: ImageStore,
        flows: Mapping[str, Flow[Any]],
        cfg: TasksConfig,
        webhooks: WebhookConfig | None = None,
        sender: WebhookSender | None = None,
        retention: RetentionConfig | None = None,
        metrics: TaskMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tasks = tasks
        self._clock = clock
        self.flows = flows
        self.cfg = cfg
        self.webhooks = webhooks or WebhookConfig()
        self.sender = sender
        self.retention_cfg = retention or RetentionConfig()
        self.metrics = metrics or TaskMetrics()
        self.retention = RetentionSweeper(tasks, images, self.retention_cfg, self.metrics)
        self.name = f"runner-{uuid.uuid4().hex[:12]}"
        self._running: dict[str, tuple[asyncio.Task[Any], str]] = {}  # task id -> (coroutine, lease)
        self._stopping: dict[str, str] = {}  # task id -> why its coroutine was cancelled: cancelled | lost
        self._background: set[asyncio.Task[Any]] = set()
        self._maintenance: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the maintenance loop on the running event loop."""
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    # -- entry points ----------------------------------------------------------------------------

    async def run(self, task_id: str) -> str:
        """Claim and run a pushed task; returns its final status (or 'skipped' if not claimable).

        The work is a task of its own: a caller that goes away (Serve cancels a handle call whose
        parent request was cancelled, e.g. a waiting client that disconnected) stops only its wait,
        never the claim or the run; a client's cancel or a lost lease stop the run itself."""
        return await asyncio.shield(self._spawn(self._claim_and_run(task_id)))

    async def _claim_and_run(self, task_id: str) -> str:
        record = await asyncio.to_thread(self.tasks.queue.claim, task_id, self.name, self.cfg.lease_s)
        if record is None:
            return "skipped"
        return await self.run_claimed(record)

    async def check_health(self) -> None:
        await asyncio.to_thread(self.tasks.ping)
        if self._maintenance is not None and self._maintenance.done():
            raise RuntimeError(f"maintenance loop stopped: {self._maintenance.exception()!r}")

    async def run_claimed(self, record: TaskRecord) -> str:
        """Run a task this worker has claimed to its end state; returns the status it ended in."""
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

    # -- running a task ----------------------------------------------------------------------------

    async def _execute(self, record: TaskRecord) -> str:
        task_id = record.task_id
        lease = record.lease_owner or ""
        started = time.perf_counter()
        queue = self.tasks.queue

        written: dict[str, Any] = {"stage": None, "at": float("-inf")}

        async def progress(stage: Stage, step: int | None = None, total: int | None = None) -> None:
            """Coalesced: a step of the same stage within `progress_interval_s` of the last write is
            skipped (the next one carries it); stage changes and a stage's last step are written."""
            now = self._clock()
            if (
                stage == written["stage"]
                and step is not None
                and step != total
                and now - written["at"] < self.cfg.progress_interval_s
            ):
                return
            written.update(stage=stage, at=now)
            await asyncio.to_thread(self.tasks.set_progress, task_id, stage.value, step, total, lease)

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
        # The flow has returned: too late to stop it. A cancel or a lost lease from here on must not
        # cut the final write short (the write itself checks the lease).
        self._running.pop(task_id, None)
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
        cfg = self.webhooks
        outbox = self.tasks.outbox
        record = await asyncio.to_thread(outbox.claim, task_id, cfg.timeout_s + 60)
        if record is None or record.webhook_url is None:
            return
        if self.sender is None:
            logger.error("task %s has a webhook_url but this runner has no webhook secret", task_id)
            await asyncio.to_thread(outbox.finish, task_id, False, 0)
            return
        payload = webhook_body(record)
        result = await self.sender.attempt(record.webhook_url, make_msg_id(task_id), payload)
        made = record.webhook_attempts + 1
        if not result.delivered:
            self.metrics.webhook_failed(result.error_code)
        if result.retryable and made < cfg.max_attempts:
            delay = self.sender.delay_after(made, result)
            logger.info(
                "webhook for task %s attempt %d failed (%s); next in %.1f s", task_id, made, result.last_error, delay
            )
            await asyncio.to_thread(outbox.retry_later, task_id, 1, delay, record.webhook_replays)
            return
        if not result.delivered:
            logger.warning("webhook for task %s not delivered after %d attempts: %s", task_id, made, result.last_error)
        await asyncio.to_thread(outbox.finish, task_id, result.delivered, 1, record.webhook_replays)

    # -- maintenance: heartbeat, cancellation, reaper, undispatched tasks, webhooks, retention -------

    async def _maintain(self) -> None:
        last_retention = time.monotonic()
        next_depth = 0.0
        sweep: asyncio.Task[None] | None = None
        while True:
            try:
                await self._maintenance_pass()
                # Beside the heartbeats, one at a time: a long sweep (a backlog of expired tasks, a
                # big bucket's orphans) must not hold the lease renewals past lease_s.
                due = time.monotonic() - last_retention >= self.retention_cfg.sweep_interval_s
                if due and (sweep is None or sweep.done()):
                    last_retention = time.monotonic()
                    sweep = self._spawn(self._sweep_retention())
                if time.monotonic() >= next_depth:  # the queue-depth gauge, last and not on every tick
                    next_depth = time.monotonic() + QUEUE_DEPTH_INTERVAL_S
                    self.metrics.queue_depth(await asyncio.to_thread(self.tasks.active_counts))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("task maintenance pass failed")
            await asyncio.sleep(self.cfg.sweep_interval_s)

    async def _sweep_retention(self) -> None:
        try:
            await self.retention.sweep()
        except Exception:
            logger.exception("retention sweep failed")

    async def _maintenance_pass(self) -> None:
        """Renew this worker's leases, stop what was cancelled or lost, requeue or fail what dead
        workers held, take undispatched tasks, and send webhooks that are due."""
        cfg, queue = self.cfg, self.tasks.queue
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
        for record in await asyncio.to_thread(queue.claim_due, self.name, cfg.lease_s, 4):
            self._spawn(self.run_claimed(record))
        for task_id in await asyncio.to_thread(self.tasks.outbox.due):
            self._spawn(self._deliver_webhook(task_id))

    def _stop_running(self, task_id: str, why: str) -> None:
        """Stop a task this worker runs, because a client cancelled it or its lease is gone:
        cancel its coroutine (and with it the in-flight handle call, which stops the Generator's loop)."""
        running = self._running.get(task_id)
        if running is None or task_id in self._stopping:
            return
        self._stopping[task_id] = why
        running[0].cancel()

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
