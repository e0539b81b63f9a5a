"""The desk makeover flow (SPEC.md section 1) as a plain class over four stage calls.

The task runner deployment gives it `DeploymentHandle`-backed stages; unit tests give it fakes.
Outcomes:
- done with an image: a desk (or no photo: text-to-image) and generation succeeded;
- done without an image (`generation_skipped` says why): not a desk, or generation failed;
  the shopping part always comes back (the seed's fallback branch);
- failed: cancelled, or the generated image could not be stored (S3_UPLOAD_FAILED).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from serve_app.config import Preset
from serve_app.errors import AppError, TaskCancelled
from serve_app.items import ItemVocabulary, extract_items, fallback_items
from serve_app.prompts import build_prompt
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
from serve_app.storage.base import ImageStore, make_key
from serve_app.tasks import TaskRecord

logger = logging.getLogger(__name__)


class Stages(Protocol):
    """The deployments the flow calls; each may raise an AppError."""

    async def caption(self, image_png: bytes) -> str: ...
    async def classify(self, image_png: bytes) -> Classification: ...
    async def generate(self, spec: GenerationSpec) -> GenerationOutput: ...
    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]: ...


ProgressFn = Callable[[Stage], Awaitable[None]]
CancelledFn = Callable[[], Awaitable[bool]]


class DeskFlow:
    def __init__(self, preset: Preset, stages: Stages, images: ImageStore, vocabulary: ItemVocabulary) -> None:
        self.preset = preset
        self.stages = stages
        self.images = images
        self.vocabulary = vocabulary

    async def run(self, record: TaskRecord, progress: ProgressFn, cancelled: CancelledFn) -> dict[str, Any]:
        """Run one task; returns the result fields of TaskResult or raises an AppError."""
        request = ResolvedGenerate.model_validate(record.request)
        timings: dict[str, float] = {}
        result: dict[str, Any] = {"seed": request.seed}

        async def checkpoint() -> None:
            if await cancelled():
                raise TaskCancelled()

        # 1. Caption and classify the photo concurrently (no photo: text-to-image, no checks).
        photo = await self.images.get(record.input_key) if record.input_key else None
        caption = ""
        is_desk = True
        if photo is not None:
            await progress(Stage.captioning)
            started = time.perf_counter()
            caption, classification = await asyncio.gather(self.stages.caption(photo), self.stages.classify(photo))
            timings["caption_and_classify"] = time.perf_counter() - started
            is_desk = classification.is_desk
            result.update(caption=caption, is_desk=is_desk, desk_score=round(classification.score, 4))
        await checkpoint()

        # 2. Items from the caption and the user's text; shopping starts now, alongside generation.
        items = extract_items(caption, request.prompt, self.vocabulary) or fallback_items(self.vocabulary)
        result["items"] = [item.model_dump() for item in items]
        search_started = time.perf_counter()
        search = asyncio.ensure_future(self.stages.search(items))

        try:
            # 3. Generate when the photo is a desk (or there is no photo).
            output: GenerationOutput | None = None
            if not is_desk:
                result["generation_skipped"] = "not_a_desk"
            else:
                await progress(Stage.generating)
                lora = self.preset.lora(request.lora.name) if request.lora else None
                scale = (
                    request.lora.scale
                    if request.lora is not None and request.lora.scale is not None
                    else (lora.default_scale if lora else 1.0)
                )
                built = build_prompt(
                    caption,
                    items,
                    request.prompt,
                    lora.trigger_words if lora else [],
                    user_negative=request.negative_prompt,
                )
                spec = GenerationSpec(
                    task_id=record.task_id,
                    prompt=built.prompt,
                    negative_prompt=built.negative_prompt,
                    num_inference_steps=request.num_inference_steps,
                    guidance_scale=request.guidance_scale,
                    height=request.height,
                    width=request.width,
                    seed=request.seed or 0,
                    strength=request.strength,
                    init_image_png=photo,
                    lora_name=lora.name if lora else None,
                    lora_scale=scale,
                )
                result.update(
                    prompt=built.prompt,
                    negative_prompt=built.negative_prompt,
                    lora={"name": lora.name, "scale": scale} if lora else None,
                    model_id=self.preset.generator.model_id,
                )
                started = time.perf_counter()
                try:
                    output = await self.stages.generate(spec)
                except TaskCancelled:
                    raise
                except AppError as exc:
                    result["generation_skipped"] = f"generation_failed: {exc.error_code}: {exc.message}"
                except Exception as exc:  # a replica crash or an unexpected model error
                    logger.exception("generation failed for task %s", record.task_id)
                    result["generation_skipped"] = f"generation_failed: {type(exc).__name__}"
                timings["generate"] = time.perf_counter() - started
            await checkpoint()

            # 4. Store the image with its reproducibility record as a sidecar.
            if output is not None:
                await progress(Stage.storing)
                started = time.perf_counter()
                key = make_key(request.user_id)
                metadata = {
                    "task_id": record.task_id,
                    "prompt": result["prompt"],
                    "negative_prompt": result["negative_prompt"],
                    "seed": output.seed,
                    "model_id": output.model_id,
                    "lora": result["lora"],
                    "num_inference_steps": request.num_inference_steps,
                    "guidance_scale": request.guidance_scale,
                    "strength": request.strength if photo is not None else None,
                    "height": request.height,
                    "width": request.width,
                    "initial_image_url": record.initial_image_url,
                    "mode": "img2img" if photo is not None else "txt2img",
                }
                result["processed_image_url"] = await self.images.put(key, output.image_png, metadata=metadata)
                result["model_id"] = output.model_id
                timings["store"] = time.perf_counter() - started

            # 5. Shopping results (always).
            await progress(Stage.searching)
            found = await search
        except BaseException:
            search.cancel()
            raise
        timings["search"] = time.perf_counter() - search_started
        result.update(self._recommendations(found))
        result["timings"] = {name: round(seconds, 4) for name, seconds in timings.items()}
        return result

    @staticmethod
    def _recommendations(found: dict[str, ItemSearchResult]) -> dict[str, Any]:
        offers: dict[str, list[Offer]] = {}
        errors: dict[str, str] = {}
        for name, item in found.items():
            offers[name] = item.offers
            if item.error_code:
                errors[name] = f"{item.error_code}: {item.message or ''}".strip()
        return {
            "recommendations": {name: [o.model_dump() for o in lst] for name, lst in offers.items()},
            "recommendation_errors": errors or None,
        }
