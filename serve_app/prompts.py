"""The prompt builder every product's flow uses: caption + detected items + user text + LoRA
trigger words, worded by the product's own `prompts.yaml` (the desk's says what the source spec
asks: a realistic photo that aesthetically matches and complements the desk's tone, lighting,
colour and style, plus its fixed negatives). Parts are joined with ", " in this order:

    trigger words, user text, subject, items, style, quality, caption

so the words Stable Diffusion should weigh most come first (the text encoder also truncates from
the end). The whole prompt must fit CLIP's 77-token context; when the estimate is over
`max_tokens`, parts are trimmed in `trim_order` (caption word by word, items one by one from the
end, the other parts whole). Trigger words and the user's text are never trimmed.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from serve_app.stages import DeskItem

TRIMMABLE_PARTS = ("caption", "items", "quality", "style", "subject")

# CLIP's pre-tokenizer splits text into letter runs, single digits and punctuation runs.
_CLIP_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\w\s]+|_+")
_SPLIT_NEGATIVES = re.compile(r"[,;\n]+")


class PromptTemplates(BaseModel):
    """A product's `prompts.yaml`."""

    subject: str = Field(default="a realistic photo of a desk setup", description="What the image is.")
    style: str = Field(
        default="aesthetically matching and complementing the desk's tone, lighting, colour and style",
        description="How it relates to the original desk.",
    )
    items: str = Field(default="with {items}", description="Item list part; {items} is a comma list.")
    caption: str = Field(default="{caption}", description="Caption part; {caption} is the captioner's text.")
    quality: str = Field(default="natural lighting, high detail, photorealistic", description="Quality tags.")
    negative: list[str] = Field(default_factory=list, description="Negatives always present, in order.")
    max_tokens: int = Field(default=75, ge=8, description="Budget for the estimated CLIP tokens.")
    trim_order: list[str] = Field(
        default_factory=lambda: list(TRIMMABLE_PARTS), description="Parts trimmed first when over budget."
    )


class BuiltPrompt(BaseModel):
    prompt: str = Field(description="Positive prompt for the generator.")
    negative_prompt: str = Field(description="Template negatives plus the user's, deduplicated.")
    estimated_tokens: int = Field(default=0, description="estimate_clip_tokens(prompt).")
    trimmed: list[str] = Field(default_factory=list, description="Parts shortened or dropped for the budget.")


@lru_cache(maxsize=16)
def load_prompt_templates(path: Path) -> PromptTemplates:
    """A product's templates (its folder's prompts.yaml), parsed once per process."""
    return PromptTemplates.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def estimate_clip_tokens(text: str) -> int:
    """Estimate CLIP BPE tokens without a tokenizer (start/end tokens not included).

    Heuristic: split like CLIP's pre-tokenizer; an ASCII letter run costs one token per 7 letters
    (common English words are single tokens, long or rare ones split), a non-ASCII letter (Hangul)
    2 tokens (byte-level BPE), a digit 1, a punctuation run or contraction 1. It errs on the high
    side for long words, which only makes trimming slightly early.
    """
    total = 0
    for piece in _CLIP_PIECES.findall(text.lower()):
        if piece.isalpha():
            total += math.ceil(len(piece) / 7) if piece.isascii() else 2 * len(piece)
        else:
            total += 1
    return total


def _unique(terms: list[str]) -> list[str]:
    """Stripped, non-empty terms, first occurrence kept (case-insensitive)."""
    seen: set[str] = set()
    out: list[str] = []
    for term in terms:
        term = " ".join(term.split())
        if term and term.lower() not in seen:
            seen.add(term.lower())
            out.append(term)
    return out


def merge_negatives(template_negatives: list[str], user_negative: str | None) -> str:
    """Template negatives, then the user's (split on commas), without duplicates."""
    user_terms = _SPLIT_NEGATIVES.split(user_negative) if user_negative else []
    return ", ".join(_unique([*template_negatives, *user_terms]))


def build_prompt(
    caption: str,
    items: list[DeskItem],
    user_prompt: str,
    trigger_words: list[str],
    templates: PromptTemplates,
    user_negative: str | None = None,
) -> BuiltPrompt:
    """The generator's prompt and negative prompt, within the token budget (see module doc)."""
    t = templates
    # 1. Parts; trimmable ones are lists of pieces so they can shrink one piece at a time.
    item_names = _unique([item.english for item in items])
    caption_words = " ".join((caption or "").split()).rstrip(".").split()
    pieces: dict[str, list[str]] = {
        "subject": [t.subject] if t.subject else [],
        "items": item_names,
        "style": [t.style] if t.style else [],
        "quality": [t.quality] if t.quality else [],
        "caption": caption_words,
    }
    fixed = [*_unique(trigger_words), " ".join((user_prompt or "").split())]

    def render() -> str:
        parts = list(fixed)
        parts += pieces["subject"]
        if pieces["items"]:
            parts.append(t.items.format(items=", ".join(pieces["items"])))
        parts += pieces["style"] + pieces["quality"]
        if pieces["caption"]:
            parts.append(t.caption.format(caption=" ".join(pieces["caption"])))
        return ", ".join(p for p in parts if p)

    # 2. Trim lowest priority first until the estimate fits.
    prompt = render()
    trimmed: list[str] = []
    for part in t.trim_order:
        if part not in pieces:
            continue
        while pieces[part] and estimate_clip_tokens(prompt) > t.max_tokens:
            # Caption and items shrink piece by piece; the others go whole.
            pieces[part] = pieces[part][:-1] if part in ("caption", "items") else []
            if part not in trimmed:
                trimmed.append(part)
            prompt = render()
    return BuiltPrompt(
        prompt=prompt,
        negative_prompt=merge_negatives(t.negative, user_negative),
        estimated_tokens=estimate_clip_tokens(prompt),
        trimmed=trimmed,
    )
