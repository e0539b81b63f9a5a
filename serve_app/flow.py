"""The desk makeover flow (SPEC.md section 1) as a plain class over four stage calls.

The task runner deployment gives it `DeploymentHandle`-backed stages; unit tests give it fakes.
A stage call that fails because its replica or node died is retried with backoff
(`serve_app.retry`); every retry is listed in the result. Outcomes:
- done with an image: a desk (or no photo: text-to-image) and generation succeeded;
- done without an image (`generation_skipped` says why), the shopping part only (the seed's
  fallback branch): the photo is not a desk, or generating from the desk photo still failed;
- failed: text-to-image whose generation failed (GENERATION_FAILED: a task without a photo never
  ends done without its image), cancelled, a stage unreachable through every retry, or the
  image could not be stored (S3_UPLOAD_FAILED).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from serve_app.errors import AppError, GenerationFailed, ServiceUnavailable, TaskCancelled
from serve_app.items import ItemVocabulary, extract_items, fallback_items
from serve_app.outputs import encode_output
from serve_app.prompts import build_prompt
from serve_app.requests import ResolvedGenerate
from serve_app.retry import RetryConfig, StageUnavailableError, call_with_retries
from serve_app.stages import (
    Classification,
    DeskItem,
    GeneratedImage,
    GenerationOutput,
    GenerationSpec,
    ItemSearchResult,
    Offer,
    StageRetry,
)
from serve_app.storage.base import ImageStore, make_key, sidecar_key
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import Stage
from serve_app.writing import PromptWriter, TemplateWriter
from serve_app.writing.glossary import has_hangul

logger = logging.getLogger(__name__)

OnStep = Callable[[int, int], Awaitable[None]]


class Stages(Protocol):
    """The deployments the flow calls; each may raise an AppError or an infrastructure error."""

    async def caption(self, image_png: bytes) -> str: ...
    async def classify(self, image_png: bytes) -> Classification: ...
    async def generate(self, spec: GenerationSpec, on_step: OnStep) -> GenerationOutput: ...
    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]: ...


class MadeImage(Protocol):
    """What `_store_images` stores: a Generator output or a backend's image."""

    image_png: bytes
    seed: int | None


class ProgressFn(Protocol):
    async def __call__(self, stage: Stage, step: int | None = None, total: int | None = None) -> None: ...


CancelledFn = Callable[[], Awaitable[bool]]


@dataclass
class FlowOutcome:
    """What a finished run hands the runner: the result fields, and every object it stored
    (the retention sweep deletes them with the task)."""

    result: dict[str, Any]
    object_keys: list[str] = field(default_factory=list)


class FlowError(AppError):
    """Wraps the AppError a run ended with, keeping what the run had learned (retries, items)."""

    def __init__(self, cause: AppError, partial: dict[str, Any]) -> None:
        super().__init__(cause.message, error_code=cause.error_code)
        self.status_code = cause.status_code  # type: ignore[misc]
        self.partial = partial


