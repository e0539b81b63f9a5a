"""The webhook outbox: finished tasks whose result still has to be POSTed to their webhook_url.

A task with a webhook_url is born `pending`. When it ends, one deliverer at a time (on any node)
takes a delivery lease for one attempt, and marks it delivered or failed, or schedules the next
attempt (`retry_later`): the retry schedule lives here, not in a sleeping coroutine, so a receiver
may stay down for hours across runner restarts. A deliverer that dies leaves the lease to expire,
and the next sweep delivers it again (at least once, same id). `replay` puts a finished task's
delivery back in the outbox on a client's request (same id again, a fresh retry schedule).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from serve_app.errors import Conflict, NotFound
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

    def replay(self, task_id: str, key_id: str | None = None) -> TaskRecord:
        """Queue a finished task's webhook for delivery again: pending, due now, with a fresh retry
        schedule (attempts counted from 0); the maintenance pass of any runner delivers it, under
        the same message id. A delivery already under way is left to finish (it sends the same
        body). With `key_id`, only that key's task: any other is 404, as for no task. 409 while the
        task runs, or when it has no webhook_url."""
        with self.db.tx() as tx:
            row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
            if row is None or (key_id is not None and row["key_id"] != key_id):
                raise NotFound(f"Task {task_id} not found.", error_code="TASK_NOT_FOUND")
            record = TaskRecord.from_row(row)
            if not record.webhook_url:
                raise Conflict(f"Task {task_id} has no webhook_url.", error_code="NO_WEBHOOK")
            if not record.finished:
                raise Conflict(
                    f"Task {task_id} has not finished ({record.status}); its webhook is sent when it does.",
                    error_code="TASK_NOT_FINISHED",
                )
            tx.run(
                "UPDATE tasks SET webhook_status = 'pending', webhook_attempts = 0, webhook_next_at = NULL"
                " WHERE task_id = ? AND status IN (?, ?)",
                (task_id, *FINISHED),
            )
            row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        assert row is not None  # finished tasks are only deleted outside this transaction
        return TaskRecord.from_row(row)
