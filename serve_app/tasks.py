"""Durable task records: lifecycle, leases, the reaper's queries, idempotency and webhook state.

The embedded default is one SQLite file in WAL mode. Every replica on the node (ingress, task
runner, generator) opens the same file, so a record outlives any replica: an ingress restart
loses nothing, a dead worker's lease expires and the reaper requeues or fails its task.

SQLite needs a local filesystem shared by the processes, so this default covers one node. Across
nodes, put the same schema behind a network database (PostgreSQL: row locks give the same atomic
claim with `SELECT ... FOR UPDATE SKIP LOCKED`); NFS-hosted SQLite is not safe (broken locking).

Lifecycle:  queued --claim--> processing --complete--> done
                                   |  \\--fail--> failed
                                   \\--lease expires--> queued (attempts < max) | failed WORKER_LOST
Every method is synchronous and thread-safe; async code calls them via `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from serve_app.errors import Conflict, NotFound, QueueFull, WorkerLost
from serve_app.protocol import Progress, Stage, TaskResult, TaskStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    input_key TEXT,
    initial_image_url TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    available_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at REAL,
    progress TEXT,
    result TEXT,
    error_code TEXT,
    message TEXT,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT,
    webhook_url TEXT,
    webhook_status TEXT,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_status_available ON tasks (status, available_at);
CREATE INDEX IF NOT EXISTS tasks_status_lease ON tasks (status, lease_expires_at);
CREATE INDEX IF NOT EXISTS tasks_webhook ON tasks (webhook_status, webhook_lease_expires_at);
"""

ACTIVE = (TaskStatus.queued.value, TaskStatus.processing.value)
FINISHED = (TaskStatus.done.value, TaskStatus.failed.value)


class TaskRecord(BaseModel):
    task_id: str
    kind: str
    status: TaskStatus
    request: dict[str, Any]
    input_key: str | None = None
    initial_image_url: str | None = None
    created_at: float
    updated_at: float
    available_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    error_code: str | None = None
    message: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    webhook_status: str | None = Field(default=None, description="pending | delivered | failed")
    webhook_attempts: int = 0
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.status in (TaskStatus.done, TaskStatus.failed)

    def to_response(self) -> TaskResult:
        """The client's view: status, progress while running, result fields when done."""
        body: dict[str, Any] = {
            "task_id": self.task_id,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "attempts": self.attempts,
            "initial_image_url": self.initial_image_url,
        }
        if not self.finished:
            body["progress"] = self.progress or Progress(stage=Stage.queued)
        if self.result:
            body.update(self.result)
        if self.status == TaskStatus.failed:
            body["error_code"] = self.error_code
            body["message"] = self.message
        return TaskResult.model_validate(body)