class Flow:
    """What every task flow shares: the run wrapper (errors become FlowError with the partial
    result and the retry journal), stage calls with retries, making a request's n images
    together, and storing them in the requested format with their reproducibility records."""

    def __init__(
        self,
        stages: Stages,
        images: ImageStore,
        retries: RetryConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        writer: PromptWriter | None = None,
    ) -> None:
        self.stages = stages
        self.images = images
        self.retries = retries or RetryConfig()
        self._sleep = sleep
        self.writer = writer or TemplateWriter()

    async def run(self, record: TaskRecord, progress: ProgressFn, cancelled: CancelledFn) -> FlowOutcome:
        """Run one task; returns its outcome or raises FlowError (an AppError with the partial result)."""
        request = ResolvedGenerate.model_validate(record.request)
        journal: list[StageRetry] = []
        result: dict[str, Any] = {"seed": request.seed}  # the outcome's result, or the error's partial one
        error: AppError | None = None
        try:
            outcome = await self._run(record, request, progress, cancelled, journal, result)
        except AppError as exc:
            error = exc
        except StageUnavailableError as exc:
            error = ServiceUnavailable(f"{exc}.", error_code="STAGE_UNAVAILABLE")
        if journal:
            result["retries"] = [entry.model_dump() for entry in journal]
        if error is not None:
            raise FlowError(error, result) from error
        return outcome

    async def _run(
        self,
        record: TaskRecord,
        request: ResolvedGenerate,
        progress: ProgressFn,
        cancelled: CancelledFn,
        journal: list[StageRetry],
        result: dict[str, Any],
    ) -> FlowOutcome:
        raise NotImplementedError

    async def _call(self, stage: str, call: Callable[[], Awaitable[Any]], journal: list[StageRetry]) -> Any:
        return await call_with_retries(stage, call, self.retries, journal, sleep=self._sleep)

    async def _english(self, text: str | None, field: str, result: dict[str, Any]) -> str | None:
        """`text` in English for the SD text encoder (CLIP reads English only): Korean goes through
        the prompt writer, and the result records what was translated, by whom, and any word the
        offline writer had to drop."""
        if not text or not has_hangul(text):
            return text
        written = await self.writer.translate(text)
        result.setdefault("translations", {})[field] = {"source": text, "english": written.text, **written.record()}
        return written.text

    @staticmethod
    def step_reporter(progress: ProgressFn) -> OnStep:
        """A backend's step callback that reports each step as the task's progress."""

        async def on_step(step: int, total: int) -> None:
            await progress(Stage.generating, step, total)

        return on_step

    def _local_generate(
        self, journal: list[StageRetry]
    ) -> Callable[[GenerationSpec, OnStep], Awaitable[GenerationOutput]]:
        """The Generator deployment as a backend's generate call, retried on infrastructure faults."""

        async def generate(spec: GenerationSpec, on_step: OnStep) -> GenerationOutput:
            return await self._call("generate", lambda: self.stages.generate(spec, on_step), journal)

        return generate

    async def _generate_all(
        self, specs: list[GenerationSpec], progress: ProgressFn, journal: list[StageRetry]
    ) -> list[GenerationOutput]:
        """Every image of a request at once (so they share the Generator's batches), each retried on
        infrastructure faults; the first failure cancels the others and is raised."""
        highest = 0

        async def on_step(step: int, total: int) -> None:
            nonlocal highest
            if step > highest:  # n calls report the same steps: record each step once
                highest = step
                await progress(Stage.generating, step, total)

        def one(spec: GenerationSpec) -> Awaitable[GenerationOutput]:
            return self._call("generate", lambda: self.stages.generate(spec, on_step), journal)

        calls = [asyncio.ensure_future(one(spec)) for spec in specs]
        try:
            return list(await asyncio.gather(*calls))
        except BaseException:
            for call in calls:
                call.cancel()
            raise

    async def _store_images(
        self,
        request: ResolvedGenerate,
        outputs: list[Any],
        metadata: Callable[[Any], dict[str, Any]],
        stored: list[str],
    ) -> list[GeneratedImage]:
        """Encode each image as the request asks and store it with its record; every key written
        goes into `stored` (the retention sweep deletes them with the task)."""
        made: list[GeneratedImage] = []
        for output in outputs:
            data, ext, media_type = await asyncio.to_thread(
                encode_output, output.image_png, request.output_format, request.output_compression
            )
            key = make_key(request.user_id, ext=ext)
            stored += [key, sidecar_key(key)]
            url = await self.images.put(key, data, content_type=media_type, metadata=metadata(output))
            made.append(GeneratedImage(url=url, key=key, seed=output.seed))
        return made

    @staticmethod
    def _image_fields(request: ResolvedGenerate, made: list[GeneratedImage], outputs: list[GenerationOutput]) -> dict:
        return {
            "processed_image_url": made[0].url,
            "images": [image.model_dump() for image in made],
            "output_format": request.output_format,
            "model_id": outputs[0].model_id,
            # passed: the weights' safety checker saw every image; not_run: there is none (a flagged
            # image never gets here: its task fails CONTENT_FILTERED)
            "safety_checker": "passed" if all(o.safety == "passed" for o in outputs) else "not_run",
        }


