"""Application metrics, exported to Prometheus by Ray's metrics agent (ray.serve.metrics).

Ray Serve already exports per-deployment request counts, latencies, queue lengths and replica
counts; these add what only the app knows. Every metric is defined here, one small class per
deployment that records it. Names start with `imagegen_`; Prometheus sees them with Ray's `ray_`
prefix (`ray_imagegen_...`), counters with a `_total` suffix, histograms as `_bucket`, `_count`
and `_sum`, each with Serve's `deployment`, `replica` and `application` labels added. Ray 2.60
rebuilds a histogram's `_sum` from its buckets' midpoints, so means are approximate.

Tags are bounded: stage, model, backend and LoRA names come from code or the preset's registry,
error codes from the exception tree (or an exception's class name), never task or user ids.
Recording is an in-process call: nothing here queries the task store or does I/O.

`METRICS` lists every metric (name, type, tags): the dashboard test checks the Grafana dashboard
against it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from ray.serve import metrics

from serve_app.errors import AppError, TaskCancelled

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    """One metric as defined here (Ray adds `ray_` and the Prometheus suffixes on export)."""

    name: str
    type: MetricType
    description: str
    tag_keys: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


_DURATION_BOUNDARIES = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Stage and model calls range from a few ms (tiny models, local storage) to minutes (SDXL, 50 steps).
_SECONDS_BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Ray rebuilds a histogram's observations from its buckets' midpoints (so `_sum` is approximate):
# bounds halfway between integers make every size up to 16 its own bucket, midpoint and exact sum.
_BATCH_BOUNDARIES = (*(size + 0.5 for size in range(17)), 24.5, 32.5, 48.5, 64.5)

TASKS_SUBMITTED = MetricDef(
    "imagegen_tasks_submitted", "counter", "Accepted POST /v1/generate submits (202).", ("kind",)
)
VARIANT_TASKS = MetricDef(
    "imagegen_variant_tasks",
    "counter",
    "Finished tasks of an A/B test (backends.experiments), by product, variant and status.",
    ("product", "variant", "status"),
)
REQUESTS_REJECTED = MetricDef(
    "imagegen_requests_rejected",
    "counter",
    "Requests answered with an error, by HTTP status and error code.",
    ("status", "error_code"),
)
TASKS_FINISHED = MetricDef(
    "imagegen_tasks_finished",
    "counter",
    "Tasks that reached an end state, by status and error code.",
    ("status", "error_code"),
)
TASK_DURATION = MetricDef(
    "imagegen_task_duration_seconds",
    "histogram",
    "Seconds from a worker claiming a task to its end state.",
    ("status",),
    _DURATION_BOUNDARIES,
)
RETENTION_DELETED = MetricDef(
    "imagegen_retention_deleted",
    "counter",
    "Rows and stored objects deleted by the retention sweep, by kind (task, object).",
    ("kind",),
)
STAGE_DURATION = MetricDef(
    "imagegen_stage_duration_seconds",
    "histogram",
    "Seconds per flow stage of a task that ended done (caption_and_classify, generate, store, search), "
    "from the result's timings, by task kind and stage.",
    ("kind", "stage"),
    _SECONDS_BOUNDARIES,
)
QUEUE_WAIT = MetricDef(
    "imagegen_queue_wait_seconds",
    "histogram",
    "Seconds from a task's submit to a worker's claim of it, by task kind and attempt (first, retry: "
    "a requeued task's wait counts from its submit).",
    ("kind", "attempt"),
    _DURATION_BOUNDARIES,
)
QUEUE_DEPTH = MetricDef(
    "imagegen_queue_depth",
    "gauge",
    "Tasks in the task store by status (queued, processing), refreshed by each TaskRunner replica's "
    "maintenance loop: every replica reports the same store, so take max over replicas, not sum.",
    ("status",),
)
BATCH_SIZE = MetricDef(
    "imagegen_batch_size",
    "histogram",
    "Requests per @serve.batch call, by model (captioner, classifier, generator).",
    ("model",),
    _BATCH_BOUNDARIES,
)
MODEL_CALL = MetricDef(
    "imagegen_model_call_seconds",
    "histogram",
    "Seconds per model call inside a model deployment, by model: a captioner or classifier batch, "
    "a generator pipeline call (one settings group of a batch).",
    ("model",),
    _SECONDS_BOUNDARIES,
)
PIPELINE_BATCH_SIZE = MetricDef(
    "imagegen_pipeline_batch_size",
    "histogram",
    "Images per Generator pipeline call (a batch is split by settings and LoRA), by mode (txt2img, img2img).",
    ("mode",),
    _BATCH_BOUNDARIES,
)
LORA_HITS = MetricDef(
    "imagegen_lora_cache_hits",
    "counter",
    "Generator pipeline calls whose LoRA adapter was already resident in the replica.",
    ("lora",),
)
LORA_LOADS = MetricDef(
    "imagegen_lora_loads",
    "counter",
    "LoRA adapters loaded into a Generator replica (cache misses), by result (ok, error).",
    ("lora", "result"),
)
LORA_LOAD_SECONDS = MetricDef(
    "imagegen_lora_load_seconds",
    "histogram",
    "Seconds to load a LoRA adapter into a Generator replica.",
    ("lora",),
    _SECONDS_BOUNDARIES,
)
LORA_EVICTIONS = MetricDef(
    "imagegen_lora_evictions",
    "counter",
    "LoRA adapters unloaded from a Generator replica (LRU eviction, or the replica going away).",
    ("lora",),
)
BACKEND_ERRORS = MetricDef(
    "imagegen_backend_errors",
    "counter",
    "Failed calls to a backend, by backend (generator, captioner, classifier, the shopping provider's "
    "name, webhook, storage) and error code.",
    ("backend", "error_code"),
)

METRICS: tuple[MetricDef, ...] = (
    TASKS_SUBMITTED,
    REQUESTS_REJECTED,
    TASKS_FINISHED,
    VARIANT_TASKS,
    TASK_DURATION,
    RETENTION_DELETED,
    STAGE_DURATION,
    QUEUE_WAIT,
    QUEUE_DEPTH,
    BATCH_SIZE,
    MODEL_CALL,
    PIPELINE_BATCH_SIZE,
    LORA_HITS,
    LORA_LOADS,
    LORA_LOAD_SECONDS,
    LORA_EVICTIONS,
    BACKEND_ERRORS,
)


def _counter(spec: MetricDef) -> metrics.Counter:
    return metrics.Counter(spec.name, description=spec.description, tag_keys=spec.tag_keys)


def _gauge(spec: MetricDef) -> metrics.Gauge:
    return metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.tag_keys)


def _histogram(spec: MetricDef) -> metrics.Histogram:
    return metrics.Histogram(
        spec.name, description=spec.description, boundaries=list(spec.boundaries), tag_keys=spec.tag_keys
    )


def error_code_of(exc: BaseException) -> str:
    """A bounded error code for a tag: an AppError's code, else the exception's class name."""
    return exc.error_code if isinstance(exc, AppError) else type(exc).__name__


def is_backend_failure(exc: BaseException) -> bool:
    """Whether an error is the backend's fault: not a cancellation, not a client's bad input (4xx)."""
    if isinstance(exc, TaskCancelled):
        return False
    return not isinstance(exc, AppError) or exc.status_code >= 500


class BackendErrors:
    """imagegen_backend_errors: one definition for every deployment that calls a backend."""

    def __init__(self) -> None:
        self._errors = _counter(BACKEND_ERRORS)

    def record(self, backend: str, error_code: str, count: int = 1) -> None:
        if count > 0:
            self._errors.inc(count, tags={"backend": backend, "error_code": error_code or "UNKNOWN"})


class TaskMetrics:
    """The TaskRunner's: task outcomes, stage latencies, queue wait and depth, webhook and storage errors."""

    def __init__(self) -> None:
        self._finished = _counter(TASKS_FINISHED)
        self._variants = _counter(VARIANT_TASKS)
        self._duration = _histogram(TASK_DURATION)
        self._expired = _counter(RETENTION_DELETED)
        self._stages = _histogram(STAGE_DURATION)
        self._wait = _histogram(QUEUE_WAIT)
        self._depth = _gauge(QUEUE_DEPTH)
        self.errors = BackendErrors()

    def expired(self, tasks: int, objects: int) -> None:
        if tasks:
            self._expired.inc(tasks, tags={"kind": "task"})
        if objects:
            self._expired.inc(objects, tags={"kind": "object"})

    def finished(self, status: str, error_code: str | None, seconds: float | None) -> None:
        self._finished.inc(tags={"status": status, "error_code": error_code or ""})
        if seconds is not None:
            self._duration.observe(seconds, tags={"status": status})

    def variant_finished(self, kind: str, result: Mapping[str, object] | None, status: str) -> None:
        """Count a finished task of an A/B test under its variant (none: not in a test)."""
        variant = result.get("variant") if result else None
        if isinstance(variant, str):
            self._variants.inc(tags={"product": kind, "variant": variant, "status": status})

    def stage_timings(self, kind: str, result: Mapping[str, object] | None) -> None:
        """Observe a finished task's `result["timings"]` ({stage: seconds}, as the flows time them)."""
        timings = result.get("timings") if result else None
        if not isinstance(timings, Mapping):
            return
        for stage, seconds in timings.items():
            if isinstance(stage, str) and isinstance(seconds, int | float) and not isinstance(seconds, bool):
                self._stages.observe(max(0.0, float(seconds)), tags={"kind": kind, "stage": stage})

    def claimed(self, kind: str, attempt: int, wait_s: float) -> None:
        """A worker claimed a task `wait_s` seconds after its submit (`attempt` 1 is the first claim)."""
        tags = {"kind": kind, "attempt": "first" if attempt <= 1 else "retry"}
        self._wait.observe(max(0.0, wait_s), tags=tags)

    def queue_depth(self, counts: Mapping[str, int]) -> None:
        """The store's active tasks by status (queued, processing); a missing status counts 0."""
        for status in ("queued", "processing"):
            self._depth.set(counts.get(status, 0), tags={"status": status})

    def webhook_failed(self, error_code: str | None) -> None:
        """One webhook attempt that did not deliver (HTTP_<status>, UNSAFE_URL, ConnectTimeout, ...)."""
        self.errors.record("webhook", error_code or "UNKNOWN")

    def storage_failed(self, error_code: str) -> None:
        self.errors.record("storage", error_code)


