"""Application metrics, exported to Prometheus by Ray's metrics agent (ray.serve.metrics).

Ray Serve already exports per-deployment request counts, latencies, queue lengths and replica
counts; these add what only the app knows: tasks by outcome, task duration, rejected submits.
"""

from __future__ import annotations

from ray.serve import metrics

_DURATION_BOUNDARIES = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600]


class TaskMetrics:
    def __init__(self) -> None:
        self._finished = metrics.Counter(
            "imagegen_tasks_finished",
            description="Tasks that reached an end state, by status and error code.",
            tag_keys=("status", "error_code"),
        )
        self._duration = metrics.Histogram(
            "imagegen_task_duration_seconds",
            description="Seconds from a worker claiming a task to its end state.",
            boundaries=_DURATION_BOUNDARIES,
            tag_keys=("status",),
        )

        self._expired = metrics.Counter(
            "imagegen_retention_deleted",
            description="Rows and stored objects deleted by the retention sweep, by kind (task, object).",
            tag_keys=("kind",),
        )

    def expired(self, tasks: int, objects: int) -> None:
        if tasks:
            self._expired.inc(tasks, tags={"kind": "task"})
        if objects:
            self._expired.inc(objects, tags={"kind": "object"})

    def finished(self, status: str, error_code: str | None, seconds: float | None) -> None:
        self._finished.inc(tags={"status": status, "error_code": error_code or ""})
        if seconds is not None:
            self._duration.observe(seconds, tags={"status": status})


class IngressMetrics:
    def __init__(self) -> None:
        self._submitted = metrics.Counter(
            "imagegen_tasks_submitted",
            description="Accepted POST /v1/generate submits (202).",
            tag_keys=("kind",),
        )
        self._rejected = metrics.Counter(
            "imagegen_requests_rejected",
            description="Requests answered with an error, by HTTP status and error code.",
            tag_keys=("status", "error_code"),
        )

    def submitted(self, kind: str) -> None:
        self._submitted.inc(tags={"kind": kind})

    def rejected(self, status: int, error_code: str) -> None:
        self._rejected.inc(tags={"status": str(status), "error_code": error_code})