class DeskFlow(Flow):
    def __init__(
        self,
        stages: Stages,
        images: ImageStore,
        vocabulary: ItemVocabulary,
        retries: RetryConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        writer: PromptWriter | None = None,
    ) -> None:
        super().__init__(stages, images, retries, sleep, writer)
        self.vocabulary = vocabulary

    async def _run(
        self,
        record: TaskRecord,
        request: ResolvedGenerate,
        progress: ProgressFn,
        cancelled: CancelledFn,
        journal: list[StageRetry],
        result: dict[str, Any],
    ) -> FlowOutcome:
        timings: dict[str, float] = {}
        stored: list[str] = []

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
            caption, classification = await asyncio.gather(
                self._call("caption", lambda: self.stages.caption(photo), journal),
                self._call("classify", lambda: self.stages.classify(photo), journal),
            )
            timings["caption_and_classify"] = time.perf_counter() - started
            is_desk = classification.is_desk
            result.update(caption=caption, is_desk=is_desk, desk_score=round(classification.score, 4))
        await checkpoint()

        # 2. Items from the caption and the user's text; shopping starts now, alongside generation.
        items = extract_items(caption, request.prompt, self.vocabulary) or fallback_items(self.vocabulary)
        result["items"] = [item.model_dump() for item in items]
        search_started = time.perf_counter()
        search = asyncio.ensure_future(self._search(items, journal))

        try:
            # 3. Generate when the photo is a desk (or there is no photo).
            outputs: list[GenerationOutput] | None = None
            if not is_desk:
                result["generation_skipped"] = "not_a_desk"
            else:
                started = time.perf_counter()
                outputs = await self._generate(record, request, photo, caption, items, progress, journal, result)
                timings["generate"] = time.perf_counter() - started
            await checkpoint()

            # 4. Store the images, each with its reproducibility record as a sidecar.
            if outputs:
                await progress(Stage.storing)
                started = time.perf_counter()
                made = await self._store_images(
                    request, outputs, lambda output: self._metadata(record, request, result, output, photo), stored
                )
                result.update(self._image_fields(request, made, outputs))
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
        return FlowOutcome(result=result, object_keys=stored)

    async def _generate(
        self,
        record: TaskRecord,
        request: ResolvedGenerate,
        photo: bytes | None,
        caption: str,
        items: list[DeskItem],
        progress: ProgressFn,
        journal: list[StageRetry],
        result: dict[str, Any],
    ) -> list[GenerationOutput] | None:
        """The task's images, retried on infrastructure faults. Without a photo a failure fails
        the task; with a desk photo it becomes the shopping-only fallback."""
        await progress(Stage.generating)
        lora = request.lora
        built = build_prompt(
            caption,
            items,
            await self._english(request.prompt, "prompt", result) or "",
            lora.trigger_words if lora else [],
            user_negative=await self._english(request.negative_prompt, "negative_prompt", result),
        )
        specs = request.generation_specs(built.prompt, built.negative_prompt, photo, task_id=record.task_id)
        result.update(
            prompt=built.prompt,
            negative_prompt=built.negative_prompt,
            lora={"name": lora.name, "scale": lora.scale} if lora else None,
        )
        try:
            return await self._generate_all(specs, progress, journal)
        except TaskCancelled:
            raise
        except (AppError, StageUnavailableError) as exc:
            code = exc.error_code if isinstance(exc, AppError) else "GENERATION_FAILED"
            message = exc.message if isinstance(exc, AppError) else str(exc)
            if photo is None:
                raise GenerationFailed(f"Image generation failed: {message}") from exc
            result["generation_skipped"] = f"generation_failed: {code}: {message}"
        except Exception as exc:  # an unexpected model error: the replica ran the call and raised
            logger.exception("generation failed for task %s", record.task_id)
            if photo is None:
                raise GenerationFailed(f"Image generation failed: {type(exc).__name__}") from exc
            result["generation_skipped"] = f"generation_failed: {type(exc).__name__}"
        return None

    async def _search(self, items: list[DeskItem], journal: list[StageRetry]) -> dict[str, ItemSearchResult]:
        """Offers per item; a shopping stage unreachable through every retry is an error per item,
        not a failed task (the image, if any, is still delivered)."""
        try:
            return await self._call("search", lambda: self.stages.search(items), journal)
        except StageUnavailableError as exc:
            return {item.name: ItemSearchResult(error_code="STAGE_UNAVAILABLE", message=str(exc)) for item in items}

    @staticmethod
    def _metadata(
        record: TaskRecord,
        request: ResolvedGenerate,
        result: dict[str, Any],
        output: GenerationOutput,
        photo: bytes | None,
    ) -> dict[str, Any]:
        """The reproducibility record written beside the image."""
        return {
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
            "output_format": request.output_format,
        }

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
