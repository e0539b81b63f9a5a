"""Composing a person and a garment (`compose:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_INSTRUCTION = (
    "Dress the person in the first image in the garment shown in the second image. Keep the person's face, "
    "hair, body shape, pose and the background of the first image unchanged; fit the garment naturally, "
    "with realistic folds, fabric texture, lighting and shadows. Answer with one photorealistic image."
)


class ComposeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(
        default=DEFAULT_INSTRUCTION,
        min_length=1,
        description="What the compose backends are told; a request's own `prompt` is added after it.",
    )
    max_wait_s: float = Field(default=50.0, gt=0, le=55, description="How long a request waits before a 504.")
