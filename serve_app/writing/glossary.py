"""Word-by-word Korean -> English from configs/glossary.ko-en.yaml: the offline translator.

Stable Diffusion's CLIP text encoder is English: Hangul reaches it as unknown tokens, so a Korean
prompt steers nothing. Without an LLM configured, each Hangul word is looked up (whole, then
with a particle or ending stripped, then split greedily into known stems); what is still unknown
is left out of the English text and reported, never passed through silently.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from serve_app.paths import CONFIGS_DIR

HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
_TOKEN = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]+|[A-Za-z0-9][A-Za-z0-9'\-]*|[^\s]")
_PUNCT_KEEP = {",", ".", ";", ":", "!", "?"}
_BRACKETED = re.compile(r"^\s*\[\s*(?:이미지\s*설명|image(?:\s+description)?)\s*:\s*(.*?)\s*\]\s*$", re.IGNORECASE)


def has_hangul(text: str) -> bool:
    return bool(HANGUL.search(text))


def unwrap_alt(alt: str) -> str:
    """The description inside the source spec's `[이미지 설명: ...]` wrapper, or the text as it is."""
    match = _BRACKETED.match(alt)
    return match.group(1) if match else alt.strip()


class GlossaryResult(BaseModel):
    english: str
    untranslated: list[str] = Field(default_factory=list)


class Glossary(BaseModel):
    words: dict[str, str]
    suffixes: list[str] = Field(default_factory=list)
    stopwords: list[str] = Field(default_factory=list)

    def model_post_init(self, __context: object) -> None:
        self._suffixes = sorted(set(self.suffixes), key=len, reverse=True)
        self._stop = set(self.stopwords)
        self._longest = max((len(word) for word in self.words), default=1)

    def _word(self, token: str) -> list[str] | None:
        """English for one Hangul word, or None."""
        if token in self._stop:
            return []
        if token in self.words:
            return [self.words[token]]
        # The longest known stem wins (미래적인: 미래적 "futuristic" over 미래 "future").
        for suffix in sorted(self._suffixes, key=len):
            if token.endswith(suffix) and len(token) > len(suffix):
                stem = token[: -len(suffix)]
                if stem in self._stop:
                    return []
                if stem in self.words:
                    return [self.words[stem]]
        return self._compound(token)

    def _compound(self, token: str) -> list[str] | None:
        """Greedy longest-first split into known stems (나무책상 -> wood desk); the last piece may
        carry a particle. None unless the whole word is covered."""
        out: list[str] = []
        rest = token
        while rest:
            for size in range(min(len(rest), self._longest), 0, -1):
                piece = rest[:size]
                if piece in self.words and size > 1:
                    out.append(self.words[piece])
                    rest = rest[size:]
                    break
            else:
                if out and rest in self._suffixes:
                    return out
                return None
        return out or None

    def translate(self, text: str) -> GlossaryResult:
        """English words in the text's order; ASCII words and numbers kept as they are."""
        words: list[str] = []
        unknown: list[str] = []
        for token in _TOKEN.findall(text):
            if HANGUL.match(token):
                english = self._word(token)
                if english is None:
                    unknown.append(token)
                else:
                    words.extend(english)
            elif token in _PUNCT_KEEP:
                if words and words[-1] not in _PUNCT_KEEP:
                    words.append(token)
            elif token[0].isalnum():
                words.append(token)
        while words and words[-1] in _PUNCT_KEEP:
            words.pop()
        deduped: list[str] = []
        for word in words:
            if not deduped or deduped[-1] != word:
                deduped.append(word)
        english = " ".join(deduped)
        english = re.sub(r"\s+([,.;:!?])", r"\1", english)
        return GlossaryResult(english=english, untranslated=list(dict.fromkeys(unknown)))


@lru_cache(maxsize=4)
def load_glossary(path: str | None = None) -> Glossary:
    file = Path(path) if path else CONFIGS_DIR / "glossary.ko-en.yaml"
    with file.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    return Glossary.model_validate({**raw, "words": {str(k): str(v) for k, v in raw["words"].items()}})