class IngressMetrics:
    """The Ingress's: accepted submits, rejected requests, storage errors of uploads."""

    def __init__(self) -> None:
        self._submitted = _counter(TASKS_SUBMITTED)
        self._rejected = _counter(REQUESTS_REJECTED)
        self.errors = BackendErrors()

    def submitted(self, kind: str) -> None:
        self._submitted.inc(tags={"kind": kind})

    def rejected(self, status: int, error_code: str) -> None:
        self._rejected.inc(tags={"status": str(status), "error_code": error_code})

    def storage_failed(self, error_code: str) -> None:
        self.errors.record("storage", error_code)


class ModelMetrics:
    """A batched model deployment's: batch sizes, seconds per model call, failed calls."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._tags = {"model": model}
        self._batch = _histogram(BATCH_SIZE)
        self._call = _histogram(MODEL_CALL)
        self.errors = BackendErrors()

    def batch(self, size: int) -> None:
        """One @serve.batch call of `size` requests."""
        self._batch.observe(size, tags=self._tags)

    def model_call(self, seconds: float) -> None:
        self._call.observe(seconds, tags=self._tags)

    def failed(self, exc: BaseException, count: int = 1) -> None:
        """`count` requests ended with `exc`; counted when it is the backend's fault."""
        if is_backend_failure(exc):
            self.errors.record(self.model, error_code_of(exc), count)

    @contextmanager
    def batch_call(self, size: int) -> Iterator[None]:
        """Around a batch that is one model call: its size, its seconds, or its failure."""
        self.batch(size)
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.failed(exc, size)
            raise
        self.model_call(time.perf_counter() - started)


