"""Textures to make (texture-generator-upgrade.md) and each one resolved at the edge."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.backends.config import Variant
from serve_app.patterns import NON_BLANK_PATTERN

TextureWord = Annotated[str, Field(min_length=1, max_length=60, pattern=NON_BLANK_PATTERN)]

OptTextureWord = Annotated[str, Field(max_length=60)] | None


class Texture(BaseModel):
    """One texture to make."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    product_type: TextureWord = Field(description="What the fabric is for: down jacket, sofa, 패딩 ...")
    material: TextureWord = Field(description="nylon, wool, denim, 가죽 ...")
    colour: TextureWord = Field(description="navy blue, 베이지 ...")
    pattern: OptTextureWord = Field(default=None, description="quilted, herringbone, plaid ... (optional)")
    finish: OptTextureWord = Field(default=None, description="matte, glossy, brushed ... (optional)")

    @field_validator("pattern", "finish")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def canonical(self) -> dict[str, str | None]:
        """Case- and space-insensitive parameters: the same texture however it was typed."""
        return {name: " ".join(value.lower().split()) if value else None for name, value in self.model_dump().items()}


class TextureItem(BaseModel):
    """One texture of a request, resolved at the edge: its prompt, seed and cache address."""

    texture: Texture
    prompt: str
    negative_prompt: str
    seed: int
    content_hash: str
    untranslated: list[str] = Field(default_factory=list)
    cached: dict[str, Any] | None = Field(default=None, description="The cache's entry, when it had this texture.")


class TexturePayload(BaseModel):
    kind: Literal["texture"] = "texture"
    items: list[TextureItem]
    tileable: bool = False
    variant: Variant | None = None
