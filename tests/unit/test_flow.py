"""DeskFlow's branches with fake stages: desk, not a desk, generation failure, storage failure, cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from serve_app.config import LocalStorageConfig, load_preset
from serve_app.errors import GenerationFailed, StorageError, TaskCancelled
from serve_app.flow import DeskFlow
from serve_app.items import load_item_vocabulary
from serve_app.protocol import (
    Classification,
    DeskItem,
    GenerationOutput,
    GenerationSpec,
    ItemSearchResult,
    Offer,
    ResolvedGenerate,
    Stage,
)
from serve_app.storage.local import LocalImageStore
from serve_app.tasks import TaskRecord

OFFER = Offer(title="마우스 A", price="9900원", mall="네이버", category3="마우스", link="https://example.com/a")


class FakeStages:
    def __init__(self, *, is_desk: bool = True, generate_error: Exception | None = None) -> None:
        self.is_desk = is_desk
        self.generate_error = generate_error
        self.specs: list[GenerationSpec] = []
        self.searched: list[list[DeskItem]] = []

    async def caption(self, image_png: bytes) -> str:
        return "a desk with a monitor and a keyboard"

    async def classify(self, image_png: bytes) -> Classification:
        return Classification(is_desk=self.is_desk, score=0.9 if self.is_desk else 0.1)

    async def generate(self, spec: GenerationSpec) -> GenerationOutput:
        self.specs.append(spec)
        if self.generate_error:
            raise self.generate_error
        return GenerationOutput(image_png=b"\x89PNG generated", seed=spec.seed, model_id="tiny")

    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]:
        self.searched.append(items)
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
    body = ResolvedGenerate(
        prompt="my desk with a mouse",
        num_inference_steps=4,
        guidance_scale=7.5,
        height=64,
        width=64,
        strength=0.6,
        seed=7,
        **request,
    )
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

    async def progress(stage: Stage) -> None:
        stages_seen.append(stage)

    async def cancelled() -> bool:
        return False

    flow = DeskFlow(load_preset("tiny"), stages, store, load_item_vocabulary())
    return await flow.run(_record(key, **request), progress, cancelled), stages_seen


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
    with pytest.raises(StorageError) as info:
        await _run(tmp_path, FakeStages(), store_cls=BrokenStore)
    assert info.value.error_code == "S3_UPLOAD_FAILED"


async def test_cancel_propagates(tmp_path: Path) -> None:
    with pytest.raises(TaskCancelled):
        await _run(tmp_path, FakeStages(generate_error=TaskCancelled()))


async def test_cancel_between_stages(tmp_path: Path) -> None:
    store = LocalImageStore(LocalStorageConfig(root=str(tmp_path), public_base_url="http://h"))
    stages = FakeStages()

    async def progress(stage: Stage) -> None:
        return None

    async def cancelled() -> bool:
        return True

    flow = DeskFlow(load_preset("tiny"), stages, store, load_item_vocabulary())
    await store.put("u/20260101/p.png", b"p")
    with pytest.raises(TaskCancelled):
        await flow.run(_record("u/20260101/p.png"), progress, cancelled)
    assert stages.specs == [], "nothing generated after a cancel"
    await asyncio.sleep(0)
