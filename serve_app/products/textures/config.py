"""Texture images (`textures:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TexturesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_textures: int = Field(default=8, ge=1, le=32, description="Textures per request.")
    max_wait_s: float = Field(default=50.0, gt=0, le=55, description="How long a request waits before a 504.")
