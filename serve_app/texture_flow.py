"""Texture images (task kind `texture`; seed texture-generator-upgrade.md).

The edge resolved each texture into its prompt, seed and content hash, and answered the ones the
cache had. This flow makes the rest: every missing texture through the `texture` backend chain at
once (the Generator batches them; `tileable` pads its convolutions circularly for a seamless
tile), stores each image and records it in the content-addressed cache, so the same parameters
never generate twice. A texture that fails is reported on its own; the task fails only when no
texture has an image.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from serve_app.backends import BackendRegistry, ChainResult, variant_chain
from serve_app.errors import AppError, GenerationFailed, TaskCancelled
from serve_app.flow import CancelledFn, Flow, FlowOutcome, ProgressFn
from serve_app.products.textures.payload import TextureItem, TexturePayload
from serve_app.requests import ResolvedGenerate
from serve_app.scene_flow import backend_fields
from serve_app.stages import StageRetry
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import Stage

KIND = "texture"


class TextureCache(Protocol):
    def cache_textures(self, task_id: str, entries: dict[str, tuple[str, dict[str, Any]]]) -> None: ...


def cached_entry(item: TextureItem) -> dict[str, Any]:
    """A cache hit as a result entry (the image another task made for the same parameters)."""
    return {**(item.cached or {}), **item.texture.model_dump(exclude_none=True), "cache_hit": True}


class TextureFlow(Flow):
    def __init__(self, *args: Any, backends: BackendRegistry, cache: TextureCache, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backends = backends
        self.cache = cache

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
        assert isinstance(payload, TexturePayload), "a texture task carries its textures"
        stored: list[str] = []
        entries: list[dict[str, Any]] = [
            cached_entry(item) if item.cached else {**item.texture.model_dump(exclude_none=True), "cache_hit": False}
            for item in payload.items
        ]
        result["textures"] = entries
        if payload.variant is not None:
            result["variant"] = payload.variant.name
        missing = [position for position, item in enumerate(payload.items) if not item.cached]

        await progress(Stage.generating)
        started = time.perf_counter()
        chain = self.backends.chain("texture", self._local_generate(journal), variant_chain(payload))
        highest = 0

        async def on_step(step: int, total: int) -> None:
            nonlocal highest
            if step > highest:
                highest = step
                await progress(Stage.generating, step, total)

        specs = []
        for position in missing:
            item = payload.items[position]
            spec = request.generation_spec(item.prompt, item.negative_prompt, None, record.task_id, seed=item.seed)
            specs.append(spec.model_copy(update={"tileable": payload.tileable}))
        outcomes = await asyncio.gather(*(chain.generate(spec, on_step) for spec in specs), return_exceptions=True)
        generate_s = time.perf_counter() - started
        if any(isinstance(outcome, TaskCancelled) for outcome in outcomes) or await cancelled():
            raise TaskCancelled()

        await progress(Stage.storing)
        cache: dict[str, tuple[str, dict[str, Any]]] = {}
        for position, outcome in zip(missing, outcomes, strict=True):
            item, entry = payload.items[position], entries[position]
            entry.update(prompt=item.prompt, seed=item.seed)
            if isinstance(outcome, BaseException):
                error = outcome if isinstance(outcome, AppError) else GenerationFailed(type(outcome).__name__)
                entry.update(error_code="GENERATION_FAILED", message=error.message)
                attempts = getattr(outcome, "attempts", None)
                if attempts:
                    entry["backends_failed"] = [attempt.model_dump() for attempt in attempts]
                continue
            assert isinstance(outcome, ChainResult)
            entry.update(
                backend_fields(outcome.image), backends_failed=[a.model_dump() for a in outcome.failed] or None
            )
            metadata = {"task_id": record.task_id, "kind": KIND, **entry, "tileable": payload.tileable}
            try:
                images = await self._store_images(request, [outcome.image], lambda _image, m=metadata: m, stored)
            except AppError as exc:
                entry.update(error_code=exc.error_code, message=exc.message)
                continue
            entry.update(url=images[0].url, key=images[0].key)
            cache[item.content_hash] = (images[0].key, {k: v for k, v in entry.items() if k != "cache_hit"})
        await asyncio.to_thread(self.cache.cache_textures, record.task_id, cache)

        made = [entry for entry in entries if entry.get("url")]
        result.update(
            cache_hits=sum(1 for item in payload.items if item.cached),
            failed_textures=sum(1 for entry in entries if "error_code" in entry),
            cost_usd=round(sum(entry.get("cost_usd") or 0.0 for entry in entries if not entry["cache_hit"]), 6),
            tileable=payload.tileable,
            timings={"generate": round(generate_s, 4)},
        )
        if not made:
            raise GenerationFailed(f"None of the {len(entries)} textures got an image; each says why.")
        result.update(
            processed_image_url=made[0]["url"],
            images=[{"url": e["url"], "key": e.get("key"), "seed": e.get("seed")} for e in made],
            output_format=request.output_format,
        )
        return FlowOutcome(result=result, object_keys=stored)
