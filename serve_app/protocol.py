"""Request and response models of the HTTP API and of the calls between deployments.

Every field has a description (it shows in the OpenAPI docs). Range checks that depend on the
preset (max side, max steps) live in `GenerateRequest.resolve`, which names the offending
parameter in its error.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.errors import BadRequest, InvalidInput

HARD_MAX_SIDE = 8192  # SPEC: sizes of 8192 or above are always refused


class LoraSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name of a LoRA adapter from the registry (see GET /info).")
    scale: float | None = Field(
        default=None, description="Adapter strength; the registry's default scale when omitted."
    )


class GenerateRequest(BaseModel):
    """Body of POST /v1/generate (JSON, or the form fields of a multipart upload)."""

    model_config = ConfigDict(extra="forbid")

    initial_image_url: str | None = Field(
        default=None,
        description="The desk photo: an http(s) URL or s3://bucket/key on the configured bucket. "
        "Omit it when the image is uploaded as the multipart part `image`.",
    )
    prompt: str = Field(default="", description="What the restyled image should look like.")
    negative_prompt: str | None = Field(
        default=None, description="What to avoid; the preset's template negatives are always added."
    )
    num_inference_steps: int | None = Field(
        default=None, description="Diffusion steps (default from the preset, 50 for sd15/sdxl)."
    )
    guidance_scale: float | None = Field(default=None, description="Classifier-free guidance (7.5).")
    height: int | None = Field(default=None, description="Output height in pixels, a multiple of 8.")
    width: int | None = Field(default=None, description="Output width in pixels, a multiple of 8.")
    seed: int | None = Field(default=None, description="Random seed; chosen and reported when omitted.")
    lora: LoraSelection | None = Field(default=None, description="LoRA adapter and scale to apply.")
    strength: float | None = Field(
        default=None, description="img2img strength in (0, 1]: how far to move from the photo."
    )
    webhook_url: str | None = Field(
        default=None, description="Where to POST the result when the task ends (signed, retried)."
    )
    user_id: str = Field(
        default="anonymous", max_length=64, description="Owner of the task; the first part of image keys."
    )

    def resolve(
        self, defaults: GenerationDefaults, limits: GenerationLimits, *, has_image: bool = False
    ) -> ResolvedGenerate:
        """Fill defaults from the preset and check every range; raise the seed's errors."""
        if not self.prompt or not self.prompt.strip():
            raise BadRequest("Prompt must not be empty.")
        if len(self.prompt) > limits.max_prompt_chars:
            raise InvalidInput(f"Prompt must be at most {limits.max_prompt_chars} characters.")
        if self.negative_prompt is not None and len(self.negative_prompt) > limits.max_prompt_chars:
            raise InvalidInput(f"Negative prompt must be at most {limits.max_prompt_chars} characters.")
        steps = self.num_inference_steps if self.num_inference_steps is not None else defaults.num_inference_steps
        guidance = self.guidance_scale if self.guidance_scale is not None else defaults.guidance_scale
        height = self.height if self.height is not None else defaults.height
        width = self.width if self.width is not None else defaults.width
        strength = self.strength if self.strength is not None else defaults.strength
        if guidance < 0:
            raise InvalidInput("Guidance scale cannot be negative.")
        if guidance > limits.max_guidance_scale:
            raise InvalidInput(f"Guidance scale must be at most {limits.max_guidance_scale}.")
        if not 1 <= steps <= limits.max_steps:
            raise InvalidInput(f"Number of inference steps must be between 1 and {limits.max_steps}.")
        for name, value in (("Height", height), ("Width", width)):
            if value >= HARD_MAX_SIDE:
                raise InvalidInput(f"{name} must be smaller than {HARD_MAX_SIDE}.")
            if value < limits.min_side or value > limits.max_side:
                raise InvalidInput(f"{name} must be between {limits.min_side} and {limits.max_side}.")
            if value % 8:
                raise InvalidInput(f"{name} must be a multiple of 8.")
        if not 0.0 < strength <= 1.0:
            raise InvalidInput("Strength must be in (0, 1].")
        if has_image and int(steps * strength) < 1:
            raise InvalidInput("num_inference_steps * strength must be at least 1 for an image edit.")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InvalidInput("Seed must be between 0 and 2**63 - 1.")
        if self.lora is not None and self.lora.scale is not None and not -4.0 <= self.lora.scale <= 4.0:
            raise InvalidInput("LoRA scale must be between -4 and 4.")
        return ResolvedGenerate(
            **self.model_dump(exclude={"num_inference_steps", "guidance_scale", "height", "width", "strength"}),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            strength=strength,
        )


