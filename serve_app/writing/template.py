"""The deterministic, offline prompt writer: scene and alt text to an English prompt from templates,
Korean translated word by word through the glossary (serve_app.writing.glossary).

Given a machine translator (the Translator deployment, serve_app.writing.machine.MachineTranslator),
a piece of Korean with a word the glossary does not know goes to it whole instead of losing the
word; when it fails, the glossary's words are used and the unknown ones reported."""

from __future__ import annotations

from dataclasses import dataclass, field

from serve_app.errors import AppError
from serve_app.products.scenes.payload import Scene
from serve_app.writing.base import PromptWriter, Written
from serve_app.writing.glossary import Glossary, has_hangul, load_glossary, unwrap_alt
from serve_app.writing.machine import MachineTranslator

MAX_CHARACTERS_IN_PROMPT = 3
_GENDER = {0: "a man", 1: "a woman"}


@dataclass
class _Words:
    """What one writing call learned while translating its pieces."""

    dropped: list[str] = field(default_factory=list)
    machine_s: float = 0.0
    machine_used: bool = False
    failure: str | None = None


class TemplateWriter(PromptWriter):
    name = "template"

    def __init__(self, glossary: Glossary | None = None, machine: MachineTranslator | None = None) -> None:
        self.glossary = glossary or load_glossary()
        self.machine = machine

    async def _english(self, text: str, words: _Words) -> str:
        if not has_hangul(text):
            return text.strip()
        result = self.glossary.translate(text)
        if result.untranslated and self.machine is not None:
            try:
                english, seconds = await self.machine.translate(text)
            except AppError as exc:
                words.failure = f"{self.machine.name}: {exc.error_code}: {exc.message}"[:300]
            else:
                words.machine_s += seconds
                words.machine_used = True
                return english
        words.dropped.extend(word for word in result.untranslated if word not in words.dropped)
        return result.english

    def _written(self, text: str, source: str, words: _Words) -> Written:
        return Written(
            text=text,
            source=source,
            writer=self.machine.name if words.machine_used and self.machine else self.name,
            untranslated=words.dropped,
            fallback_reason=words.failure,
            machine_translated=words.machine_used,
            translate_s=round(words.machine_s, 4),
        )

    async def translate(self, text: str) -> Written:
        words = _Words()
        english = await self._english(text, words)
        return self._written(english, text, words)

    async def scene_prompt(self, scene: Scene) -> Written:
        """`<who>, <where and what happens>, <mood>`: the speakers of this scene (or the script's
        first characters) by gender and description, the narration, and the dialogue's emotions.
        The dialogue's words are speech, not picture, and are left out."""
        words = _Words()
        speakers = [audio.character for audio in scene.audios if audio.character]
        characters = scene.script_metadata.characters
        shown = [c for c in characters if c.name in speakers] or characters
        who = []
        for character in shown[:MAX_CHARACTERS_IN_PROMPT]:
            description = await self._english(character.description, words)
            who.append(f"{_GENDER[character.gender]}{f' ({description})' if description else ''}")
        setting = [await self._english(audio.text, words) for audio in scene.audios if audio.type == "narration"]
        moods = []
        for audio in scene.audios:
            if audio.emotion:
                mood = await self._english(audio.emotion, words)
                if mood and f"{mood} expression" not in moods:
                    moods.append(f"{mood} expression")
        parts = [", ".join(who), *setting, ", ".join(moods)]
        text = ", ".join(part for part in parts if part) or await self._english(scene.script_metadata.title, words)
        source = f"script {scene.script_metadata.script_id} scene {scene.scene_id}"
        return self._written(text or "a cinematic scene", source, words)

    async def article_prompt(self, alt: str) -> Written:
        words = _Words()
        text = await self._english(unwrap_alt(alt), words)
        return self._written(text, alt, words)

    async def edit_prompt(self, instruction: str) -> Written:
        """The instruction in English (glossary for Korean), spaces collapsed, no closing full stop:
        InstructPix2Pix was trained on short imperative instructions and reads them as given."""
        words = _Words()
        text = " ".join((await self._english(instruction, words)).split()).rstrip(".!。 ")
        return self._written(text or instruction.strip(), instruction, words)
