"""Article placeholders `{index, alt, tag}` (image-generation-storage-guide.md), alt text often Korean;
read as a Spring/Jackson client sends them (`SeedBody`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from serve_app.backends.config import Variant
from serve_app.lenient import SeedBody
from serve_app.patterns import NON_BLANK_PATTERN


class Placeholder(SeedBody):
    index: Annotated[int, Field(ge=0, le=10_000)] = Field(description="Where the image goes in the article.")
    alt: Annotated[str, Field(min_length=1, max_length=1000, pattern=NON_BLANK_PATTERN)] = Field(
        # "the seed" here is the source spec: this text is in the OpenAPI document, kept as published
        description="The image's description (alt text), Korean or English; the seed wraps it as '[이미지 설명: ...]'."
    )
    tag: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="The caller's own label of the placeholder (the seed's `tag`), echoed in the result."
    )


class ArticlePayload(BaseModel):
    kind: Literal["article"] = "article"
    placeholders: list[Placeholder]
    style: str = Field(default="", description="Words added to every placeholder's prompt.")
    variant: Variant | None = None
