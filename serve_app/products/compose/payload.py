"""A composition (enhancement-api-options.md, `/api/compose-dress`): the person photo (the task's
input) dressed in the garment photo (its second input image)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ComposePayload(BaseModel):
    kind: Literal["compose"] = "compose"
    prompt: str | None = Field(default=None, description="The caller's own words, added to the instruction.")
