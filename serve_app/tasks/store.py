"""The task store: submit, read, progress and cancel, expiry; with its queue and webhook outbox.

`TaskStore` is the one object replicas hold. Its two parts are separate classes over the same
database: `store.queue` (claims, leases, the reaper: what workers use) and `store.outbox`
(webhook delivery). Which database it runs on is `tasks.store` in serve_config.yaml:
SQLite for one machine, PostgreSQL for a cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serve_app.errors import Conflict, NotFound, TaskCancelled
from serve_app.tasks.admission import Admission
from serve_app.tasks.api_keys import ApiKeyStore
from serve_app.tasks.db import Database, Row
from serve_app.tasks.outbox import WebhookOutbox
from serve_app.tasks.queue import TaskQueue
from serve_app.tasks.records import ACTIVE, FINISHED, Progress, Stage, TaskRecord, create_schema, dumps, parse_keys


def _same_request(row: Row, request_hash: str | None) -> TaskRecord:
    """The task an Idempotency-Key made, if it was made from this request body; else a 409."""
    record = TaskRecord.from_row(row)
    if record.request_hash != request_hash:
        raise Conflict(
            "Idempotency-Key was already used with a different request body.", error_code="IDEMPOTENCY_KEY_REUSED"
        )
    return record


@dataclass(frozen=True)
class QueueStats:
    """A queued task's place in the queue (0: next to run) and an estimate of when it ends."""

    position: int | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class ExpiredTask:
    """A finished task past retention, with the stored objects to delete along with it."""

    task_id: str
    object_keys: list[str]
    webhook_pending: bool = False  # its delivery is abandoned with it


class TaskStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        create_schema(db)
        self.queue = TaskQueue(db, clock)
        self.outbox = WebhookOutbox(db, clock)
        self.keys = ApiKeyStore(db, clock)

    @property
    def kind(self) -> str:
        return self.db.dialect

    def close(self) -> None:
        self.db.close()

    def ping(self) -> None:
        self.db.ping()

    # -- submit and read -----------------------------------------------------------------------

    def find_idempotent(self, idempotency_key: str, request_hash: str) -> TaskRecord | None:
        """The task an Idempotency-Key already made; 409 if it was made from another body."""
        rows = self.db.read("SELECT * FROM tasks WHERE idempotency_key = ?", (idempotency_key,))
        return _same_request(rows[0], request_hash) if rows else None

    def create(
        self,
        task_id: str,
        *,
        kind: str,
        request: dict[str, Any],
        input_key: str | None = None,
        more_keys: list[str] | None = None,
        initial_image_url: str | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        cost: int = 0,
        key_id: str | None = None,
        admission: Admission | None = None,
        dispatch_grace_s: float = 10.0,
    ) -> tuple[TaskRecord, bool]:
        """Insert a queued task; returns (record, created). Sheds load past `admission`'s bounds.

        The idempotency lookup, the admission checks and the insert are one serialised step, so
        two submits with one key make one task and concurrent submits never overshoot a bound.
        """
        now = self._clock()
        with self.db.tx() as tx:
            self.db.lock_admission(tx)
            if idempotency_key is not None:
                row = tx.one("SELECT * FROM tasks WHERE idempotency_key = ?", (idempotency_key,))
                if row is not None:
                    return _same_request(row, request_hash), False
            if admission is not None:
                admission.check(tx, cost, key_id, now)
            tx.run(
                "INSERT INTO tasks (task_id, kind, status, request, input_key, initial_image_url, created_at,"
                " updated_at, available_at, progress, idempotency_key, request_hash, webhook_url, webhook_status,"
                " object_keys, key_id, cost) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    kind,
                    dumps(request),
                    input_key,
                    initial_image_url,
                    now,
                    now,
                    now + dispatch_grace_s,
                    Progress(stage=Stage.queued).model_dump_json(),
                    idempotency_key,
                    request_hash,
                    webhook_url,
                    "pending" if webhook_url else None,
                    dumps([*([input_key] if input_key else []), *(more_keys or [])]),
                    key_id,
                    cost,
                ),
            )
            row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
            tx.changed(task_id)  # queued: the ones behind it moved back in line
        assert row is not None  # inserted in this transaction
        return TaskRecord.from_row(row), True

    def precheck(self, admission: Admission, cost: int, key_id: str | None) -> None:
        """Admission's checks alone, to shed load before an upload is stored; `create` checks again
        (serialised with every other submit), so this one only reads."""
        with self.db.snapshot() as tx:
            admission.check(tx, cost, key_id, self._clock())

    def get(self, task_id: str) -> TaskRecord | None:
        rows = self.db.read("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRecord.from_row(rows[0]) if rows else None

    def require(self, task_id: str) -> TaskRecord:
        record = self.get(task_id)
        if record is None:
            raise NotFound(f"Task {task_id} not found.", error_code="TASK_NOT_FOUND")
        return record

    def count_active(self) -> int:
        rows = self.db.read("SELECT COUNT(*) AS n FROM tasks WHERE status IN (?, ?)", ACTIVE)
        return int(rows[0]["n"])

    def active_counts(self) -> dict[str, int]:
        """Active tasks by status, {"queued": n, "processing": m} (one query; for the queue-depth gauge)."""
        rows = self.db.read("SELECT status, COUNT(*) AS n FROM tasks WHERE status IN (?, ?) GROUP BY status", ACTIVE)
        counts = dict.fromkeys(ACTIVE, 0)
        counts.update({str(row["status"]): int(row["n"]) for row in rows})
        return counts

    def queue_stats(self, record: TaskRecord, sample: int = 20) -> QueueStats:
        """Where a task stands: its place in the queue (0 = next) and an ETA from the mean run time of
        the last `sample` tasks done, the tasks running now taken as the number of lanes. None where
        it does not apply. Its queries read one snapshot and take no write lock."""
        if record.finished:
            return QueueStats()
        with self.db.snapshot() as tx:
            row = tx.one(
                "SELECT AVG(finished_at - started_at) AS d FROM (SELECT finished_at, started_at FROM tasks"
                " WHERE status = 'done' AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?) AS recent",
                (sample,),
            )
            mean = float(row["d"]) if row and row["d"] is not None else None
            if record.status == "processing":
                elapsed = self._clock() - (record.started_at or record.created_at)
                return QueueStats(eta_s=None if mean is None else round(max(0.0, mean - elapsed), 1))
            ahead = tx.one(
                "SELECT COUNT(*) AS n FROM tasks WHERE status = 'queued' AND (created_at < ?"
                " OR (created_at = ? AND task_id < ?))",
                (record.created_at, record.created_at, record.task_id),
            )
            running = tx.one("SELECT COUNT(*) AS n FROM tasks WHERE status = 'processing'")
        position = int(ahead["n"]) if ahead else 0
        if mean is None:
            return QueueStats(position=position)
        lanes = int(running["n"]) if running else 0
        # Nothing running: it starts now. Else it waits for position // lanes rounds of the running
        # tasks, plus the round in progress, then runs itself.
        rounds = 1 if lanes == 0 else position // lanes + 2
        return QueueStats(position=position, eta_s=round(mean * rounds, 1))

    def view(self, task_id: str, key_id: str | None) -> tuple[TaskRecord, QueueStats]:
        """`owned` and `queue_stats` together: what a poll or an event stream shows of a task."""
        record = self.owned(task_id, key_id)
        return record, self.queue_stats(record)

    def owned(self, task_id: str, key_id: str | None) -> TaskRecord:
        """The task, when `key_id` made it (any task when None: auth off); else 404, as for no task,
        so a caller cannot learn which ids exist."""
        record = self.get(task_id)
        if record is None or (key_id is not None and record.key_id != key_id):
            raise NotFound(f"Task {task_id} not found.", error_code="TASK_NOT_FOUND")
        return record

    # -- progress and cancellation -----------------------------------------------------------------

    def set_progress(
        self, task_id: str, stage: str, step: int | None = None, total: int | None = None, lease: str | None = None
    ) -> None:
        """The running task's stage and step; with `lease`, only while that lease holds it (a worker
        whose task was requeued and claimed again must not write the new attempt's progress)."""
        progress = Progress(stage=Stage(stage), step=step, total_steps=total).model_dump_json()
        sql = "UPDATE tasks SET progress = ?, updated_at = ? WHERE task_id = ? AND status = 'processing'"
        params: tuple[object, ...] = (progress, self._clock(), task_id)
        if lease is not None:
            sql, params = sql + " AND lease_owner = ?", (*params, lease)
        with self.db.tx() as tx:
            tx.run(sql, params)
            tx.changed(task_id)

    def is_cancel_requested(self, task_id: str) -> bool:
        rows = self.db.read("SELECT cancel_requested FROM tasks WHERE task_id = ?", (task_id,))
        return bool(rows and rows[0]["cancel_requested"])

    def request_cancel(self, task_id: str, key_id: str | None = None) -> TaskRecord:
        """Queued: failed CANCELLED at once. Processing: flagged; its worker stops it.

        One transaction, so a claim racing with it either finds the task already failed or
        claims it with the flag set (and its worker stops it at its next check). With `key_id`,
        only that key's task: any other is 404, as for no task.
        """
        now = self._clock()
        with self.db.tx() as tx:
            owner = tx.one("SELECT key_id FROM tasks WHERE task_id = ?", (task_id,))
            if owner is None or (key_id is not None and owner["key_id"] != key_id):
                raise NotFound(f"Task {task_id} not found.", error_code="TASK_NOT_FOUND")
            cancelled_now = tx.run(
                "UPDATE tasks SET status = 'failed', error_code = 'CANCELLED', message = ?, progress = NULL,"
                " finished_at = ?, updated_at = ?, cancel_requested = 1 WHERE task_id = ? AND status = 'queued'",
                (TaskCancelled.default_message, now, now, task_id),
            )
            if not cancelled_now:
                tx.run(
                    "UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE task_id = ? AND status = 'processing'",
                    (now, task_id),
                )
            row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
            tx.changed(task_id)
        if row is None:
            raise NotFound(f"Task {task_id} not found.", error_code="TASK_NOT_FOUND")
        record = TaskRecord.from_row(row)
        if record.finished and not cancelled_now:
            raise Conflict(f"Task {task_id} has already finished ({record.status}).", error_code="TASK_FINISHED")
        return record

    # -- retention ---------------------------------------------------------------------------------

    def expired(self, older_than_s: float, limit: int = 100, webhook_grace_s: float = 0.0) -> list[ExpiredTask]:
        """Finished tasks that ended more than `older_than_s` ago; one that still owes its webhook
        only `webhook_grace_s` later still (however often its delivery failed or was replayed)."""
        cutoff = self._clock() - older_than_s
        rows = self.db.read(
            "SELECT task_id, object_keys, webhook_status FROM tasks WHERE status IN (?, ?) AND finished_at < ?"
            " AND (webhook_status IS NULL OR webhook_status != 'pending' OR finished_at < ?)"
            " ORDER BY finished_at LIMIT ?",
            (*FINISHED, cutoff, cutoff - webhook_grace_s, limit),
        )
        return [
            ExpiredTask(row["task_id"], parse_keys(row["object_keys"]), row["webhook_status"] == "pending")
            for row in rows
        ]

    def delete(self, task_ids: list[str]) -> int:
        """Delete finished task rows; returns how many went."""
        if not task_ids:
            return 0
        marks = ", ".join("?" for _ in task_ids)
        with self.db.tx() as tx:
            tx.run(
                "DELETE FROM texture_cache WHERE task_id IN"
                f" (SELECT task_id FROM tasks WHERE status IN (?, ?) AND task_id IN ({marks}))",
                (*FINISHED, *task_ids),
            )
            return tx.run(f"DELETE FROM tasks WHERE status IN (?, ?) AND task_id IN ({marks})", (*FINISHED, *task_ids))

    # -- the texture cache ---------------------------------------------------------------------------

    def cached_textures(self, content_hashes: list[str]) -> dict[str, dict[str, Any]]:
        """content hash -> the cached entry (what the task's result said of that texture)."""
        if not content_hashes:
            return {}
        marks = ", ".join("?" for _ in content_hashes)
        rows = self.db.read(
            f"SELECT content_hash, entry FROM texture_cache WHERE content_hash IN ({marks})", content_hashes
        )
        return {row["content_hash"]: json.loads(row["entry"]) for row in rows}

    def cache_textures(self, task_id: str, entries: dict[str, tuple[str, dict[str, Any]]]) -> None:
        """Remember textures a task made: content hash -> (image key, entry). A hash already cached
        keeps its first image (two tasks that raced for it both finished; either is right)."""
        if not entries:
            return
        now = self._clock()
        with self.db.tx() as tx:
            tx.run_many(
                "INSERT INTO texture_cache (content_hash, task_id, image_key, entry, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (content_hash) DO NOTHING",
                [(digest, task_id, key, dumps(entry), now) for digest, (key, entry) in entries.items()],
            )