class GeneratorMetrics(ModelMetrics):
    """The Generator's: ModelMetrics plus pipeline-call sizes and the LoRA cache."""

    def __init__(self) -> None:
        super().__init__("generator")
        self._pipeline = _histogram(PIPELINE_BATCH_SIZE)
        self._hits = _counter(LORA_HITS)
        self._loads = _counter(LORA_LOADS)
        self._load_seconds = _histogram(LORA_LOAD_SECONDS)
        self._evictions = _counter(LORA_EVICTIONS)

    @contextmanager
    def pipeline_call(self, mode: str, size: int) -> Iterator[None]:
        """Around one pipeline call: its size and, when it succeeds, its seconds (the batch that
        runs it counts a failure, adapter loading included)."""
        self._pipeline.observe(size, tags={"mode": mode})
        started = time.perf_counter()
        yield
        self.model_call(time.perf_counter() - started)

    def pipeline_step(self, modes: Mapping[str, int], seconds: float) -> None:
        """One denoising step of step-level batching: the images in its UNet call, by mode."""
        self.batch(sum(modes.values()))
        for mode, size in modes.items():
            self._pipeline.observe(size, tags={"mode": mode})
        self.model_call(seconds)

    def lora_hit(self, lora: str) -> None:
        self._hits.inc(tags={"lora": lora})

    def lora_loaded(self, lora: str, seconds: float, ok: bool) -> None:
        self._loads.inc(tags={"lora": lora, "result": "ok" if ok else "error"})
        if ok:
            self._load_seconds.observe(seconds, tags={"lora": lora})

    def lora_evicted(self, lora: str) -> None:
        self._evictions.inc(tags={"lora": lora})


class ShoppingMetrics:
    """The ShoppingSearch's: provider errors, by the provider's name."""

    def __init__(self) -> None:
        self.errors = BackendErrors()

    def provider_error(self, provider: str, error_code: str) -> None:
        self.errors.record(provider, error_code)
