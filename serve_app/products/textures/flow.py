"""Texture images (task kind `texture`; source spec texture-generator-upgrade.md).

The edge resolved each texture into its prompt, seed and content hash, and answered the ones the
cache had. This flow makes the rest: every missing texture through the `texture` backend chain at
once (the Generator batches them; `tileable` pads its convolutions circularly for a seamless
tile), stores each image and records it in the content-addressed cache, so the same parameters
never generate twice. A texture that fails is reported on its own; the task fails only when no
texture has an image.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from serve_app.backends import variant_chain
from serve_app.errors import AppError, GenerationFailed
from serve_app.flows.kit import Flow, FlowDeps, FlowOutcome, Run, failed_fields, item_error
from serve_app.products.textures.payload import TextureItem, TexturePayload
from serve_app.products.textures.prompts import korean_words, texture_prompt
from serve_app.tasks.records import Stage

KIND = "texture"


class TextureCache(Protocol):
    def cache_textures(self, task_id: str, entries: dict[str, tuple[str, dict[str, Any]]]) -> None: ...


def cached_entry(item: TextureItem) -> dict[str, Any]:
    """A cache hit as a result entry (the image another task made for the same parameters)."""
    return {**(item.cached or {}), **item.texture.model_dump(exclude_none=True), "cache_hit": True}


class TextureFlow(Flow[TexturePayload]):
    payload = TexturePayload

    def __init__(self, deps: FlowDeps, cache: TextureCache) -> None:
        super().__init__(deps)
        self.cache = cache

    async def steps(self, run: Run[TexturePayload]) -> FlowOutcome:
        payload, result, request = run.payload, run.result, run.request
        entries: list[dict[str, Any]] = [
            cached_entry(item) if item.cached else {**item.texture.model_dump(exclude_none=True), "cache_hit": False}
            for item in payload.items
        ]
        result["textures"] = entries
        if payload.variant is not None:
            result["variant"] = payload.variant.name
        missing = [position for position, item in enumerate(payload.items) if not item.cached]

        # A texture with a Korean word the glossary did not know: its words through the writer chain.
        items = list(payload.items)
        if any(items[position].untranslated for position in missing):
            async with run.stage(Stage.writing, "write"):
                for position in missing:
                    if items[position].untranslated:
                        items[position] = await self._rewritten(run, items[position], entries[position], payload)

        async with run.stage(Stage.generating, "generate"):
            specs = []
            for position in missing:
                item = items[position]
                spec = request.generation_spec(
                    item.prompt, item.negative_prompt, None, run.record.task_id, seed=item.seed
                )
                specs.append(spec.model_copy(update={"tileable": payload.tileable}))
            outcomes = await run.generate_each(run.chain("texture", variant_chain(payload)), specs)

        cache: dict[str, tuple[str, dict[str, Any]]] = {}
        async with run.stage(Stage.storing):
            for position, outcome in zip(missing, outcomes, strict=True):
                item, entry = items[position], entries[position]
                entry.update(prompt=item.prompt, seed=item.seed)
                if isinstance(outcome, AppError):
                    entry.update(item_error(outcome))
                    continue
                entry.update(outcome.image.result_fields(), backends_failed=failed_fields(outcome) or None)
                metadata = {"task_id": run.record.task_id, "kind": KIND, **entry, "tileable": payload.tileable}
                try:
                    made = await run.store(outcome.image, metadata)
                except AppError as exc:
                    entry.update(error_code=exc.error_code, message=exc.message)
                    continue
                entry.update(url=made.url, key=made.key)
                cache[item.content_hash] = (made.key, {k: v for k, v in entry.items() if k != "cache_hit"})
            await asyncio.to_thread(self.cache.cache_textures, run.record.task_id, cache)

        made_entries = [entry for entry in entries if entry.get("url")]
        result.update(
            cache_hits=sum(1 for item in items if item.cached),
            failed_textures=sum(1 for entry in entries if "error_code" in entry),
            cost_usd=round(sum(entry.get("cost_usd") or 0.0 for entry in entries if not entry["cache_hit"]), 6),
            tileable=payload.tileable,
        )
        run.record_timings()
        if not made_entries:
            raise GenerationFailed(f"None of the {len(entries)} textures got an image; each says why.")
        result.update(
            processed_image_url=made_entries[0]["url"],
            images=[{"url": e["url"], "key": e.get("key"), "seed": e.get("seed")} for e in made_entries],
            output_format=request.output_format,
        )
        return run.outcome()

    async def _rewritten(
        self, run: Run[TexturePayload], item: TextureItem, entry: dict[str, Any], payload: TexturePayload
    ) -> TextureItem:
        """`item` with its prompt written again from its Korean words' English by the writer chain
        (the Translator for a word the glossary does not know); what was used goes in `entry`."""
        english: dict[str, str] = {}
        spent = 0.0
        for words in korean_words(item.texture):
            written = await self.deps.writer.translate(words)
            run.time_translation(written)
            if not written.untranslated and written.text:
                english[words] = written.text
            if written.machine_translated:
                entry["machine_translated"] = True
                spent += written.translate_s
            if written.fallback_reason:
                entry["writer_fallback"] = written.fallback_reason
        if spent:
            entry["timings"] = {"translate": round(spent, 4)}
        prompt = texture_prompt(item.texture, tileable=payload.tileable, english=english)
        if prompt.untranslated:
            entry["untranslated"] = prompt.untranslated
        return item.model_copy(update={"prompt": prompt.prompt, "untranslated": prompt.untranslated})
