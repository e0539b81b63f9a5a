"""Translator deployment: Korean text -> English (MarianMT), batched across concurrent requests.

A thin Serve shell around `TranslationEngine`. The prompt writer calls it when the glossary does not
know a word (serve_app.writing.chain). Replicas, CPU/GPU shares, `max_ongoing_requests` (keep it
>= max_batch_size) and `user_config` live in serve_config.yaml, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve

from serve_app.batching import DEFAULT_BATCH_WAIT_TIMEOUT_S, DEFAULT_MAX_BATCH_SIZE, ModelReplica
from serve_app.presets import Preset


@serve.deployment
class Translator(ModelReplica):
    """Translates Korean to English with the preset's translator (tiny random-weight Marian for `tiny`)."""

    batched = "_translate_batch"

    def __init__(self, preset: Preset, model_cache_dir: str) -> None:
        from serve_app.models.device import configure_replica_process
        from serve_app.models.translation import TranslationEngine

        configure_replica_process()
        self.hold(
            TranslationEngine(preset.translator, Path(model_cache_dir), preset.device, preset.dtype), "translator"
        )

    async def translate(self, text: str) -> str:
        """The English of one text (may be empty: the caller judges it)."""
        return await self._translate_batch(text)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S)
    async def _translate_batch(self, texts: list[str]) -> list[str]:
        return await self.model_call(self.engine.translate, texts)

    def info(self) -> dict[str, Any]:
        return {
            **self.engine.info(),
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }
