"""The work queue over the tasks table: atomic claims, leases renewed by heartbeat, the reaper.

A worker claims a queued task (queued -> processing, attempts + 1) and gets a lease on it: an id
new for every claim (`record.lease_owner`, `{worker}/{uuid}`), which its heartbeat renews. A
worker that stops renewing (its replica or node died) loses the task to the reaper, which
requeues it while attempts are left and fails it WORKER_LOST after that. Only the holder of the
current lease can renew, complete or fail the task: a stale worker (an earlier attempt, even on
the same replica) can change nothing, and its heartbeat tells it to stop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from serve_app.errors import WorkerLost
from serve_app.tasks.db import Database, Tx
from serve_app.tasks.records import Progress, Stage, TaskRecord, dumps

_QUEUED_PROGRESS = Progress(stage=Stage.queued).model_dump_json()


class TaskQueue:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    def _claim_in(self, tx: Tx, task_id: str, worker: str, lease_s: float, now: float) -> TaskRecord | None:
        lease = f"{worker}/{uuid.uuid4().hex}"
        changed = tx.run(
            "UPDATE tasks SET status = 'processing', lease_owner = ?, lease_expires_at = ?,"
            " attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ?"
            " WHERE task_id = ? AND status = 'queued'",
            (lease, now + lease_s, now, now, task_id),
        )
        if changed != 1:
            return None
        tx.changed(task_id)
        row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRecord.from_row(row) if row else None

    def claim(self, task_id: str, worker: str, lease_s: float) -> TaskRecord | None:
        """Take a queued task; None if it is not queued (someone else has it, or it ended). The
        record's `lease_owner` is the new lease: pass it to heartbeat, complete and fail."""
        now = self._clock()
        with self.db.tx() as tx:
            return self._claim_in(tx, task_id, worker, lease_s, now)

    def claim_due(self, worker: str, lease_s: float, limit: int = 1) -> list[TaskRecord]:
        """Claim up to `limit` queued tasks nobody dispatched in time (oldest first), atomically:
        concurrent claimers on any node get disjoint tasks and never wait on each other's rows."""
        now = self._clock()
        with self.db.tx() as tx:
            ids = [
                row["task_id"]
                for row in tx.rows(
                    "SELECT task_id FROM tasks WHERE status = 'queued' AND available_at <= ?"
                    f" ORDER BY created_at LIMIT ?{self.db.skip_locked}",
                    (now, limit),
                )
            ]
            claimed = [self._claim_in(tx, task_id, worker, lease_s, now) for task_id in ids]
        return [record for record in claimed if record is not None]

    def heartbeat(self, leases: Mapping[str, str], lease_s: float) -> list[str]:
        """Renew the leases `{task_id: lease}`; returns the task ids whose lease is gone (reaped,
        cancelled while queued, finished by someone else): their worker must stop them."""
        if not leases:
            return []
        now = self._clock()
        lost: list[str] = []
        with self.db.tx() as tx:
            for task_id, lease in leases.items():
                renewed = tx.run(
                    "UPDATE tasks SET lease_expires_at = ? WHERE task_id = ? AND lease_owner = ?"
                    " AND status = 'processing'",
                    (now + lease_s, task_id, lease),
                )
                if renewed != 1:
                    lost.append(task_id)
        return lost

    def cancel_requested(self, task_ids: list[str]) -> list[str]:
        """Which of `task_ids` a client asked to cancel (one query for a worker's running tasks)."""
        if not task_ids:
            return []
        marks = ", ".join("?" for _ in task_ids)
        rows = self.db.read(
            f"SELECT task_id FROM tasks WHERE cancel_requested = 1 AND task_id IN ({marks})", tuple(task_ids)
        )
        return [row["task_id"] for row in rows]

    def complete(self, task_id: str, lease: str, result: dict[str, Any], object_keys: list[str] | None = None) -> bool:
        """processing -> done, only while `lease` is the task's current lease. `object_keys` replaces the
        stored-object list when given (include the input photo's key)."""
        now = self._clock()
        with self.db.tx() as tx:
            tx.changed(task_id)
            return (
                tx.run(
                    "UPDATE tasks SET status = 'done', result = ?, object_keys = COALESCE(?, object_keys),"
                    " progress = NULL, finished_at = ?, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE task_id = ? AND status = 'processing' AND lease_owner = ?",
                    (dumps(result), dumps(object_keys) if object_keys is not None else None, now, now, task_id, lease),
                )
                == 1
            )

    def fail(
        self,
        task_id: str,
        error_code: str,
        message: str,
        *,
        lease: str | None = None,
        result: dict[str, Any] | None = None,
        object_keys: list[str] | None = None,
    ) -> bool:
        """-> failed. With a lease, only while it is the task's current lease; without, from any
        active state (the reaper, a cancelled queued task)."""
        now = self._clock()
        sql = (
            "UPDATE tasks SET status = 'failed', error_code = ?, message = ?, result = ?,"
            " object_keys = COALESCE(?, object_keys),"
            " progress = NULL, finished_at = ?, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE task_id = ? AND status IN ('queued', 'processing')"
        )
        params: tuple[Any, ...] = (
            error_code,
            message,
            dumps(result) if result else None,
            dumps(object_keys) if object_keys is not None else None,
            now,
            now,
            task_id,
        )
        if lease is not None:
            sql += " AND lease_owner = ?"
            params += (lease,)
        with self.db.tx() as tx:
            tx.changed(task_id)
            return tx.run(sql, params) == 1

    def reap_expired(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """Processing tasks whose lease ran out: requeue (attempts left) or fail WORKER_LOST."""
        now = self._clock()
        lost = WorkerLost()
        requeued: list[str] = []
        failed: list[str] = []
        with self.db.tx() as tx:
            rows = tx.rows(
                "SELECT task_id, attempts, cancel_requested FROM tasks"
                f" WHERE status = 'processing' AND lease_expires_at < ?{self.db.skip_locked}",
                (now,),
            )
            for row in rows:
                task_id = row["task_id"]
                if row["attempts"] < max_attempts and not row["cancel_requested"]:
                    tx.run(
                        "UPDATE tasks SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
                        " available_at = ?, updated_at = ?, progress = ? WHERE task_id = ?",
                        (now, now, _QUEUED_PROGRESS, task_id),
                    )
                    requeued.append(task_id)
                else:
                    code, message = (
                        ("CANCELLED", "The task was cancelled.")
                        if row["cancel_requested"]
                        else (lost.error_code, lost.message)
                    )
                    tx.run(
                        "UPDATE tasks SET status = 'failed', error_code = ?, message = ?, progress = NULL,"
                        " finished_at = ?, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL"
                        " WHERE task_id = ?",
                        (code, message, now, now, task_id),
                    )
                    failed.append(task_id)
            tx.changed(*requeued, *failed)
        return requeued, failed
