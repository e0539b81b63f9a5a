"""An instruction edit (enhancement-api-options.md): the task's input image, changed as told."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.backends.config import Variant


class EditPayload(BaseModel):
    """An instruction edit: the uploaded image (the task's input) changed as the instruction says."""

    kind: Literal["edit"] = "edit"
    instruction: str = Field(description="As the caller wrote it, Korean or English.")
    image_guidance_scale: float
    rewrite: bool = Field(description="The prompt writer rewrites the instruction into an English edit prompt.")
    restore_faces: bool = Field(default=False, description="Face restoration after the edit.")
    chain: list[str] | None = Field(
        default=None, description="The backends this request asked for (backend=local|cloud); None: the edit chain."
    )
    variant: Variant | None = None
