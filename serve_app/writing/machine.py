"""The Translator deployment as a writer's helper: a call retried when its replica died, and an
answer checked like any writer's (English, not empty) before it is used."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from serve_app.errors import AppError, UpstreamError
from serve_app.retry import RetryConfig, call_with_retries
from serve_app.writing.glossary import has_hangul

Translate = Callable[[str], Awaitable[str]]


class TranslationFailed(UpstreamError):
    default_code = "TRANSLATION_FAILED"


class MachineTranslator:
    """A Translator call (retried when its replica died) whose answer is checked: English, not empty."""

    def __init__(self, call: Translate, model_id: str, retries: RetryConfig | None = None) -> None:
        self.call = call
        self.name = f"translator:{model_id}"
        self.retries = retries or RetryConfig()

    async def translate(self, text: str) -> tuple[str, float]:
        """(English, seconds waited); TranslationFailed when the model failed or its answer is unusable."""
        started = time.perf_counter()
        try:
            answer = await call_with_retries("translate", lambda: self.call(text), self.retries, [])
        except AppError:
            raise
        except Exception as exc:  # a replica that raised, or stayed unavailable through every retry
            raise TranslationFailed(f"The Translator failed: {type(exc).__name__}.") from exc
        english = " ".join(str(answer).split())
        if not english:
            raise TranslationFailed("The Translator answered an empty text.", error_code="TRANSLATION_EMPTY")
        if has_hangul(english):
            raise TranslationFailed("The Translator answered Korean, not English.", error_code="TRANSLATION_KOREAN")
        return english, time.perf_counter() - started
