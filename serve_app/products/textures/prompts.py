"""Texture prompts and their content address (source spec texture-generator-upgrade.md).

A texture is a product type, a material and a colour, optionally a pattern and a finish. Its
prompt and negative prompt come from this product's prompts.yaml, deterministically (Korean words go
through the glossary at the edge; the flow writes again, through the prompt writer's chain, a
texture with a word the glossary does not know), so identical parameters give an identical
prompt, an identical seed (derived from the parameters when none is given) and therefore one
content hash: the key of the texture cache. The hash also covers everything else that shapes the
image (size, steps, guidance, tiling, the backend chain and its models) and the caller's scope, so
one API key never gets another's image from the cache.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from serve_app.products.textures.payload import Texture
from serve_app.writing.glossary import has_hangul, load_glossary


class TextureTemplates(BaseModel):
    prompt: str
    tileable_suffix: str = ""
    negative: list[str] = Field(default_factory=list)
    materials: dict[str, str] = Field(default_factory=dict)
    products: dict[str, str] = Field(default_factory=dict)


@lru_cache(maxsize=2)
def load_texture_templates(path: str | None = None) -> TextureTemplates:
    file = Path(__file__).with_name("prompts.yaml") if path is None else path
    with open(file, encoding="utf-8") as handle:
        return TextureTemplates.model_validate(yaml.safe_load(handle))


class TexturePrompt(BaseModel):
    prompt: str
    negative_prompt: str
    untranslated: list[str] = Field(default_factory=list)


def _english(text: str | None, dropped: list[str], known: dict[str, str]) -> str:
    if not text:
        return ""
    if not has_hangul(text):
        return text
    if text in known:
        return known[text]
    result = load_glossary().translate(text)
    dropped.extend(result.untranslated)
    return result.english


def korean_words(texture: Texture) -> list[str]:
    """The texture's parameters that are Korean, in order."""
    return [value for value in texture.model_dump().values() if value and has_hangul(value)]


def texture_prompt(
    texture: Texture,
    *,
    tileable: bool,
    templates: TextureTemplates | None = None,
    english: dict[str, str] | None = None,
) -> TexturePrompt:
    """The macro-photo fabric prompt of prompts.yaml for `texture`; `english`: Korean parameters
    already translated (by the prompt writer's chain), used before the glossary."""
    templates = templates or load_texture_templates()
    known = english or {}
    canonical = texture.canonical()
    dropped: list[str] = []
    material = templates.materials.get(canonical["material"] or "") or _english(texture.material, dropped, known)
    product = templates.products.get(canonical["product_type"] or "") or _english(texture.product_type, dropped, known)
    words = {
        "colour": _english(texture.colour, dropped, known),
        "finish": _english(texture.finish, dropped, known),
        "material": material,
        "pattern": _english(texture.pattern, dropped, known),
        "product": product,
    }
    prompt = templates.prompt.format(**words)
    if not words["pattern"]:
        prompt = prompt.replace(",  pattern,", ",").replace(", pattern,", ",")
    prompt = re.sub(r"\s+", " ", prompt).replace(" ,", ",").strip(" ,")
    if tileable and templates.tileable_suffix:
        prompt = f"{prompt}, {templates.tileable_suffix}"
    return TexturePrompt(prompt=prompt, negative_prompt=", ".join(templates.negative), untranslated=dropped)


def derived_seed(texture: Texture) -> int:
    """The seed of a texture asked without one: from its parameters, so asking again is a cache hit."""
    digest = hashlib.sha256(json.dumps(texture.canonical(), sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:6], "big")


def content_hash(scope: str, texture: Texture, settings: dict[str, Any]) -> str:
    """The texture cache's key: the caller's scope, the texture, and every setting that shapes the image."""
    material = {"scope": scope, "texture": texture.canonical(), "settings": settings}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
