"""Scene images (`scenes:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ScenesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora: str | None = Field(default=None, description="Style LoRA every scene uses (a preset LoRA name).")
    max_wait_s: float = Field(
        default=50.0, gt=0, le=55, description="How long the source spec's synchronous call waits before a 504."
    )
