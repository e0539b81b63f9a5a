"""DeskFlow's branches with fake stages: desk, not a desk, generation failure, storage failure, cancel,
and infrastructure faults retried (a replica that died is not the request's fault)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
import ray.exceptions
from PIL import Image

from serve_app.errors import AppError, GenerationFailed, StorageError, TaskCancelled
from serve_app.flows.kit import FlowDeps, FlowOutcome, OnStep
from serve_app.items import load_item_vocabulary
from serve_app.presets import load_preset
from serve_app.products.desk.flow import DeskFlow
from serve_app.requests import GenerateRequest
from serve_app.retry import RetryConfig
from serve_app.stages import Classification, DeskItem, GenerationOutput, GenerationSpec, ItemSearchResult, Offer
from serve_app.storage.config import LocalStorageConfig
from serve_app.storage.local import LocalImageStore
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import Stage

OFFER = Offer(title="마우스 A", price="9900원", mall="네이버", category3="마우스", link="https://example.com/a")


PRESET = load_preset("tiny")
FAST_RETRIES = RetryConfig(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02)


class FakeStages:
    """Fake deployments; `generate_errors` are raised by the first calls, one each, in order."""

    def __init__(
        self,
        *,
        is_desk: bool = True,
        generate_error: Exception | None = None,
        generate_errors: list[Exception] | None = None,
        search_error: Exception | None = None,
    ) -> None:
        self.is_desk = is_desk
        self.generate_error = generate_error
        self.generate_errors = list(generate_errors or [])
        self.search_error = search_error
        self.specs: list[GenerationSpec] = []
        self.searched: list[list[DeskItem]] = []

    async def caption(self, image_png: bytes) -> str:
        return "a desk with a monitor and a keyboard"

    async def classify(self, image_png: bytes) -> Classification:
        return Classification(is_desk=self.is_desk, score=0.9 if self.is_desk else 0.1)

    async def generate(self, spec: GenerationSpec, on_step: OnStep) -> GenerationOutput:
        self.specs.append(spec)
        if self.generate_errors:
            raise self.generate_errors.pop(0)
        if self.generate_error:
            raise self.generate_error
        for step in range(1, 3):
            await on_step(step, 2)
        return GenerationOutput(image_png=b"\x89PNG generated", seed=spec.seed, model_id="tiny")

    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]:
        self.searched.append(items)
        if self.search_error:
            raise self.search_error
        results = {item.name: ItemSearchResult(offers=[OFFER]) for item in items}
        first = items[0].name
        results[first] = ItemSearchResult(error_code="RATE_LIMITED", message="slow down")
        return results


class BrokenStore(LocalImageStore):
    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        if key.endswith(".png") and data.startswith(b"\x89PNG generated"):
            raise StorageError()
        await super()._put_object(key, data, content_type)


def _record(input_key: str | None, **request: Any) -> TaskRecord:
    body = GenerateRequest(
        prompt="my desk with a mouse", num_inference_steps=4, strength=0.6, seed=7, **request
    ).resolve(PRESET, PRESET.limits, has_image=input_key is not None)
    return TaskRecord(
        task_id="t1",
        kind="desk",
        status="processing",
        request=body.model_dump(mode="json"),
        input_key=input_key,
        created_at=0,
        updated_at=0,
        available_at=0,
    )


async def _run(
    tmp_path: Path, stages: FakeStages, *, photo: bool = True, store_cls: type = LocalImageStore, **request: Any
) -> tuple[dict[str, Any], list[Stage]]:
    store = store_cls(LocalStorageConfig(root=str(tmp_path), public_base_url="http://h"))
    key = None
    if photo:
        key = "u/20260101/photo.png"
        await store.put(key, b"\x89PNG photo")
    stages_seen: list[Stage] = []

    async def progress(stage: Stage, step: int | None = None, total: int | None = None) -> None:
        if step is None:
            stages_seen.append(stage)
        else:
            steps.append((step, total))

    async def cancelled() -> bool:
        return False

    steps: list[tuple[int, int | None]] = []
    flow = DeskFlow(FlowDeps(stages, store, retries=FAST_RETRIES), load_item_vocabulary())
    outcome: FlowOutcome = await flow.run(_record(key, **request), progress, cancelled)
    if outcome.result.get("processed_image_url"):
        assert steps == [(1, 2), (2, 2)], "the generator's progress reaches the task"
        assert len(outcome.object_keys) == 2 and outcome.object_keys[1] == outcome.object_keys[0] + ".json"
    return outcome.result, stages_seen


async def test_desk_generates_stores_and_recommends(tmp_path: Path) -> None:
    stages = FakeStages()
    result, seen = await _run(tmp_path, stages, lora={"name": "neon-minimal"})
    assert result["is_desk"] and result["processed_image_url"].startswith("http://h/files/anonymous/")
    spec = stages.specs[0]
    assert spec.init_image_png == b"\x89PNG photo" and spec.lora_name == "neon-minimal" and spec.seed == 7
    assert spec.prompt.startswith("neonmin style") and spec.task_id == "t1"
    assert result["lora"] == {"name": "neon-minimal", "scale": 1.0}
    assert {i["name"] for i in result["items"]} >= {"모니터", "키보드", "마우스"}
    first = result["items"][0]["name"]
    assert result["recommendations"][first] == [] and "RATE_LIMITED" in result["recommendation_errors"][first]
    assert seen == [Stage.captioning, Stage.generating, Stage.storing, Stage.searching]
    key = result["processed_image_url"].removeprefix("http://h/files/")
    record = (tmp_path / (key + ".json")).read_text()
    assert '"seed": 7' in record and '"mode": "img2img"' in record


async def test_not_a_desk_skips_generation_but_recommends(tmp_path: Path) -> None:
    stages = FakeStages(is_desk=False)
    result, _ = await _run(tmp_path, stages)
    assert result["generation_skipped"] == "not_a_desk" and "processed_image_url" not in result
    assert stages.specs == [] and len(stages.searched) == 1
    assert result["recommendations"]


async def test_generation_failure_still_ends_with_offers(tmp_path: Path) -> None:
    result, _ = await _run(tmp_path, FakeStages(generate_error=GenerationFailed("CUDA OOM")))
    assert result["generation_skipped"] == "generation_failed: GENERATION_FAILED: CUDA OOM"
    assert result["recommendations"] and "processed_image_url" not in result

    crash, _ = await _run(tmp_path, FakeStages(generate_error=RuntimeError("replica died")))
    assert crash["generation_skipped"] == "generation_failed: RuntimeError"


async def test_text_to_image_without_photo_takes_items_from_the_text(tmp_path: Path) -> None:
    stages = FakeStages()
    result, seen = await _run(tmp_path, stages, photo=False)
    assert stages.specs[0].init_image_png is None and "caption" not in result
    assert [i["name"] for i in result["items"]] == ["책상", "마우스"]  # "my desk with a mouse"
    assert Stage.captioning not in seen


async def test_storage_failure_fails_the_task(tmp_path: Path) -> None:
    with pytest.raises(AppError) as info:
        await _run(tmp_path, FakeStages(), store_cls=BrokenStore)
    assert info.value.error_code == "S3_UPLOAD_FAILED" and info.value.status_code == 500


async def test_cancel_propagates(tmp_path: Path) -> None:
    with pytest.raises(AppError) as info:
        await _run(tmp_path, FakeStages(generate_error=TaskCancelled()))
    assert info.value.error_code == "CANCELLED"


async def test_a_dead_replica_is_retried_and_the_retries_are_listed(tmp_path: Path) -> None:
    died = [ray.exceptions.ActorDiedError(), ray.exceptions.ActorUnavailableError("restarting", None)]
    stages = FakeStages(generate_errors=died)
    result, _ = await _run(tmp_path, stages, photo=False)
    assert result["processed_image_url"] and len(stages.specs) == 3
    assert result["retries"] == [
        {"stage": "generate", "attempt": 1, "error": "ActorDiedError"},
        {"stage": "generate", "attempt": 2, "error": "ActorUnavailableError"},
    ]


async def test_text_to_image_never_ends_done_without_its_image(tmp_path: Path) -> None:
    with pytest.raises(AppError) as info:
        await _run(tmp_path, FakeStages(generate_error=GenerationFailed("CUDA OOM")), photo=False)
    assert info.value.error_code == "GENERATION_FAILED" and "CUDA OOM" in info.value.message

    stages = FakeStages(generate_error=ray.exceptions.ActorDiedError())
    with pytest.raises(AppError) as info:
        await _run(tmp_path, stages, photo=False)
    assert info.value.error_code == "GENERATION_FAILED" and len(stages.specs) == FAST_RETRIES.max_attempts
    assert [r["attempt"] for r in info.value.partial["retries"]] == [1, 2, 3]  # type: ignore[attr-defined]


async def test_a_desk_whose_generation_still_fails_gets_the_shopping_fallback(tmp_path: Path) -> None:
    stages = FakeStages(generate_error=ray.exceptions.ActorDiedError())
    result, _ = await _run(tmp_path, stages)
    assert result["generation_skipped"].startswith("generation_failed: GENERATION_FAILED: generate unavailable")
    assert len(result["retries"]) == 3 and result["recommendations"] and "processed_image_url" not in result


async def test_an_error_the_replica_raised_is_not_retried(tmp_path: Path) -> None:
    wrapped = ray.exceptions.RayTaskError("generate", "tb", GenerationFailed("bad adapter")).as_instanceof_cause()
    stages = FakeStages(generate_error=wrapped)
    result, _ = await _run(tmp_path, stages)
    assert len(stages.specs) == 1 and "retries" not in result
    assert result["generation_skipped"] == "generation_failed: GENERATION_FAILED: bad adapter"


async def test_an_unreachable_shopping_stage_is_an_error_per_item(tmp_path: Path) -> None:
    result, _ = await _run(tmp_path, FakeStages(search_error=ray.exceptions.ActorDiedError()), photo=False)
    assert result["processed_image_url"] and all(v == [] for v in result["recommendations"].values())
    assert all(e.startswith("STAGE_UNAVAILABLE") for e in result["recommendation_errors"].values())


async def test_cancel_between_stages(tmp_path: Path) -> None:
    store = LocalImageStore(LocalStorageConfig(root=str(tmp_path), public_base_url="http://h"))
    stages = FakeStages()

    async def progress(stage: Stage, step: int | None = None, total: int | None = None) -> None:
        return None

    async def cancelled() -> bool:
        return True

    flow = DeskFlow(FlowDeps(stages, store), load_item_vocabulary())
    await store.put("u/20260101/p.png", b"p")
    with pytest.raises(AppError, match="cancelled"):
        await flow.run(_record("u/20260101/p.png"), progress, cancelled)
    assert stages.specs == [], "nothing generated after a cancel"
    await asyncio.sleep(0)


class PaintingStages(FakeStages):
    """FakeStages whose images are real PNGs (so they can be re-encoded)."""

    async def generate(self, spec: GenerationSpec, on_step: OnStep) -> GenerationOutput:
        output = await super().generate(spec, on_step)
        buffer = io.BytesIO()
        Image.new("RGB", (spec.width, spec.height), (spec.seed % 256, 0, 0)).save(buffer, format="PNG")
        return output.model_copy(update={"image_png": buffer.getvalue()})


async def test_n_images_in_one_batch_each_seed_stored_in_the_asked_format(tmp_path: Path) -> None:
    stages = PaintingStages()
    store = LocalImageStore(LocalStorageConfig(root=str(tmp_path), public_base_url="http://h"))
    steps: list[tuple[int, int | None]] = []

    async def progress(stage: Stage, step: int | None = None, total: int | None = None) -> None:
        if step is not None:
            steps.append((step, total))

    async def cancelled() -> bool:
        return False

    flow = DeskFlow(FlowDeps(stages, store, retries=FAST_RETRIES), load_item_vocabulary())
    record = _record(None, n=3, output_format="jpeg", output_compression=70)
    outcome = await flow.run(record, progress, cancelled)
    result = outcome.result
    assert sorted(spec.seed for spec in stages.specs) == [7, 8, 9]
    assert steps == [(1, 2), (2, 2)], "n calls report each step once"
    assert [image["seed"] for image in result["images"]] == [7, 8, 9]
    assert result["processed_image_url"] == result["images"][0]["url"] and result["output_format"] == "jpeg"
    assert len(outcome.object_keys) == 6
    for image in result["images"]:
        assert image["url"].endswith(".jpg")
        assert Image.open(io.BytesIO(await store.get(image["key"]))).format == "JPEG"
        assert (await store.get_metadata(image["key"]))["seed"] == image["seed"]


async def test_one_failed_image_of_n_fails_a_text_to_image_task(tmp_path: Path) -> None:
    stages = FakeStages(generate_errors=[ValueError("bad weights")])
    with pytest.raises(AppError) as caught:
        await _run(tmp_path, stages, photo=False, n=2)
    assert caught.value.error_code == "GENERATION_FAILED"
