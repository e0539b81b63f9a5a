"""The messages between deployments: what a stage is given and what it answers.

The runner sends the Generator a `GenerationSpec` and streams back `GenerationProgress` events and
a `GenerationOutput`; the captioner, classifier and shopping search answer with the models below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field


class DeskItem(BaseModel):
    name: str = Field(description="Korean shopping category, e.g. 마우스.")
    english: str = Field(description="English name, e.g. mouse.")
    query: str = Field(description="Shopping search query for this item.")


class Offer(BaseModel):
    # "the seed" here is the source spec: this text is in the OpenAPI document, kept as published
    """One shopping offer, in the seed's schema."""

    title: str = Field(description="Product title with HTML removed.")
    price: str = Field(description='Lowest price as "21990원".')
    mall: str = Field(description="Mall name; 네이버 when the provider gives none.")
    category3: str = Field(default="", description="Sub-category, e.g. 마우스.")
    category4: str = Field(default="", description="Finer sub-category, e.g. 유선마우스.")
    link: str = Field(description="Product page.")
    image: str = Field(default="", description="Product image URL.")


class ItemSearchResult(BaseModel):
    offers: list[Offer] = Field(default_factory=list, description="Up to N offers, cheapest first.")
    error_code: str | None = Field(default=None, description="Set when this item's search failed.")
    message: str | None = Field(default=None, description="Why this item's search failed.")


class Classification(BaseModel):
    is_desk: bool = Field(description="Whether the photo shows a desk setup.")
    score: float = Field(description="Probability mass on the desk labels, 0..1.")


class GenerationSpec(BaseModel):
    """One image to generate; what the ingress/runner sends to the Generator."""

    task_id: str | None = Field(default=None, description="The task this image is for (logs only).")
    prompt: str
    negative_prompt: str = ""
    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int
    seed: int
    strength: float = 0.75
    init_image_png: bytes | None = Field(default=None, description="img2img source; txt2img when None.")
    reference_images_png: list[bytes] = Field(
        default_factory=list,
        description="More input images after init_image_png, for a multi-image composition (the compose chain: "
        "a garment put on the person of init_image_png); only backends registered with composes=True take them.",
    )
    lora_name: str | None = None
    lora_scale: float = 1.0
    tileable: bool = Field(default=False, description="Seamless tiling: circular padding in the UNet and VAE.")
    image_guidance_scale: float | None = Field(
        default=None,
        description="Instruction edit (InstructPix2Pix, the Editor): how closely to keep the source image; "
        "the prompt is the instruction. None: a plain txt2img/img2img spec.",
    )

    @property
    def is_edit(self) -> bool:
        return self.image_guidance_scale is not None and self.init_image_png is not None

    @property
    def multiplexed_model_id(self) -> str:
        """How the caller routes this spec: Serve's multiplexed model id is the LoRA name ("" for none)."""
        return self.lora_name or ""

    def group_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call."""
        mode = "edit" if self.is_edit else "img2img" if self.init_image_png is not None else "txt2img"
        return (
            mode,
            self.image_guidance_scale if mode == "edit" else None,
            self.height,
            self.width,
            self.num_inference_steps,
            self.guidance_scale,
            self.strength if mode == "img2img" else None,
            self.lora_name,
            self.lora_scale if self.lora_name else None,
            self.tileable,
        )


def group_specs(specs: Sequence[GenerationSpec]) -> list[list[int]]:
    """Indices of `specs` grouped by `group_key()` (one pipeline call each), groups and members in
    first-seen order."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, spec in enumerate(specs):
        groups.setdefault(spec.group_key(), []).append(index)
    return list(groups.values())


class GenerationProgress(BaseModel):
    """Streamed by the Generator while it denoises: `step` of `total` done."""

    step: int
    total: int


class GenerationOutput(BaseModel):
    image_png: bytes
    seed: int
    model_id: str
    lora_name: str | None = None
    lora_scale: float | None = None
    batch_size: int = Field(default=1, description="How many images shared the pipeline call (the largest step).")
    seconds: float = 0.0
    model_seconds: float | None = Field(
        default=None,
        description="This image's share of the model's time (step-level batching: each step's time over the "
        "images in it); None: seconds / batch_size.",
    )
    safety: Literal["passed", "flagged", "not_run"] = Field(
        default="not_run",
        description="The pipeline's safety checker verdict; not_run when the weights have none or the preset "
        "turned it off. A flagged image is black: the deployment answers CONTENT_FILTERED instead.",
    )


class GeneratedImage(BaseModel):
    """One image a task made."""

    url: str = Field(description="Where to fetch it (the storage backend's URL).")
    key: str = Field(description="Its key in the storage backend.")
    seed: int | None = Field(
        description="The seed that made it (the request's seed + its index); null when a cloud backend chose it."
    )


class StageRetry(BaseModel):
    """One try of a stage that failed because its replica or node did, and was retried."""

    stage: str = Field(description="The stage whose call failed: caption, classify, generate or search.")
    attempt: int = Field(description="Which try failed, from 1.")
    error: str = Field(description="The infrastructure error's type, e.g. ActorDiedError.")
