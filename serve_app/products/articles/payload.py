"""Article placeholders `{index, alt}` (image-generation-storage-guide.md), alt text often Korean."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.backends.config import Variant
from serve_app.patterns import NON_BLANK_PATTERN


class Placeholder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: Annotated[int, Field(ge=0, le=10_000)] = Field(description="Where the image goes in the article.")
    alt: Annotated[str, Field(min_length=1, max_length=1000, pattern=NON_BLANK_PATTERN)] = Field(
        # "the seed" here is the source spec: this text is in the OpenAPI document, kept as published
        description="The image's description (alt text), Korean or English; the seed wraps it as '[이미지 설명: ...]'."
    )


class ArticlePayload(BaseModel):
    kind: Literal["article"] = "article"
    placeholders: list[Placeholder]
    style: str = Field(default="", description="Words added to every placeholder's prompt.")
    variant: Variant | None = None
