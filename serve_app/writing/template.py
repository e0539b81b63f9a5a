"""The deterministic, offline prompt writer: scene and alt text to an English prompt from templates,
Korean translated word by word through the glossary (serve_app.writing.glossary)."""

from __future__ import annotations

from serve_app.products.scenes.payload import Scene
from serve_app.writing.base import PromptWriter, Written
from serve_app.writing.glossary import Glossary, has_hangul, load_glossary, unwrap_alt

MAX_CHARACTERS_IN_PROMPT = 3
_GENDER = {0: "a man", 1: "a woman"}


class TemplateWriter(PromptWriter):
    name = "template"

    def __init__(self, glossary: Glossary | None = None) -> None:
        self.glossary = glossary or load_glossary()

    def _english(self, text: str, dropped: list[str]) -> str:
        if not has_hangul(text):
            return text.strip()
        result = self.glossary.translate(text)
        dropped.extend(word for word in result.untranslated if word not in dropped)
        return result.english

    async def translate(self, text: str) -> Written:
        dropped: list[str] = []
        english = self._english(text, dropped)
        return Written(text=english, source=text, writer=self.name, untranslated=dropped)

    async def scene_prompt(self, scene: Scene) -> Written:
        """`<who>, <where and what happens>, <mood>`: the speakers of this scene (or the script's
        first characters) by gender and description, the narration, and the dialogue's emotions.
        The dialogue's words are speech, not picture, and are left out."""
        dropped: list[str] = []
        speakers = [audio.character for audio in scene.audios if audio.character]
        characters = scene.script_metadata.characters
        shown = [c for c in characters if c.name in speakers] or characters
        who = []
        for character in shown[:MAX_CHARACTERS_IN_PROMPT]:
            description = self._english(character.description, dropped)
            who.append(f"{_GENDER[character.gender]}{f' ({description})' if description else ''}")
        setting = [self._english(audio.text, dropped) for audio in scene.audios if audio.type == "narration"]
        moods = []
        for audio in scene.audios:
            if audio.emotion:
                mood = self._english(audio.emotion, dropped)
                if mood and f"{mood} expression" not in moods:
                    moods.append(f"{mood} expression")
        parts = [", ".join(who), *setting, ", ".join(moods)]
        text = ", ".join(part for part in parts if part) or self._english(scene.script_metadata.title, dropped)
        source = f"script {scene.script_metadata.script_id} scene {scene.scene_id}"
        return Written(text=text or "a cinematic scene", source=source, writer=self.name, untranslated=dropped)

    async def article_prompt(self, alt: str) -> Written:
        dropped: list[str] = []
        text = self._english(unwrap_alt(alt), dropped)
        return Written(text=text, source=alt, writer=self.name, untranslated=dropped)

    async def edit_prompt(self, instruction: str) -> Written:
        """The instruction in English (glossary for Korean), spaces collapsed, no closing full stop:
        InstructPix2Pix was trained on short imperative instructions and reads them as given."""
        dropped: list[str] = []
        text = " ".join(self._english(instruction, dropped).split()).rstrip(".!。 ")
        return Written(text=text or instruction.strip(), source=instruction, writer=self.name, untranslated=dropped)
