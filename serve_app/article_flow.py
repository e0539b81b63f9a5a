"""Article images (task kind `article`; seed image-generation-storage-guide.md).

A list of placeholders `{index, alt}` (alt text often Korean, often wrapped as `[이미지 설명: ...]`)
-> one English prompt each from the prompt writer -> one image each from the `article` backend
chain -> stored -> the placeholders back in the request's order, each with its URL or its own
error. All placeholders are sent at once, so the in-cluster Generator batches them. One
placeholder failing (no usable prompt, every backend failed, its upload failed) is reported on
it alone; the task fails only when no placeholder got an image.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from serve_app.backends import BackendImage, BackendRegistry, ChainFailed, ChainResult, variant_chain
from serve_app.errors import AppError, GenerationFailed, TaskCancelled
from serve_app.flow import CancelledFn, Flow, FlowOutcome, ProgressFn
from serve_app.products.articles.payload import ArticlePayload
from serve_app.prompts import build_prompt, load_prompt_templates
from serve_app.requests import ResolvedGenerate
from serve_app.scene_flow import backend_fields
from serve_app.stages import GeneratedImage, StageRetry
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import Stage

KIND = "article"


class ArticleFlow(Flow):
    def __init__(self, *args: Any, backends: BackendRegistry, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backends = backends

    async def _run(
        self,
        record: TaskRecord,
        request: ResolvedGenerate,
        progress: ProgressFn,
        cancelled: CancelledFn,
        journal: list[StageRetry],
        result: dict[str, Any],
    ) -> FlowOutcome:
        payload = request.product
        assert isinstance(payload, ArticlePayload), "an article task carries its placeholders"
        stored: list[str] = []
        timings: dict[str, float] = {}
        entries: list[dict[str, Any]] = [{"index": p.index, "alt": p.alt} for p in payload.placeholders]
        result["placeholders"] = entries
        if payload.variant is not None:
            result["variant"] = payload.variant.name

        # 1. Prompts, all at once (a chat writer's calls share its rate limiter).
        await progress(Stage.writing)
        started = time.perf_counter()
        written = await asyncio.gather(
            *(self.writer.article_prompt(p.alt) for p in payload.placeholders), return_exceptions=True
        )
        timings["write"] = time.perf_counter() - started
        specs: dict[int, Any] = {}
        lora = request.lora
        for position, words in enumerate(written):
            entry = entries[position]
            if isinstance(words, BaseException):
                if not isinstance(words, AppError):
                    raise words
                entry.update(error_code=words.error_code, message=f"The prompt writer failed: {words.message}")
                continue
            entry.update(words.record())
            if not words.text.strip():
                entry.update(
                    error_code="PROMPT_UNTRANSLATABLE",
                    message="No English prompt could be written from this alt text "
                    f"(untranslated: {', '.join(words.untranslated) or 'everything'}); configure a chat prompt writer.",
                )
                continue
            built = build_prompt(
                words.text,
                [],
                payload.style,
                lora.trigger_words if lora else [],
                templates=load_prompt_templates(section="article"),
                user_negative=request.negative_prompt,
            )
            entry.update(prompt=built.prompt, negative_prompt=built.negative_prompt)
            seed = (request.seed + position) % 2**63
            specs[position] = request.generation_spec(built.prompt, built.negative_prompt, None, record.task_id, seed)
        if await cancelled():
            raise TaskCancelled()

        # 2. Every image at once through the chain (the Generator batches them); each on its own.
        await progress(Stage.generating)
        started = time.perf_counter()
        chain = self.backends.chain("article", self._local_generate(journal), variant_chain(payload))
        highest = 0

        async def on_step(step: int, total: int) -> None:
            nonlocal highest
            if step > highest:
                highest = step
                await progress(Stage.generating, step, total)

        positions = list(specs)
        outcomes = await asyncio.gather(
            *(chain.generate(specs[position], on_step) for position in positions), return_exceptions=True
        )
        timings["generate"] = time.perf_counter() - started
        if any(isinstance(outcome, TaskCancelled) for outcome in outcomes) or await cancelled():
            raise TaskCancelled()

        # 3. Store each image made; an upload failure is that placeholder's error.
        await progress(Stage.storing)
        started = time.perf_counter()
        made: list[GeneratedImage] = []
        cost = 0.0
        for position, outcome in zip(positions, outcomes, strict=True):
            entry = entries[position]
            if isinstance(outcome, BaseException):
                entry.update(_error_fields(outcome))
                continue
            assert isinstance(outcome, ChainResult)
            entry.update(
                backend_fields(outcome.image), backends_failed=[a.model_dump() for a in outcome.failed] or None
            )
            cost += outcome.image.cost_usd
            try:
                images = await self._store_images(
                    request,
                    [outcome.image],
                    lambda image, e=entry: self._metadata(record, request, e, image),
                    stored,
                )
            except AppError as exc:
                entry.update(error_code=exc.error_code, message=exc.message)
                continue
            entry.update(url=images[0].url, key=images[0].key, seed=images[0].seed)
            made.append(images[0])
        timings["store"] = time.perf_counter() - started

        result["cost_usd"] = round(cost, 6)
        result["timings"] = {name: round(seconds, 4) for name, seconds in timings.items()}
        failed = sum(1 for entry in entries if "error_code" in entry)
        result["failed_placeholders"] = failed
        if not made:
            raise GenerationFailed(f"None of the {len(entries)} placeholders got an image; each says why.")
        result.update(
            processed_image_url=made[0].url,
            images=[image.model_dump() for image in made],
            output_format=request.output_format,
        )
        return FlowOutcome(result=result, object_keys=stored)

    @staticmethod
    def _metadata(
        record: TaskRecord, request: ResolvedGenerate, entry: dict[str, Any], image: BackendImage
    ) -> dict[str, Any]:
        return {
            "task_id": record.task_id,
            "kind": KIND,
            "index": entry["index"],
            "alt": entry["alt"],
            "prompt": entry.get("prompt"),
            "negative_prompt": entry.get("negative_prompt"),
            "writer": entry.get("writer"),
            "seed": image.seed,
            "backend": image.backend,
            "model_id": image.model,
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "height": request.height,
            "width": request.width,
            "output_format": request.output_format,
        }


def _error_fields(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ChainFailed):
        return {
            "error_code": "GENERATION_FAILED",
            "message": exc.message,
            "backends_failed": [attempt.model_dump() for attempt in exc.attempts],
        }
    if isinstance(exc, AppError):
        return {"error_code": exc.error_code, "message": exc.message}
    return {"error_code": "GENERATION_FAILED", "message": type(exc).__name__}
