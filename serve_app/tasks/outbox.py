"""The webhook outbox: finished tasks whose result still has to be POSTed to their webhook_url.

A task with a webhook_url is born `pending`. When it ends, one deliverer at a time (on any node)
takes a delivery lease for one attempt, and marks it delivered or failed, or schedules the next
attempt (`retry_later`): the retry schedule lives here, not in a sleeping coroutine, so a receiver
may stay down for hours across runner restarts. A deliverer that dies leaves the lease to expire,
and the next sweep delivers it again (at least once, same id).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from serve_app.tasks.db import Database
from serve_app.tasks.records import FINISHED, TaskRecord


class WebhookOutbox:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    def claim(self, task_id: str, lease_s: float) -> TaskRecord | None:
        """Take the right to deliver a finished task's webhook; None if not pending or taken."""
        now = self._clock()
        with self.db.tx() as tx:
            changed = tx.run(
                "UPDATE tasks SET webhook_lease_expires_at = ? WHERE task_id = ? AND webhook_status = 'pending'"
                " AND status IN (?, ?) AND (webhook_lease_expires_at IS NULL OR webhook_lease_expires_at < ?)"
                " AND (webhook_next_at IS NULL OR webhook_next_at <= ?)",
                (now + lease_s, task_id, *FINISHED, now, now),
            )
            if changed != 1:
                return None
            row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRecord.from_row(row) if row else None

    def due(self, limit: int = 16) -> list[str]:
        """Finished tasks whose webhook is still pending, whose next attempt is due, and that nobody is
        delivering."""
        now = self._clock()
        rows = self.db.read(
            "SELECT task_id FROM tasks WHERE webhook_status = 'pending' AND status IN (?, ?)"
            " AND (webhook_lease_expires_at IS NULL OR webhook_lease_expires_at < ?)"
            " AND (webhook_next_at IS NULL OR webhook_next_at <= ?) ORDER BY finished_at LIMIT ?",
            (*FINISHED, now, now, limit),
        )
        return [row["task_id"] for row in rows]

    def finish(self, task_id: str, delivered: bool, attempts: int) -> None:
        with self.db.tx() as tx:
            tx.run(
                "UPDATE tasks SET webhook_status = ?, webhook_attempts = webhook_attempts + ?,"
                " webhook_lease_expires_at = NULL WHERE task_id = ?",
                ("delivered" if delivered else "failed", attempts, task_id),
            )

    def retry_later(self, task_id: str, attempts: int, delay_s: float) -> None:
        """Count `attempts` more failed attempts and let the next one be claimed after `delay_s`."""
        with self.db.tx() as tx:
            tx.run(
                "UPDATE tasks SET webhook_attempts = webhook_attempts + ?, webhook_next_at = ?,"
                " webhook_lease_expires_at = NULL WHERE task_id = ? AND webhook_status = 'pending'",
                (attempts, self._clock() + delay_s, task_id),
            )