def request_fingerprint(payload: dict[str, Any], extra: bytes = b"") -> str:
    """Stable hash of a request body (and an uploaded file) for Idempotency-Key checks."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode())
    digest.update(hashlib.sha256(extra).digest())
    return digest.hexdigest()


class SqliteTaskStore:
    """Task records in one SQLite file shared by every replica on the node."""

    def __init__(self, db_path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.db_path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._conn.executescript(_SCHEMA)

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One IMMEDIATE transaction: the write lock is taken up front, so claims are atomic."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    @staticmethod
    def _record(row: sqlite3.Row) -> TaskRecord:
        data = dict(row)
        data["request"] = json.loads(data["request"])
        data["result"] = json.loads(data["result"]) if data["result"] else None
        data["progress"] = Progress.model_validate_json(data["progress"]) if data["progress"] else None
        data["cancel_requested"] = bool(data["cancel_requested"])
        return TaskRecord.model_validate(data)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def ping(self) -> None:
        self._read("SELECT 1")

    # -- submit and read ------------------------------------------------------------------------

    def find_idempotent(self, idempotency_key: str, request_hash: str) -> TaskRecord | None:
        """The task an Idempotency-Key already made; 409 if it was made from another body."""
        rows = self._read("SELECT * FROM tasks WHERE idempotency_key = ?", (idempotency_key,))
        if not rows:
            return None
        record = self._record(rows[0])
        if record.request_hash != request_hash:
            raise Conflict(
                "Idempotency-Key was already used with a different request body.",
                error_code="IDEMPOTENCY_KEY_REUSED",
            )
        return record

    def create(
        self,
        task_id: str,
        *,
        kind: str,
        request: dict[str, Any],
        input_key: str | None = None,
        initial_image_url: str | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        max_active: int | None = None,
        retry_after_s: int = 5,
        dispatch_grace_s: float = 10.0,
    ) -> tuple[TaskRecord, bool]:
        """Insert a queued task; returns (record, created). Sheds load past `max_active`."""
        now = self._clock()
        with self._tx() as cur:
            if idempotency_key is not None:
                row = cur.execute("SELECT * FROM tasks WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    existing = self._record(row)
                    if existing.request_hash != request_hash:
                        raise Conflict(
                            "Idempotency-Key was already used with a different request body.",
                            error_code="IDEMPOTENCY_KEY_REUSED",
                        )
                    return existing, False
            if max_active is not None:
                (active,) = cur.execute("SELECT COUNT(*) FROM tasks WHERE status IN (?, ?)", ACTIVE).fetchone()
                if active >= max_active:
                    raise QueueFull(f"{active} tasks are in flight; retry later.", retry_after_s=retry_after_s)
            cur.execute(
                "INSERT INTO tasks (task_id, kind, status, request, input_key, initial_image_url, created_at,"
                " updated_at, available_at, progress, idempotency_key, request_hash, webhook_url, webhook_status)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    kind,
                    json.dumps(request, ensure_ascii=False),
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
                ),
            )
            row = cur.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return self._record(row), True

    def get(self, task_id: str) -> TaskRecord | None:
        rows = self._read("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return self._record(rows[0]) if rows else None

    def require(self, task_id: str) -> TaskRecord:
        record = self.get(task_id)
        if record is None:
            raise NotFound(f"Task {task_id} not found.", error_code="TASK_NOT_FOUND")
        return record

    def count_active(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM tasks WHERE status IN (?, ?)", ACTIVE)[0][0])

    # -- workers ----------------------------------------------------------------------------------

    def claim(self, task_id: str, owner: str, lease_s: float) -> TaskRecord | None:
        """Take a queued task (queued -> processing, attempts + 1); None if someone else has it."""
        now = self._clock()
        with self._tx() as cur:
            cur.execute(
                "UPDATE tasks SET status = 'processing', lease_owner = ?, lease_expires_at = ?,"
                " attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ?"
                " WHERE task_id = ? AND status = 'queued'",
                (owner, now + lease_s, now, now, task_id),
            )
            if cur.rowcount != 1:
                return None
            row = cur.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return self._record(row)

    def claim_due(self, owner: str, lease_s: float, limit: int = 1) -> list[TaskRecord]:
        """Claim queued tasks nobody dispatched in time (ingress died, runner was full, requeued)."""
        now = self._clock()
        ids = [
            r[0]
            for r in self._read(
                "SELECT task_id FROM tasks WHERE status = 'queued' AND available_at <= ? ORDER BY created_at LIMIT ?",
                (now, limit),
            )
        ]
        claimed = [self.claim(task_id, owner, lease_s) for task_id in ids]
        return [record for record in claimed if record is not None]

    def heartbeat(self, task_ids: list[str], owner: str, lease_s: float) -> None:
        if not task_ids:
            return
        now = self._clock()
        with self._tx() as cur:
            cur.executemany(
                "UPDATE tasks SET lease_expires_at = ? WHERE task_id = ? AND lease_owner = ? AND status = 'processing'",
                [(now + lease_s, task_id, owner) for task_id in task_ids],
            )

    def set_progress(self, task_id: str, stage: str, step: int | None = None, total: int | None = None) -> None:
        progress = Progress(stage=Stage(stage), step=step, total_steps=total).model_dump_json()
        with self._tx() as cur:
            cur.execute(
                "UPDATE tasks SET progress = ?, updated_at = ? WHERE task_id = ? AND status = 'processing'",
                (progress, self._clock(), task_id),
            )

    def is_cancel_requested(self, task_id: str) -> bool:
        rows = self._read("SELECT cancel_requested FROM tasks WHERE task_id = ?", (task_id,))
        return bool(rows and rows[0][0])

    def complete(self, task_id: str, owner: str, result: dict[str, Any]) -> bool:
        """processing -> done, only while `owner` still holds the lease."""
        now = self._clock()
        with self._tx() as cur:
            cur.execute(
                "UPDATE tasks SET status = 'done', result = ?, progress = NULL, finished_at = ?, updated_at = ?,"
                " lease_owner = NULL, lease_expires_at = NULL WHERE task_id = ? AND status = 'processing'"
                " AND lease_owner = ?",
                (json.dumps(result, ensure_ascii=False), now, now, task_id, owner),
            )
            return cur.rowcount == 1

    def fail(
        self,
        task_id: str,
        error_code: str,
        message: str,
        *,
        owner: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """-> failed. With an owner, only while it holds the lease; without, from any active state."""
        now = self._clock()
        sql = (
            "UPDATE tasks SET status = 'failed', error_code = ?, message = ?, result = ?, progress = NULL,"
            " finished_at = ?, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE task_id = ? AND status IN ('queued', 'processing')"
        )
        params: tuple[Any, ...] = (
            error_code,
            message,
            json.dumps(result, ensure_ascii=False) if result else None,
            now,
            now,
            task_id,
        )
        if owner is not None:
            sql += " AND lease_owner = ?"
            params += (owner,)
        with self._tx() as cur:
            cur.execute(sql, params)
            return cur.rowcount == 1

    def request_cancel(self, task_id: str) -> TaskRecord:
        """Queued: failed CANCELLED at once. Processing: flag it (the generator stops at its next step)."""
        record = self.require(task_id)
        if record.finished:
            raise Conflict(f"Task {task_id} has already finished ({record.status}).", error_code="TASK_FINISHED")
        if record.status == TaskStatus.queued and self.fail(task_id, "CANCELLED", "The task was cancelled."):
            return self.require(task_id)
        with self._tx() as cur:
            cur.execute(
                "UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE task_id = ? AND status = 'processing'",
                (self._clock(), task_id),
            )
        return self.require(task_id)

    # -- the reaper ---------------------------------------------------------------------------------

    def reap_expired(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """Processing tasks whose lease ran out: requeue (attempts left) or fail WORKER_LOST."""
        now = self._clock()
        lost = WorkerLost()
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT task_id, attempts, cancel_requested FROM tasks"
                " WHERE status = 'processing' AND lease_expires_at < ?",
                (now,),
            ).fetchall()
            requeued, failed = [], []
            for task_id, attempts, cancel_requested in rows:
                if attempts < max_attempts and not cancel_requested:
                    cur.execute(
                        "UPDATE tasks SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
                        " available_at = ?, updated_at = ?, progress = ? WHERE task_id = ?",
                        (now, now, Progress(stage=Stage.queued).model_dump_json(), task_id),
                    )
                    requeued.append(task_id)
                else:
                    code, message = (
                        ("CANCELLED", "The task was cancelled.")
                        if cancel_requested
                        else (lost.error_code, lost.message)
                    )
                    cur.execute(
                        "UPDATE tasks SET status = 'failed', error_code = ?, message = ?, progress = NULL,"
                        " finished_at = ?, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL"
                        " WHERE task_id = ?",
                        (code, message, now, now, task_id),
                    )
                    failed.append(task_id)
        return requeued, failed

    def purge_finished(self, older_than_s: float) -> int:
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM tasks WHERE status IN (?, ?) AND finished_at < ? AND"
                " (webhook_status IS NULL OR webhook_status != 'pending')",
                (*FINISHED, self._clock() - older_than_s),
            )
            return cur.rowcount

    # -- webhooks -----------------------------------------------------------------------------------

    def claim_webhook(self, task_id: str, lease_s: float) -> TaskRecord | None:
        """Take the right to deliver a finished task's webhook (one deliverer at a time)."""
        now = self._clock()
        with self._tx() as cur:
            cur.execute(
                "UPDATE tasks SET webhook_lease_expires_at = ? WHERE task_id = ? AND webhook_status = 'pending'"
                " AND status IN (?, ?) AND (webhook_lease_expires_at IS NULL OR webhook_lease_expires_at < ?)",
                (now + lease_s, task_id, *FINISHED, now),
            )
            if cur.rowcount != 1:
                return None
            row = cur.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return self._record(row)

    def due_webhooks(self, limit: int = 16) -> list[str]:
        """Finished tasks whose webhook is still pending and nobody is delivering."""
        now = self._clock()
        rows = self._read(
            "SELECT task_id FROM tasks WHERE webhook_status = 'pending' AND status IN (?, ?)"
            " AND (webhook_lease_expires_at IS NULL OR webhook_lease_expires_at < ?) ORDER BY finished_at LIMIT ?",
            (*FINISHED, now, limit),
        )
        return [r[0] for r in rows]

    def finish_webhook(self, task_id: str, delivered: bool, attempts: int) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE tasks SET webhook_status = ?, webhook_attempts = webhook_attempts + ?,"
                " webhook_lease_expires_at = NULL WHERE task_id = ?",
                ("delivered" if delivered else "failed", attempts, task_id),
            )
