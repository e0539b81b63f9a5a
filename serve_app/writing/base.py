"""The prompt writer interface: scene -> English image prompt, alt text -> prompt, Korean -> English."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel, Field

from serve_app.products.scenes.payload import Scene


class Written(BaseModel):
    """English text a writer produced, and how."""

    text: str = Field(description="English; what goes to the image model.")
    source: str = Field(description="What it was written from.")
    writer: str = Field(description="template (the glossary), chat:<model> or translator:<model>.")
    untranslated: list[str] = Field(default_factory=list, description="Korean words every writer dropped.")
    fallback_reason: str | None = Field(default=None, description="Why the writers before this one were not used.")
    machine_translated: bool = Field(default=False, description="Some Korean went through the Translator model.")
    translate_s: float = Field(default=0.0, description="Seconds spent waiting for the Translator.")

    def record(self) -> dict[str, object]:
        """What a task's result says about the writing."""
        out: dict[str, object] = {"writer": self.writer}
        if self.machine_translated:
            out["machine_translated"] = True
        if self.untranslated:
            out["untranslated"] = self.untranslated
        if self.fallback_reason:
            out["writer_fallback"] = self.fallback_reason
        return out


class PromptWriter(ABC):
    name: str

    @abstractmethod
    async def translate(self, text: str) -> Written:
        """`text` in English for the SD text encoder (unchanged, no call made, when it has no Hangul)."""

    @abstractmethod
    async def scene_prompt(self, scene: Scene) -> Written:
        """An English image prompt describing the scene: who is in it, where, the mood."""

    @abstractmethod
    async def article_prompt(self, alt: str) -> Written:
        """An English image prompt for an article image described by `alt`."""

    @abstractmethod
    async def edit_prompt(self, instruction: str) -> Written:
        """An instruction edit's prompt for InstructPix2Pix: one short, concrete English instruction."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
