"""What clients see of a task (poll responses, webhook bodies) and request fingerprints."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from serve_app.protocol import Progress, Stage, TaskResult, TaskStatus
from serve_app.tasks import TaskRecord
from serve_app.tasks.store import QueueStats


def task_view(record: TaskRecord, stats: QueueStats | None = None) -> TaskResult:
    """The client's view: status, progress (and queue position, ETA) while running, result fields when done."""
    body: dict[str, Any] = {
        "task_id": record.task_id,
        "status": record.status,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "attempts": record.attempts,
        "initial_image_url": record.initial_image_url,
    }
    if stats is not None:
        body.update(queue_position=stats.position, eta_s=stats.eta_s)
    if not record.finished:
        body["progress"] = record.progress or Progress(stage=Stage.queued)
    if record.result:
        body.update(record.result)
    if record.status == TaskStatus.failed:
        body["error_code"] = record.error_code
        body["message"] = record.message
    return TaskResult.model_validate(body)


def request_fingerprint(payload: dict[str, Any], extra: bytes = b"") -> str:
    """Stable hash of a request body (and an uploaded file) for Idempotency-Key checks."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode())
    digest.update(hashlib.sha256(extra).digest())
    return digest.hexdigest()
