"""The writers in order: the chat writer (when configured), the glossary, the Translator model.

1. The chat writer, when `prompt_writer.provider` is chat: it writes the prompt from the source
   (a scene's whole description, an article's alt text), as it did before the Translator existed.
2. The glossary (TemplateWriter): deterministic, free. When it knows every Korean word, its text
   is the answer and nothing else is called.
3. The template writer again, the glossary applied first and every piece of Korean that still has
   a word the glossary does not know translated whole by the Translator deployment (MarianMT).
   Its answer is checked like any writer's: an empty translation or one that still has Hangul is
   that writer failing.

Each failure is recorded (`writer_fallback`) and the next writer tried. When all fail, the
glossary's words are what is left, the unknown ones reported as `untranslated`; a product with
no English left fails that item with PROMPT_UNTRANSLATABLE.
"""

from __future__ import annotations

from typing import Any

from serve_app.errors import AppError
from serve_app.products.scenes.payload import Scene
from serve_app.writing.base import PromptWriter, Written
from serve_app.writing.machine import MachineTranslator
from serve_app.writing.template import TemplateWriter


class WriterChain(PromptWriter):
    """The chat writer, then the glossary, then machine translation: the first that succeeds answers."""

    def __init__(
        self,
        glossary: TemplateWriter,
        chat: PromptWriter | None = None,
        machine: MachineTranslator | None = None,
    ) -> None:
        self.glossary = glossary
        self.chat = chat
        self.machine = TemplateWriter(glossary.glossary, machine) if machine is not None else None
        self.name = chat.name if chat is not None else glossary.name

    async def _first(self, method: str, arg: Any) -> Written:
        reasons: list[str] = []
        if self.chat is not None:
            try:
                answer: Written = await getattr(self.chat, method)(arg)
                return answer
            except AppError as exc:
                reasons.append(f"{self.chat.name}: {exc.error_code}: {exc.message}"[:300])
        # The template writer with the Translator behind it asks it only for the pieces with a word
        # the glossary does not know: the glossary's own text when it knows every word.
        written: Written = await getattr(self.machine or self.glossary, method)(arg)
        if written.fallback_reason:
            reasons.append(written.fallback_reason)
        return written.model_copy(update={"fallback_reason": "; ".join(reasons) or None})

    async def translate(self, text: str) -> Written:
        return await self._first("translate", text)

    async def scene_prompt(self, scene: Scene) -> Written:
        return await self._first("scene_prompt", scene)

    async def article_prompt(self, alt: str) -> Written:
        return await self._first("article_prompt", alt)

    async def edit_prompt(self, instruction: str) -> Written:
        return await self._first("edit_prompt", instruction)

    async def aclose(self) -> None:
        if self.chat is not None:
            await self.chat.aclose()
