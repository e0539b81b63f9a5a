"""Desk item extraction: which shopping categories a caption and the user's text mention.

The vocabulary lives in configs/desk_items.yaml. Matching rules (kept simple on purpose):

1. Every synonym of an item, plus its Korean `name` and its `english` name, is a pattern.
2. ASCII patterns match case-insensitively as whole words: no ASCII letter or digit may touch
   them, so "keyboard가" matches but "mousepads" does not match "mouse"; a trailing plural
   "s"/"es" is allowed; the words of a phrase may be separated by spaces or hyphens.
3. Patterns with Hangul match as substrings, because Korean attaches particles without a space
   ("마우스를", "키보드가").
4. Overlapping matches are resolved longest-first: "monitor arm" gives 모니터암 and the "monitor"
   inside it is not counted, while a "monitor" elsewhere in the text still is. Likewise
   "마우스패드" gives 장패드, not 마우스.
5. Items come in order of first appearance, caption before user text, each item once, at most
   `max_items`.

A colour word right before a match ("white keyboard", "블랙 마우스") is put in front of the item's
shopping query ("화이트 기계식 키보드"); that is the only query enrichment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, PrivateAttr

from serve_app.paths import load_yaml_config
from serve_app.stages import DeskItem

DEFAULT_VOCABULARY_FILE = "desk_items.yaml"

# Colour words (English and Korean) -> the Korean adjective shopping queries use.
COLOUR_WORDS: dict[str, str] = {
    "white": "화이트",
    "black": "블랙",
    "gray": "그레이",
    "grey": "그레이",
    "silver": "실버",
    "pink": "핑크",
    "blue": "블루",
    "navy": "네이비",
    "green": "그린",
    "red": "레드",
    "beige": "베이지",
    "brown": "브라운",
    "wooden": "원목",
    "wood": "원목",
    "흰색": "화이트",
    "하얀": "화이트",
    "화이트": "화이트",
    "검은": "블랙",
    "검정": "블랙",
    "검정색": "블랙",
    "블랙": "블랙",
    "회색": "그레이",
    "그레이": "그레이",
    "실버": "실버",
    "핑크": "핑크",
    "분홍": "핑크",
    "파란": "블루",
    "파란색": "블루",
    "블루": "블루",
    "네이비": "네이비",
    "초록": "그린",
    "그린": "그린",
    "빨간": "레드",
    "레드": "레드",
    "베이지": "베이지",
    "브라운": "브라운",
    "원목": "원목",
}

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_WORD_BEFORE = re.compile(r"([^\W_]+)\W*$")


class VocabularyItem(BaseModel):
    """One shopping category and the words that mean it."""

    name: str = Field(description="Korean shopping category, e.g. 마우스.")
    english: str = Field(description="Canonical English name, e.g. mouse.")
    query: str = Field(description="Shopping search query.")
    synonyms: list[str] = Field(default_factory=list, description="English/Korean words and phrases.")

    def to_desk_item(self, colour: str | None = None) -> DeskItem:
        query = f"{colour} {self.query}" if colour and colour not in self.query else self.query
        return DeskItem(name=self.name, english=self.english, query=query)


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    item_index: int


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    item_index: int


class ItemVocabulary(BaseModel):
    """The desk item vocabulary with its compiled patterns."""

    items: list[VocabularyItem]
    fallback_items: list[str] = Field(default_factory=list, description="Item names used when none is found.")
    _patterns: list[_Pattern] = PrivateAttr(default_factory=list)

    def model_post_init(self, __context: object) -> None:
        self._patterns = [
            _Pattern(_compile(term), index)
            for index, item in enumerate(self.items)
            for term in sorted({t.strip().lower() for t in (*item.synonyms, item.name, item.english) if t.strip()})
        ]

    def by_name(self, name: str) -> VocabularyItem | None:
        return next((item for item in self.items if item.name == name), None)

    def matches(self, text: str) -> list[_Match]:
        """Non-overlapping matches in `text`, longest first on overlap, returned in text order."""
        lowered = text.lower()
        found = [_Match(m.start(), m.end(), p.item_index) for p in self._patterns for m in p.regex.finditer(lowered)]
        found.sort(key=lambda m: (-(m.end - m.start), m.start))
        kept: list[_Match] = []
        for match in found:
            if all(match.end <= k.start or match.start >= k.end for k in kept):
                kept.append(match)
        return sorted(kept, key=lambda m: m.start)


def _compile(term: str) -> re.Pattern[str]:
    """A whole-word regex for ASCII terms, a substring regex for terms with Hangul."""
    words = [re.escape(w) for w in re.split(r"[\s\-]+", term) if w]
    body = r"[\s\-]+".join(words)
    if _HANGUL.search(term):
        return re.compile(body)
    return re.compile(rf"(?<![a-z0-9]){body}(?:e?s)?(?![a-z0-9])")


def _colour_before(text: str, start: int) -> str | None:
    """The Korean colour adjective for the word right before position `start`, if it is a colour."""
    match = _WORD_BEFORE.search(text[:start].lower())
    return COLOUR_WORDS.get(match.group(1)) if match else None


@lru_cache(maxsize=8)
def load_item_vocabulary(path: str | None = None) -> ItemVocabulary:
    """The vocabulary from configs/desk_items.yaml (or a YAML file at `path`), parsed once per process."""
    if path is None:
        data = load_yaml_config(DEFAULT_VOCABULARY_FILE)
    else:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return ItemVocabulary.model_validate(data)


def extract_items(
    caption: str,
    user_text: str = "",
    vocab: ItemVocabulary | None = None,
    max_items: int = 8,
) -> list[DeskItem]:
    """Desk items mentioned in the caption, then in the user's text; [] when none (see module doc)."""
    vocab = vocab or load_item_vocabulary()
    result: dict[str, DeskItem] = {}
    for text in (caption or "", user_text or ""):
        for match in vocab.matches(text):
            item = vocab.items[match.item_index]
            if item.name in result:
                continue
            result[item.name] = item.to_desk_item(_colour_before(text, match.start))
            if len(result) >= max_items:
                return list(result.values())
    return list(result.values())


def fallback_items(vocab: ItemVocabulary | None = None) -> list[DeskItem]:
    """The YAML's `fallback_items` (unknown names skipped): what to shop for when nothing was found."""
    vocab = vocab or load_item_vocabulary()
    found = (vocab.by_name(name) for name in vocab.fallback_items)
    return [item.to_desk_item() for item in found if item is not None]