class ResolvedGenerate(GenerateRequest):
    """A GenerateRequest with every default filled in; what a task record stores."""

    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int
    strength: float


class GenerationDefaults(BaseModel):
    num_inference_steps: int = Field(default=50, description="Default diffusion steps.")
    guidance_scale: float = Field(default=7.5, description="Default guidance scale.")
    height: int = Field(default=1024, description="Default output height.")
    width: int = Field(default=1024, description="Default output width.")
    strength: float = Field(default=0.75, description="Default img2img strength.")


class GenerationLimits(BaseModel):
    max_steps: int = Field(default=150, description="Largest num_inference_steps accepted.")
    min_side: int = Field(default=64, description="Smallest height/width accepted.")
    max_side: int = Field(default=2048, description="Largest height/width accepted (always < 8192).")
    max_guidance_scale: float = Field(default=50.0, description="Largest guidance scale accepted.")
    max_prompt_chars: int = Field(default=2000, description="Longest prompt accepted.")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, description="Largest image upload/fetch.")
    max_image_pixels: int = Field(default=4096 * 4096, description="Largest decoded image (w*h).")


# --- tasks -----------------------------------------------------------------------------------


class TaskStatus(StrEnum):
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"


class Stage(StrEnum):
    queued = "queued"
    fetching = "fetching"
    captioning = "captioning"
    classifying = "classifying"
    generating = "generating"
    searching = "searching"
    storing = "storing"
    finished = "finished"


class Progress(BaseModel):
    stage: Stage = Field(description="What the task is doing now.")
    step: int | None = Field(default=None, description="Diffusion step done (while generating).")
    total_steps: int | None = Field(default=None, description="Diffusion steps in all.")


class TaskAccepted(BaseModel):
    task_id: str = Field(description="Poll GET /v1/result/{task_id} with it.")
    status: TaskStatus = Field(default=TaskStatus.queued, description="Always `queued` on submit.")


# --- desk flow payloads ------------------------------------------------------------------------


class DeskItem(BaseModel):
    name: str = Field(description="Korean shopping category, e.g. 마우스.")
    english: str = Field(description="English name, e.g. mouse.")
    query: str = Field(description="Shopping search query for this item.")


class Offer(BaseModel):
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

    task_id: str | None = Field(default=None, description="Task to report progress to / check cancel.")
    prompt: str
    negative_prompt: str = ""
    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int
    seed: int
    strength: float = 0.75
    init_image_png: bytes | None = Field(default=None, description="img2img source; txt2img when None.")
    lora_name: str | None = None
    lora_scale: float = 1.0

    def group_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call."""
        mode = "img2img" if self.init_image_png is not None else "txt2img"
        return (
            mode,
            self.height,
            self.width,
            self.num_inference_steps,
            self.guidance_scale,
            self.strength if mode == "img2img" else None,
            self.lora_name,
            self.lora_scale if self.lora_name else None,
        )


class GenerationOutput(BaseModel):
    image_png: bytes
    seed: int
    model_id: str
    lora_name: str | None = None
    lora_scale: float | None = None
    batch_size: int = Field(default=1, description="How many images shared the pipeline call.")
    seconds: float = 0.0


class TaskResult(BaseModel):
    """What GET /v1/result/{task_id} returns (and what a webhook POSTs)."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    status: TaskStatus
    created_at: float = Field(description="Unix time of submission.")
    updated_at: float = Field(description="Unix time of the last change.")
    progress: Progress | None = Field(default=None, description="While queued/processing.")
    attempts: int = Field(default=0, description="Times a worker has started this task.")
    initial_image_url: str | None = None
    processed_image_url: str | None = None
    caption: str | None = None
    is_desk: bool | None = None
    desk_score: float | None = None
    items: list[DeskItem] | None = None
    recommendations: dict[str, list[Offer]] | None = Field(
        default=None, description="Korean item name -> up to 3 offers, cheapest first."
    )
    recommendation_errors: dict[str, str] | None = Field(
        default=None, description="Item name -> why its shopping search failed."
    )
    generation_skipped: str | None = Field(
        default=None, description="Why no image was generated (not a desk, generation failed...)."
    )
    prompt: str | None = Field(default=None, description="The final prompt used.")
    negative_prompt: str | None = None
    seed: int | None = None
    lora: LoraSelection | None = None
    model_id: str | None = None
    timings: dict[str, float] | None = Field(default=None, description="Seconds per stage.")
    error_code: str | None = None
    message: str | None = None


class ErrorResponse(BaseModel):
    error_code: str
    message: str


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    deployments: dict[str, str] = Field(description="Deployment name -> ready|error message.")
    storage: str = Field(description="ok or the storage error.")
    task_store: str = Field(description="ok or the task store error.")
