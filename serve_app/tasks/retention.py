"""Nothing grows without bound: finished tasks and what they stored expire after `retention.ttl_s`.

A sweep takes the finished tasks that ended more than ttl_s ago (one still owing its webhook
`webhook_grace_s` later: a delivery that keeps failing, or keeps being replayed, cannot keep a
task forever), deletes their objects (the input photo, the output image and its .json record),
then their rows. Objects first: a sweep that dies half-way leaves rows that name missing objects,
which the next sweep deletes again, never objects that nothing names. What a crash left unnamed
(an image stored just before its worker died) goes with the orphan pass: any object older than
ttl_s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from serve_app.errors import AppError
from serve_app.metrics import TaskMetrics
from serve_app.storage.base import ImageStore
from serve_app.tasks.config import RetentionConfig
from serve_app.tasks.store import TaskStore

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    tasks: int = 0
    objects: int = 0
    orphans: int = 0


class RetentionSweeper:
    def __init__(
        self,
        tasks: TaskStore,
        images: ImageStore,
        cfg: RetentionConfig,
        metrics: TaskMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tasks = tasks
        self.images = images
        self.cfg = cfg
        self.metrics = metrics
        self._clock = clock

    async def sweep(self) -> SweepReport:
        """Delete what expired; errors are logged and the rest waits for the next sweep."""
        report = SweepReport()
        while True:
            expired = await asyncio.to_thread(
                self.tasks.expired, self.cfg.ttl_s, self.cfg.batch_size, self.cfg.webhook_grace_s
            )
            if not expired:
                break
            abandoned = [task.task_id for task in expired if task.webhook_pending]
            if abandoned:
                logger.warning("retention: webhooks of %d expired tasks never delivered: %s", len(abandoned), abandoned)
            keys = [key for task in expired for key in task.object_keys]
            try:
                report.objects += await self.images.delete(keys)
            except AppError as exc:
                logger.warning("retention: deleting %d objects failed (%s); retrying next sweep", len(keys), exc)
                break
            report.tasks += await asyncio.to_thread(self.tasks.delete, [task.task_id for task in expired])
            if len(expired) < self.cfg.batch_size:
                break
        if self.cfg.sweep_orphans:
            try:
                report.orphans = await self.images.delete_older_than(self._clock() - self.cfg.ttl_s)
            except AppError as exc:
                logger.warning("retention: orphan sweep failed (%s)", exc)
        if self.metrics is not None:
            self.metrics.expired(report.tasks, report.objects + report.orphans)
        if report.tasks or report.objects or report.orphans:
            logger.info(
                "retention: deleted %d tasks, %d objects, %d orphans", report.tasks, report.objects, report.orphans
            )
        return report
