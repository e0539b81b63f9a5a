"""Instruction edits (`edits:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serve_app.backends.config import FaceRestorationConfig
from serve_app.writing.analysis import EditAnalysisConfig


class EditsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    face_restoration: FaceRestorationConfig = Field(default_factory=FaceRestorationConfig)
    analysis: EditAnalysisConfig = Field(
        default_factory=EditAnalysisConfig,
        description="A rewritten instruction is written from the image and the instruction together (Gemini).",
    )

    image_guidance_scale: float = Field(
        default=1.5, ge=1.0, le=5.0, description="Default: how closely an edit keeps the source image."
    )
    rewrite: bool = Field(
        default=False, description="Default for `rewrite`: the prompt writer rewrites the instruction first."
    )
    max_wait_s: float = Field(default=50.0, gt=0, le=55, description="How long a request waits before a 504.")
