"""The app's metrics without Ray: definitions, and what each deployment's hooks record, with which tags.

`ray.serve.metrics` objects construct and record without a cluster (they drop the values), so
one test drives every recording method through them to catch a tag Ray would refuse; the others
swap in a recorder that keeps what was recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

import serve_app.metrics as app_metrics
from serve_app.errors import GenerationFailed, InvalidInput, NotFound, StorageError, TaskCancelled, UpstreamError
from serve_app.flows.kit import FlowOutcome
from serve_app.metrics import (
    METRICS,
    GeneratorMetrics,
    IngressMetrics,
    ModelMetrics,
    ShoppingMetrics,
    TaskMetrics,
    error_code_of,
)
from serve_app.stages import Classification, GenerationOutput, GenerationSpec
from serve_app.storage.base import ImageStore
from serve_app.storage.config import LocalStorageConfig
from serve_app.storage.local import LocalImageStore
from serve_app.tasks import SqliteDatabase, TaskStore
from serve_app.tasks.config import TasksConfig
from serve_app.tasks.records import Stage
from serve_app.tasks.worker import TaskWorker
from tests.support.specs import txt2img
from tests.support.stages import CountedPins, bare_generator, run_batch

RESERVED_TAGS = {"deployment", "replica", "application", "route"}  # Serve adds these itself
PER_REQUEST_TAGS = {"task_id", "user_id", "key_id", "request_id", "prompt", "url"}


class Recorded:
    """Every value recorded, as (metric name, value, tags)."""

    def __init__(self) -> None:
        self.values: list[tuple[str, float, dict[str, str]]] = []
        self.defined: dict[str, tuple[str, tuple[str, ...]]] = {}

    def of(self, name: str) -> list[tuple[float, dict[str, str]]]:
        return [(value, tags) for metric, value, tags in self.values if metric == name]


def _fake_module(recorded: Recorded) -> SimpleNamespace:
    """Stand-ins for ray.serve.metrics' classes that keep what is recorded and check tags as Ray does
    (every tag key given, no other), and that one name is always defined the same way."""

    class FakeMetric:
        kind = ""

        def __init__(
            self, name: str, description: str = "", tag_keys: tuple[str, ...] = (), boundaries: Any = None
        ) -> None:
            assert description, name
            seen = recorded.defined.setdefault(name, (self.kind, tuple(tag_keys)))
            assert seen == (self.kind, tuple(tag_keys)), f"{name} defined twice, differently"
            self.name, self.tag_keys = name, tuple(tag_keys)

        def _record(self, value: float, tags: dict[str, str] | None) -> None:
            tags = dict(tags or {})
            assert set(tags) == set(self.tag_keys), (self.name, tags)
            assert all(isinstance(v, str) for v in tags.values()), tags
            recorded.values.append((self.name, float(value), tags))

    class Counter(FakeMetric):
        kind = "counter"

        def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
            assert value > 0
            self._record(value, tags)

    class Gauge(FakeMetric):
        kind = "gauge"

        def set(self, value: float, tags: dict[str, str] | None = None) -> None:
            self._record(value, tags)

    class Histogram(FakeMetric):
        kind = "histogram"

        def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
            assert value >= 0
            self._record(value, tags)

    return SimpleNamespace(Counter=Counter, Gauge=Gauge, Histogram=Histogram)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    rec = Recorded()
    monkeypatch.setattr(app_metrics, "metrics", _fake_module(rec))
    yield rec


# --- definitions -------------------------------------------------------------------------------


def test_every_metric_is_named_described_and_bounded() -> None:
    names = [spec.name for spec in METRICS]
    assert len(names) == len(set(names))
    for spec in METRICS:
        assert re.fullmatch(r"imagegen_[a-z0-9_]+", spec.name), spec.name
        assert not spec.name.endswith("_total"), "Prometheus adds _total to counters"
        assert spec.description.strip(), spec.name
        assert not set(spec.tag_keys) & (RESERVED_TAGS | PER_REQUEST_TAGS), spec
        if spec.type == "histogram":
            assert spec.boundaries and list(spec.boundaries) == sorted(set(spec.boundaries)), spec
            assert spec.boundaries[0] > 0
        else:
            assert not spec.boundaries, spec
        if spec.name.endswith("_seconds"):
            assert spec.type == "histogram", spec


def test_recording_through_ray_metrics_without_a_cluster() -> None:
    """Ray validates tags when a value is recorded: every method, through the real classes."""
    tasks = TaskMetrics()
    tasks.finished("done", None, 1.0)
    tasks.finished("failed", "CANCELLED", None)
    tasks.expired(2, 3)
    tasks.stage_timings("desk", {"timings": {"generate": 0.5}})
    tasks.claimed("desk", 1, 0.2)
    tasks.queue_depth({"queued": 2, "processing": 1})
    tasks.webhook_failed("HTTP_503")
    tasks.storage_failed("S3_UPLOAD_FAILED")
    ingress = IngressMetrics()
    ingress.submitted("desk")
    ingress.rejected(422, "INVALID_INPUT")
    ingress.storage_failed("STORAGE_WRITE_FAILED")
    model = ModelMetrics("captioner")
    with model.batch_call(3):
        pass
    model.failed(RuntimeError("x"), 2)
    generator = GeneratorMetrics()
    with generator.pipeline_call("img2img", 2):
        pass
    generator.lora_hit("cozy-wood")
    generator.lora_loaded("cozy-wood", 0.07, ok=True)
    generator.lora_loaded("cozy-wood", 0.07, ok=False)
    generator.lora_evicted("cozy-wood")
    ShoppingMetrics().provider_error("naver", "RATE_LIMITED")


def test_one_name_is_defined_the_same_way_everywhere(recorded: Recorded) -> None:
    TaskMetrics(), IngressMetrics(), ModelMetrics("captioner"), GeneratorMetrics(), ShoppingMetrics()
    assert set(recorded.defined) == {spec.name for spec in METRICS}
    for spec in METRICS:
        assert recorded.defined[spec.name] == (spec.type, spec.tag_keys)


def test_error_codes_are_bounded() -> None:
    assert error_code_of(UpstreamError(error_code="RATE_LIMITED")) == "RATE_LIMITED"
    assert error_code_of(RuntimeError("a message with ids 123")) == "RuntimeError"


# --- the task runner's ---------------------------------------------------------------------------


def test_task_metrics_tags(recorded: Recorded) -> None:
    metrics = TaskMetrics()
    metrics.stage_timings(
        "desk",
        {"timings": {"caption_and_classify": 0.2, "generate": 1.5, "store": 0.01, "search": 0.3, "odd": "x"}},
    )
    metrics.stage_timings("image", {"caption": "no timings"})
    metrics.stage_timings("image", None)
    assert sorted((tags["stage"], value) for value, tags in recorded.of("imagegen_stage_duration_seconds")) == [
        ("caption_and_classify", 0.2),
        ("generate", 1.5),
        ("search", 0.3),
        ("store", 0.01),
    ]
    assert {tags["kind"] for _, tags in recorded.of("imagegen_stage_duration_seconds")} == {"desk"}

    metrics.claimed("desk", 1, 0.4)
    metrics.claimed("image", 2, 12.0)
    metrics.claimed("desk", 1, -0.01)  # another node's clock: never a negative wait
    assert recorded.of("imagegen_queue_wait_seconds") == [
        (0.4, {"kind": "desk", "attempt": "first"}),
        (12.0, {"kind": "image", "attempt": "retry"}),
        (0.0, {"kind": "desk", "attempt": "first"}),
    ]

    metrics.queue_depth({"queued": 3})
    assert recorded.of("imagegen_queue_depth") == [(3, {"status": "queued"}), (0, {"status": "processing"})]

    metrics.webhook_failed("HTTP_503")
    metrics.webhook_failed(None)
    metrics.storage_failed("S3_UPLOAD_FAILED")
    assert recorded.of("imagegen_backend_errors") == [
        (1, {"backend": "webhook", "error_code": "HTTP_503"}),
        (1, {"backend": "webhook", "error_code": "UNKNOWN"}),
        (1, {"backend": "storage", "error_code": "S3_UPLOAD_FAILED"}),
    ]


async def test_the_runner_records_queue_wait_and_stage_timings(recorded: Recorded, tmp_path: Path) -> None:
    clock = SimpleNamespace(now=1_000.0)
    store = TaskStore(SqliteDatabase(tmp_path / "tasks.db"), clock=lambda: clock.now)
    store.create("t1", kind="desk", request={"prompt": "a desk"})
    clock.now += 2.5
    record = store.queue.claim("t1", "w", 30)
    assert record is not None

    class Flow:
        async def run(self, record: Any, progress: Any, cancelled: Any) -> FlowOutcome:
            await progress(Stage.generating)
            return FlowOutcome(result={"timings": {"generate": 0.75, "search": 0.1}})

    images = LocalImageStore(LocalStorageConfig(root=str(tmp_path / "images")))
    worker = TaskWorker(tasks=store, images=images, flows={"desk": Flow()}, cfg=TasksConfig())
    assert await worker.run_claimed(record) == "done"

    assert recorded.of("imagegen_queue_wait_seconds") == [(2.5, {"kind": "desk", "attempt": "first"})]
    assert sorted((tags["stage"], value) for value, tags in recorded.of("imagegen_stage_duration_seconds")) == [
        ("generate", 0.75),
        ("search", 0.1),
    ]
    assert [tags for _, tags in recorded.of("imagegen_tasks_finished")] == [{"status": "done", "error_code": ""}]
    store.close()


def test_active_counts_feed_the_queue_depth_gauge(recorded: Recorded, tmp_path: Path) -> None:
    store = TaskStore(SqliteDatabase(tmp_path / "tasks.db"))
    for task_id in ("a", "b", "c"):
        store.create(task_id, kind="desk", request={"prompt": "a desk"})
    store.queue.claim("a", "w", 30)
    TaskMetrics().queue_depth(store.active_counts())
    assert recorded.of("imagegen_queue_depth") == [(2, {"status": "queued"}), (1, {"status": "processing"})]
    store.close()


# --- model deployments ---------------------------------------------------------------------------


def test_batch_call_records_size_time_and_backend_failures(recorded: Recorded) -> None:
    metrics = ModelMetrics("classifier")
    with metrics.batch_call(3):
        pass
    with pytest.raises(RuntimeError), metrics.batch_call(2):
        raise RuntimeError("model crashed")
    for not_the_backends_fault in (TaskCancelled(), InvalidInput("bad input")):
        with pytest.raises(type(not_the_backends_fault)), metrics.batch_call(1):
            raise not_the_backends_fault
    assert [value for value, _ in recorded.of("imagegen_batch_size")] == [3, 2, 1, 1]
    assert {tags["model"] for _, tags in recorded.of("imagegen_batch_size")} == {"classifier"}
    assert len(recorded.of("imagegen_model_call_seconds")) == 1, "only a call that finished is timed"
    assert recorded.of("imagegen_backend_errors") == [(2, {"backend": "classifier", "error_code": "RuntimeError"})]


async def test_captioner_and_classifier_batches_are_recorded(recorded: Recorded) -> None:
    from deployments.captioner import Captioner
    from deployments.desk_classifier import DeskClassifier

    class Engine:
        def caption(self, images: list[Image.Image], max_new_tokens: int) -> list[str]:
            return ["a desk"] * len(images)

        def classify(self, images: list[Image.Image]) -> list[Classification]:
            raise RuntimeError("out of memory")

    images = [Image.new("RGB", (8, 8))] * 3
    captioner = object.__new__(Captioner.func_or_class)
    captioner.engine, captioner.max_new_tokens, captioner.metrics = Engine(), 5, ModelMetrics("captioner")
    assert await Captioner.func_or_class._caption_batch.__wrapped__(captioner, images) == ["a desk"] * 3
    classifier = object.__new__(DeskClassifier.func_or_class)
    classifier.engine, classifier.metrics = Engine(), ModelMetrics("classifier")
    with pytest.raises(RuntimeError):
        await DeskClassifier.func_or_class._classify_batch.__wrapped__(classifier, images[:2])

    assert recorded.of("imagegen_batch_size") == [(3, {"model": "captioner"}), (2, {"model": "classifier"})]
    assert [tags for _, tags in recorded.of("imagegen_model_call_seconds")] == [{"model": "captioner"}]
    assert recorded.of("imagegen_backend_errors") == [(2, {"backend": "classifier", "error_code": "RuntimeError"})]


def _spec(seed: int, **kw: Any) -> GenerationSpec:
    return txt2img(seed=seed, num_inference_steps=2, **kw)


async def test_generator_records_batches_pipeline_calls_lora_cache_and_failures(recorded: Recorded) -> None:
    from deployments.generator import LoadedAdapter

    class Engine(CountedPins):
        def __init__(self) -> None:
            super().__init__()
            self.unloaded: list[str] = []

        def load_adapter(self, spec: Any) -> None:
            if spec.name == "broken":
                raise GenerationFailed("bad weights")

        def unload_adapter(self, name: str) -> None:
            self.unloaded.append(name)

        def generate(self, specs: list[GenerationSpec], on_step: Any, should_stop: Any) -> list[GenerationOutput]:
            if specs[0].prompt == "boom":
                raise RuntimeError("kaput")
            if specs[0].prompt == "cancel":
                raise TaskCancelled()
            size = len(specs)
            return [GenerationOutput(image_png=b"png", seed=s.seed, model_id="fake", batch_size=size) for s in specs]

    gen = bare_generator(Engine(), adapters={name: SimpleNamespace(name=name) for name in ("cozy", "broken")})
    resident: dict[str, LoadedAdapter] = {}

    async def get_adapter(name: str) -> LoadedAdapter:  # Serve's multiplexer: load on a miss only
        if name not in resident:
            resident[name] = await gen._load_adapter(name)
        return resident[name]

    gen.get_adapter = get_adapter
    await run_batch(gen, [_spec(1, lora_name="cozy"), _spec(2, lora_name="cozy"), _spec(3, prompt="boom", height=32)])
    second = [
        _spec(4, lora_name="cozy", init_image_png=b"png", strength=0.5),
        _spec(5, lora_name="broken"),
        _spec(6, prompt="cancel", width=32),
        _spec(7, lora_name="unknown"),
    ]
    results = await run_batch(gen, second)
    assert [type(r).__name__ for r in results] == [
        "GenerationOutput",
        "GenerationFailed",
        "TaskCancelled",
        "InvalidInput",
    ]

    assert [value for value, _ in recorded.of("imagegen_batch_size")] == [3, 4]
    # Pipeline calls: cozy txt2img x2, the failing 32-px group, cozy img2img, the cancelled group.
    assert [(value, tags["mode"]) for value, tags in recorded.of("imagegen_pipeline_batch_size")] == [
        (2, "txt2img"),
        (1, "txt2img"),
        (1, "img2img"),
        (1, "txt2img"),
    ]
    assert len(recorded.of("imagegen_model_call_seconds")) == 2, "the calls that finished"
    assert recorded.of("imagegen_lora_loads") == [
        (1, {"lora": "cozy", "result": "ok"}),
        (1, {"lora": "broken", "result": "error"}),
    ]
    assert [tags for _, tags in recorded.of("imagegen_lora_load_seconds")] == [{"lora": "cozy"}]
    assert recorded.of("imagegen_lora_cache_hits") == [(1, {"lora": "cozy"})]
    assert recorded.of("imagegen_backend_errors") == [
        (1, {"backend": "generator", "error_code": "GENERATION_FAILED"}),  # boom
        (1, {"backend": "generator", "error_code": "GENERATION_FAILED"}),  # the broken adapter
    ], "cancelled and unknown-adapter requests are not the generator's failures"

    resident["cozy"].__del__()  # what Serve's multiplexer calls on LRU eviction
    resident.pop("cozy").__del__()
    assert gen.engine.unloaded == ["cozy"]
    assert recorded.of("imagegen_lora_evictions") == [(1, {"lora": "cozy"})]


# --- shopping and storage ------------------------------------------------------------------------


async def test_shopping_provider_errors_are_counted_by_provider(recorded: Recorded) -> None:
    from serve_app.shopping.config import ShoppingConfig
    from serve_app.shopping.service import ShoppingService
    from serve_app.stages import DeskItem

    class Failing:
        def __init__(self, name: str, error: Exception) -> None:
            self.name, self.error = name, error

        async def search(self, item: DeskItem, limit: int) -> list[Any]:
            raise self.error

    metrics = ShoppingMetrics()
    service = ShoppingService(
        ShoppingConfig(),
        Failing("naver", UpstreamError(error_code="RATE_LIMITED")),  # type: ignore[arg-type]
        fallback=Failing("catalog", RuntimeError("x")),  # type: ignore[arg-type]
    )
    service.on_error = metrics.provider_error
    mouse = DeskItem(name="마우스", english="mouse", query="무선 마우스")
    result = await service.search([mouse])
    assert result["마우스"].error_code == "RATE_LIMITED"
    assert recorded.of("imagegen_backend_errors") == [
        (1, {"backend": "naver", "error_code": "RATE_LIMITED"}),
        (1, {"backend": "catalog", "error_code": "SHOPPING_FAILED"}),
    ]


class FlakyStore(ImageStore):
    """Writes fail; reads of a missing key are NotFound (the caller's problem, not the store's)."""

    async def delete_older_than(self, cutoff: float) -> int:
        return 0

    async def _delete_objects(self, keys: list[str]) -> None:
        raise StorageError(error_code="STORAGE_DELETE_FAILED")

    def url_for(self, key: str) -> str:
        return key

    async def check(self) -> None:
        return None

    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        raise StorageError()

    async def _get_object(self, key: str) -> bytes:
        raise NotFound("no such image")


async def test_storage_errors_reach_the_owners_hook(recorded: Recorded) -> None:
    store = FlakyStore()
    with pytest.raises(StorageError):
        await store.put("u/1.png", b"x")  # nobody listens: nothing recorded, the error still raised
    store.on_error = TaskMetrics().storage_failed
    with pytest.raises(StorageError):
        await store.put("u/1.png", b"x")
    with pytest.raises(StorageError):
        await store.delete(["u/1.png"])
    with pytest.raises(NotFound):
        await store.get("u/1.png")
    with pytest.raises(InvalidInput):
        await store.put("../escape.png", b"x")
    assert recorded.of("imagegen_backend_errors") == [
        (1, {"backend": "storage", "error_code": "S3_UPLOAD_FAILED"}),
        (1, {"backend": "storage", "error_code": "STORAGE_DELETE_FAILED"}),
    ]


async def test_webhook_attempts_carry_a_bounded_error_code() -> None:
    from serve_app.net import FetchPolicy
    from serve_app.webhooks import WebhookConfig, WebhookSender
    from testbed.harness import free_port

    policy = FetchPolicy(allow_hosts=["127.0.0.1"], timeout_s=2.0)
    sender = WebhookSender(WebhookConfig(timeout_s=2.0), "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", policy)
    refused = await sender.attempt(f"http://127.0.0.1:{free_port()}/hook", "msg_1", {"a": 1})
    assert not refused.delivered and refused.error_code and refused.error_code.isidentifier()
    unsafe = await sender.attempt("http://169.254.169.254/latest", "msg_2", {"a": 1})
    assert not unsafe.delivered and unsafe.error_code == "UNSAFE_URL"
