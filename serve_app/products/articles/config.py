"""Article images (`articles:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ArticlesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_placeholders: int = Field(default=16, ge=1, le=64, description="Placeholders per request.")
    style: str = Field(
        default="editorial illustration, clean composition, high detail", description="Added to every prompt."
    )
