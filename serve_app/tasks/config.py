"""The durable task store and its retention (`tasks:`, `retention:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TasksConfig(BaseModel):
    store: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="sqlite: one file on this machine (the embedded default). postgres: one database shared "
        "by every node of a cluster, at the DSN in the IMAGEGEN_TASKS_DSN environment variable.",
    )
    db_path: str | None = Field(default=None, description="SQLite file; <data_dir>/tasks.db when None.")
    pool_max_size: int = Field(default=8, ge=1, le=100, description="PostgreSQL connections per replica.")
    lease_s: float = Field(default=30.0, gt=0, description="A worker renews its lease this often x3.")
    max_attempts: int = Field(default=2, ge=1, description="Runs before a lost task is failed.")
    sweep_interval_s: float = Field(default=2.0, gt=0, description="Reaper period.")
    dispatch_grace_s: float = Field(default=10.0, gt=0, description="Queued this long: the reaper runs it.")
    max_active: int = Field(default=64, ge=1, description="queued+processing above this: 503.")
    retry_after_s: int = Field(default=5, ge=1)
    progress_interval_s: float = Field(
        default=0.5,
        ge=0,
        description="A running task's diffusion steps are written at most this often (its stage changes and last "
        "step always): each write is a store transaction and a pushed event.",
    )


class RetentionConfig(BaseModel):
    """How long finished tasks and what they stored (input photo, images, .json records) are kept."""

    ttl_s: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="A finished task, its photo and its images are deleted this long after it ended.",
    )
    webhook_grace_s: float = Field(
        default=24 * 3600,
        ge=0,
        description="A finished task still owing its webhook (a receiver down, a delivery failing or replayed) is "
        "kept at most this much past ttl_s; then it expires, its delivery abandoned (and logged).",
    )
    sweep_interval_s: float = Field(default=600.0, gt=0, description="How often a runner looks for expired tasks.")
    batch_size: int = Field(default=200, ge=1, description="Tasks deleted per sweep pass.")
    sweep_orphans: bool = Field(
        default=True,
        description="Also delete stored objects older than ttl_s that no task row names (a task that "
        "crashed between storing and recording its image).",
    )
