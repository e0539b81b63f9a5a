"""The desk makeover (task kind `desk`; SPEC.md section 1): caption and classify the photo, build
the prompt, generate, store, and shopping offers for the items it saw.

Outcomes:
- done with an image: a desk (or no photo: text-to-image) and generation succeeded;
- done without an image (`generation_skipped` says why), the shopping part only (the source
  spec's fallback branch): the photo is not a desk, or generating from the desk photo still failed;
- failed: text-to-image whose generation failed (GENERATION_FAILED: a task without a photo never
  ends done without its image), cancelled, a stage unreachable through every retry, or the
  image could not be stored (S3_UPLOAD_FAILED).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from serve_app.errors import AppError, GenerationFailed, TaskCancelled
from serve_app.flows.kit import Flow, FlowDeps, FlowOutcome, Run, image_record, output_fields, prompt_fields
from serve_app.items import ItemVocabulary, extract_items, fallback_items
from serve_app.prompts import build_prompt, load_prompt_templates
from serve_app.retry import StageUnavailableError
from serve_app.stages import DeskItem, GenerationOutput, ItemSearchResult, Offer
from serve_app.tasks.records import Stage

logger = logging.getLogger(__name__)

PROMPTS = Path(__file__).with_name("prompts.yaml")


class DeskFlow(Flow[BaseModel]):
    def __init__(self, deps: FlowDeps, vocabulary: ItemVocabulary) -> None:
        super().__init__(deps)
        self.vocabulary = vocabulary

    async def steps(self, run: Run[BaseModel]) -> FlowOutcome:
        result, stages = run.result, self.deps.stages

        # 1. Caption and classify the photo concurrently (no photo: text-to-image, no checks).
        photo = await run.input_image()
        caption, is_desk = "", True
        if photo is not None:
            async with run.stage(Stage.captioning, "caption_and_classify"):
                caption, classification = await asyncio.gather(
                    run.call("caption", lambda: stages.caption(photo)),
                    run.call("classify", lambda: stages.classify(photo)),
                )
            is_desk = classification.is_desk
            result.update(caption=caption, is_desk=is_desk, desk_score=round(classification.score, 4))

        # 2. Items from the caption and the user's text; shopping starts now, alongside generation.
        items = extract_items(caption, run.request.prompt, self.vocabulary) or fallback_items(self.vocabulary)
        result["items"] = [item.model_dump() for item in items]
        search_started = time.perf_counter()
        search = asyncio.ensure_future(self._search(run, items))
        try:
            # 3. Generate when the photo is a desk (or there is no photo).
            outputs: list[GenerationOutput] | None = None
            if not is_desk:
                result["generation_skipped"] = "not_a_desk"
            else:
                async with run.stage(Stage.generating, "generate"):
                    outputs = await self._generate(run, photo, caption, items)

            # 4. Store the images, each with its reproducibility record as a sidecar.
            if outputs:
                async with run.stage(Stage.storing, "store"):
                    made = [await run.store(output, self._metadata(run, output, photo)) for output in outputs]
                result.update(run.image_fields(made), **output_fields(outputs))

            # 5. Shopping results (always).
            async with run.stage(Stage.searching):
                found = await search
        except BaseException:
            search.cancel()
            raise
        run.timings["search"] = time.perf_counter() - search_started
        result.update(self._recommendations(found))
        return run.outcome()

    async def _generate(
        self, run: Run[BaseModel], photo: bytes | None, caption: str, items: list[DeskItem]
    ) -> list[GenerationOutput] | None:
        """The task's images, retried on infrastructure faults. Without a photo a failure fails
        the task; with a desk photo it becomes the shopping-only fallback."""
        request, result = run.request, run.result
        lora = request.lora
        built = build_prompt(
            caption,
            items,
            await run.english(request.prompt, "prompt") or "",
            lora.trigger_words if lora else [],
            templates=load_prompt_templates(PROMPTS),
            user_negative=await run.english(request.negative_prompt, "negative_prompt"),
        )
        specs = request.generation_specs(built.prompt, built.negative_prompt, photo, task_id=run.record.task_id)
        result.update(prompt_fields(built, request.lora))
        try:
            return await run.generate_all(specs)
        except TaskCancelled:
            raise
        except (AppError, StageUnavailableError) as exc:
            code = exc.error_code if isinstance(exc, AppError) else "GENERATION_FAILED"
            message = exc.message if isinstance(exc, AppError) else str(exc)
            if photo is None:
                raise GenerationFailed(f"Image generation failed: {message}") from exc
            result["generation_skipped"] = f"generation_failed: {code}: {message}"
        except Exception as exc:  # an unexpected model error: the replica ran the call and raised
            logger.exception("generation failed for task %s", run.record.task_id)
            if photo is None:
                raise GenerationFailed(f"Image generation failed: {type(exc).__name__}") from exc
            result["generation_skipped"] = f"generation_failed: {type(exc).__name__}"
        return None

    async def _search(self, run: Run[BaseModel], items: list[DeskItem]) -> dict[str, ItemSearchResult]:
        """Offers per item; a shopping stage unreachable through every retry is an error per item,
        not a failed task (the image, if any, is still delivered)."""
        try:
            return await run.call("search", lambda: self.deps.stages.search(items))
        except StageUnavailableError as exc:
            return {item.name: ItemSearchResult(error_code="STAGE_UNAVAILABLE", message=str(exc)) for item in items}

    @staticmethod
    def _metadata(run: Run[BaseModel], output: GenerationOutput, photo: bytes | None) -> dict[str, Any]:
        """The reproducibility record written beside the image."""
        return image_record(run, output, photo, kind=None)

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
