"""The task record and its table: the same schema on SQLite and PostgreSQL.

Lifecycle:  queued --claim--> processing --complete--> done
                                   |  \\--fail--> failed
                                   \\--lease expires--> queued (attempts < max) | failed WORKER_LOST
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from serve_app.tasks.db import Database, Row


class TaskStatus(StrEnum):
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"


class Stage(StrEnum):
    queued = "queued"
    writing = "writing"  # the prompt writer (scenes, articles)
    captioning = "captioning"
    generating = "generating"
    restoring = "restoring"  # face restoration after an instruction edit
    searching = "searching"
    storing = "storing"


class Progress(BaseModel):
    stage: Stage = Field(description="What the task is doing now.")
    step: int | None = Field(default=None, description="Diffusion step done (while generating).")
    total_steps: int | None = Field(default=None, description="Diffusion steps in all.")


TABLES = [
    """CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    input_key TEXT,
    initial_image_url TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    available_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at DOUBLE PRECISION,
    progress TEXT,
    result TEXT,
    error_code TEXT,
    message TEXT,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT,
    webhook_url TEXT,
    webhook_status TEXT,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_lease_expires_at DOUBLE PRECISION,
    webhook_next_at DOUBLE PRECISION,
    webhook_replays INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    object_keys TEXT,
    key_id TEXT,
    cost BIGINT NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    limits TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
)""",
    # Content-addressed texture cache: a texture's parameters (and the caller's scope) hash to the
    # stored image a task made; rows go with their task when retention deletes it.
    """CREATE TABLE IF NOT EXISTS texture_cache (
    content_hash TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    image_key TEXT NOT NULL,
    entry TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
)""",
    # Webhook replays of the last window, by caller (its API key, or its address with keys off):
    # the per-caller rate of POST /v1/tasks/{id}/webhook. Older rows go with the next replay.
    """CREATE TABLE IF NOT EXISTS webhook_replay_log (
    caller TEXT NOT NULL,
    task_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
)""",
]
# Columns added after the first release, for databases created before them.
ADDED_COLUMNS = {
    "object_keys": "TEXT",
    "key_id": "TEXT",
    "cost": "BIGINT NOT NULL DEFAULT 0",
    "webhook_next_at": "DOUBLE PRECISION",
    "webhook_replays": "INTEGER NOT NULL DEFAULT 0",
}
INDEXES = [
    "CREATE INDEX IF NOT EXISTS tasks_status_available ON tasks (status, available_at)",
    "CREATE INDEX IF NOT EXISTS tasks_status_lease ON tasks (status, lease_expires_at)",
    "CREATE INDEX IF NOT EXISTS tasks_webhook ON tasks (webhook_status, webhook_lease_expires_at)",
    "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (status, finished_at)",
    "CREATE INDEX IF NOT EXISTS tasks_key_status ON tasks (key_id, status)",
    "CREATE INDEX IF NOT EXISTS tasks_key_created ON tasks (key_id, created_at)",
    "CREATE INDEX IF NOT EXISTS texture_cache_task ON texture_cache (task_id)",
    "CREATE INDEX IF NOT EXISTS webhook_replay_log_caller ON webhook_replay_log (caller, at)",
]

ACTIVE = (TaskStatus.queued.value, TaskStatus.processing.value)
FINISHED = (TaskStatus.done.value, TaskStatus.failed.value)


def create_schema(db: Database) -> None:
    """Create the table and indexes if missing (safe when many replicas start at once)."""
    with db.tx() as tx:
        db.lock_admission(tx)  # PostgreSQL's CREATE ... IF NOT EXISTS races with itself
        for statement in TABLES:
            tx.run(statement)
        if db.dialect == "sqlite":
            present = {row["name"] for row in tx.rows("PRAGMA table_info(tasks)")}
            for column, kind in ADDED_COLUMNS.items():
                if column not in present:
                    tx.run(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
        else:
            for column, kind in ADDED_COLUMNS.items():
                tx.run(f"ALTER TABLE tasks ADD COLUMN IF NOT EXISTS {column} {kind}")
        for statement in INDEXES:  # after the columns they index exist
            tx.run(statement)


class TaskRecord(BaseModel):
    """One task as stored; `serve_app.api.views` turns it into what clients see."""

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
    webhook_next_at: float | None = Field(default=None, description="No webhook attempt before this time.")
    webhook_replays: int = Field(default=0, description="Times a client asked for its webhook again.")
    cancel_requested: bool = False
    object_keys: list[str] = Field(default_factory=list, description="Stored objects this task made.")
    key_id: str | None = Field(default=None, description="The API key that created it (None with auth off).")
    cost: int = Field(default=0, description="height x width x steps x images: what admission counted.")

    @property
    def finished(self) -> bool:
        return self.status in (TaskStatus.done, TaskStatus.failed)

    @classmethod
    def from_row(cls, row: Row) -> TaskRecord:
        data = dict(row)
        data["request"] = json.loads(data["request"])
        data["result"] = json.loads(data["result"]) if data["result"] else None
        data["progress"] = Progress.model_validate_json(data["progress"]) if data["progress"] else None
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["object_keys"] = parse_keys(data.get("object_keys"))
        return cls.model_validate(data)


def parse_keys(value: str | None) -> list[str]:
    return list(json.loads(value)) if value else []


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
