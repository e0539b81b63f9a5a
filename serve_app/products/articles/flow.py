"""Article images (task kind `article`; source spec image-generation-storage-guide.md).

A list of placeholders `{index, alt}` (alt text often Korean, often wrapped as `[이미지 설명: ...]`)
-> one English prompt each from the prompt writer -> one image each from the `article` backend
chain -> stored -> the placeholders back in the request's order, each with its URL or its own
error. All placeholders are sent at once, so the in-cluster Generator batches them. One
placeholder failing (no usable prompt, every backend failed, its upload failed) is reported on
it alone; the task fails only when no placeholder got an image.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from serve_app.backends import ChainResult, variant_chain
from serve_app.errors import AppError, GenerationFailed
from serve_app.flows.kit import Flow, FlowOutcome, Run, failed_fields, item_error
from serve_app.products.articles.payload import ArticlePayload
from serve_app.prompts import build_prompt, load_prompt_templates
from serve_app.stages import GeneratedImage, GenerationSpec
from serve_app.tasks.records import Stage

KIND = "article"
PROMPTS = Path(__file__).with_name("prompts.yaml")


class ArticleFlow(Flow[ArticlePayload]):
    payload = ArticlePayload

    async def steps(self, run: Run[ArticlePayload]) -> FlowOutcome:
        payload, result = run.payload, run.result
        entries: list[dict[str, Any]] = [
            p.model_dump(include={"index", "alt", "tag"}, exclude_none=True) for p in payload.placeholders
        ]
        result["placeholders"] = entries
        if payload.variant is not None:
            result["variant"] = payload.variant.name

        # 1. Prompts, all at once (a chat writer's calls share its rate limiter).
        async with run.stage(Stage.writing, "write"):
            written = await asyncio.gather(
                *(self.deps.writer.article_prompt(p.alt) for p in payload.placeholders), return_exceptions=True
            )
        specs = self._specs(run, entries, written)

        # 2. Every image at once through the chain (the Generator batches them); each on its own.
        async with run.stage(Stage.generating, "generate"):
            chain = run.chain("article", variant_chain(payload))
            outcomes = await run.generate_each(chain, list(specs.values()))

        # 3. Store each image made; an upload failure is that placeholder's error.
        made: list[GeneratedImage] = []
        cost = 0.0
        async with run.stage(Stage.storing, "store"):
            for position, outcome in zip(specs, outcomes, strict=True):
                entry = entries[position]
                if isinstance(outcome, AppError):
                    entry.update(item_error(outcome))
                    continue
                stored = await self._store(run, entry, outcome)
                cost += outcome.image.cost_usd
                if stored is not None:
                    made.append(stored)

        result["cost_usd"] = round(cost, 6)
        result["failed_placeholders"] = sum(1 for entry in entries if "error_code" in entry)
        if not made:
            run.record_timings()  # they go with the failure's partial result
            raise GenerationFailed(f"None of the {len(entries)} placeholders got an image; each says why.")
        result.update(run.image_fields(made))
        return run.outcome()

    @staticmethod
    def _specs(
        run: Run[ArticlePayload], entries: list[dict[str, Any]], written: list[Any]
    ) -> dict[int, GenerationSpec]:
        """Each placeholder's spec from its written prompt; a placeholder without one says why."""
        request = run.request
        specs: dict[int, GenerationSpec] = {}
        for position, words in enumerate(written):
            entry = entries[position]
            if isinstance(words, BaseException):
                if not isinstance(words, AppError):
                    raise words
                entry.update(error_code=words.error_code, message=f"The prompt writer failed: {words.message}")
                continue
            entry.update(words.record())
            if words.machine_translated:
                entry["timings"] = {"translate": words.translate_s}
                run.time_translation(words)
            if not words.text.strip():
                failed = f"; {words.fallback_reason}" if words.fallback_reason else ""
                entry.update(
                    error_code="PROMPT_UNTRANSLATABLE",
                    message="No writer could write an English prompt from this alt text "
                    f"(untranslated: {', '.join(words.untranslated) or 'everything'}{failed}).",
                )
                continue
            built = build_prompt(
                words.text,
                [],
                run.payload.style,
                request.lora.trigger_words if request.lora else [],
                templates=load_prompt_templates(PROMPTS),
                user_negative=request.negative_prompt,
            )
            entry.update(prompt=built.prompt, negative_prompt=built.negative_prompt)
            seed = (request.seed + position) % 2**63
            specs[position] = request.generation_spec(
                built.prompt, built.negative_prompt, None, run.record.task_id, seed
            )
        return specs

    @staticmethod
    async def _store(run: Run[ArticlePayload], entry: dict[str, Any], outcome: ChainResult) -> GeneratedImage | None:
        image = outcome.image
        entry.update(image.result_fields(), backends_failed=failed_fields(outcome) or None)
        record = {
            "task_id": run.record.task_id,
            "kind": KIND,
            "index": entry["index"],
            "alt": entry["alt"],
            "tag": entry.get("tag"),
            "prompt": entry.get("prompt"),
            "negative_prompt": entry.get("negative_prompt"),
            "writer": entry.get("writer"),
            "seed": image.seed,
            "backend": image.backend,
            "model_id": image.model,
            **run.settings_record(),
        }
        try:
            made = await run.store(image, record)
        except AppError as exc:
            entry.update(error_code=exc.error_code, message=exc.message)
            return None
        entry.update(url=made.url, key=made.key, seed=made.seed)
        return made
