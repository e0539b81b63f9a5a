"""Durable task records: a store (submit, read, cancel, expiry), its work queue and webhook outbox.

SQLite is the embedded default for one machine; PostgreSQL is the store for a cluster. Both run
the same SQL through `serve_app.tasks.db.Database`; `open_task_store` picks one from config.
"""

from __future__ import annotations

from serve_app.errors import ConfigurationError
from serve_app.settings import Settings
from serve_app.tasks.config import TasksConfig
from serve_app.tasks.db import Database, PostgresDatabase, SqliteDatabase
from serve_app.tasks.outbox import WebhookOutbox
from serve_app.tasks.queue import TaskQueue
from serve_app.tasks.records import TaskRecord
from serve_app.tasks.store import ExpiredTask, TaskStore

__all__ = [
    "Database",
    "ExpiredTask",
    "PostgresDatabase",
    "SqliteDatabase",
    "TaskQueue",
    "TaskRecord",
    "TaskStore",
    "WebhookOutbox",
    "open_database",
    "open_task_store",
]


def open_database(cfg: TasksConfig, settings: Settings) -> Database:
    """The database `cfg.store` names: a SQLite file, or PostgreSQL at IMAGEGEN_TASKS_DSN."""
    if cfg.store == "postgres":
        dsn = settings.imagegen_tasks_dsn.get_secret_value() if settings.imagegen_tasks_dsn else ""
        if not dsn.strip():
            raise ConfigurationError(
                "tasks.store is 'postgres' but IMAGEGEN_TASKS_DSN is not set "
                "(e.g. postgresql://user:password@host:5432/imagegen)."
            )
        return PostgresDatabase(dsn, max_size=cfg.pool_max_size)
    if not cfg.db_path:
        raise ConfigurationError("tasks.db_path is not set (AppArgs.resolved() sets it).")
    return SqliteDatabase(cfg.db_path)


def open_task_store(cfg: TasksConfig, settings: Settings) -> TaskStore:
    return TaskStore(open_database(cfg, settings))
