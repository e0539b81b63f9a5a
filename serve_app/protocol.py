"""Request and response models of the HTTP API and of the calls between deployments.

Every field has a description (it shows in the OpenAPI docs). Range checks that depend on the
preset (max side, max steps) live in `GenerateRequest.resolve`, which names the offending
parameter in its error.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from serve_app.errors import BadRequest, InvalidInput
from serve_app.patterns import NON_BLANK_PATTERN  # noqa: F401 - re-exported: routes import it from here

if TYPE_CHECKING:
    from serve_app.config import Preset

HARD_MAX_SIDE = 8192  # SPEC: sizes of 8192 or above are always refused

OutputFormat = Literal["png", "jpeg", "webp"]


def _not_a_boolean(value: Any) -> Any:
    """Pydantic reads true/false as 1/0 for numbers; a request's numbers must be numbers."""
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not a boolean")
    return value


OptInt = Annotated[int | None, BeforeValidator(_not_a_boolean)]
OptFloat = Annotated[float | None, BeforeValidator(_not_a_boolean)]


class LoraSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=128, description="Name of a LoRA adapter from the registry (see GET /info).")
    scale: OptFloat = Field(
        default=None,
        ge=-4.0,
        le=4.0,
        allow_inf_nan=False,
        description="Adapter strength in [-4, 4]; the registry's default scale when omitted.",
    )


def _prompt_is_required(schema: dict[str, Any]) -> None:
    """The documented contract: `prompt` is required. The model still defaults it to "" so that a
    missing prompt gets the seed's `400 {"detail": "Prompt must not be empty."}`, not a 422."""
    required = schema.setdefault("required", [])
    if "prompt" not in required:
        required.insert(0, "prompt")


class GenerateRequest(BaseModel):
    """Body of POST /v1/generate (JSON, or the form fields of a multipart upload).

    Ranges that hold for every preset are field constraints; `resolve` checks the ones that
    depend on the preset and turns the request into the `ResolvedGenerate` a task stores.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_prompt_is_required)

    initial_image_url: str | None = Field(
        default=None,
        max_length=4096,
        description="The desk photo: an http(s) URL or s3://bucket/key on the configured bucket. "
        "Omit it when the image is uploaded as the multipart part `image`.",
    )
    prompt: str = Field(default="", description="What the restyled image should look like.")
    negative_prompt: str | None = Field(
        default=None, description="What to avoid; the preset's template negatives are always added."
    )
    num_inference_steps: OptInt = Field(
        default=None, description="Diffusion steps (default from the preset, 50 for sd15/sdxl)."
    )
    guidance_scale: OptFloat = Field(default=None, allow_inf_nan=False, description="Classifier-free guidance (7.5).")
    height: OptInt = Field(default=None, description="Output height in pixels, a multiple of 8.")
    width: OptInt = Field(default=None, description="Output width in pixels, a multiple of 8.")
    seed: OptInt = Field(
        default=None, ge=0, lt=2**63, description="Random seed in [0, 2**63); chosen and reported when omitted."
    )
    lora: LoraSelection | None = Field(default=None, description="LoRA adapter and scale to apply.")
    strength: OptFloat = Field(
        default=None, allow_inf_nan=False, description="img2img strength in (0, 1]: how far to move from the photo."
    )
    n: OptInt = Field(
        default=None,
        description="Images to make (1 by default); image i uses seed + i. They share the Generator's batches.",
    )
    output_format: OutputFormat | None = Field(default=None, description="Encoding of the stored images (png).")
    output_compression: OptInt = Field(
        default=None, ge=0, le=100, description="jpeg/webp quality, 0-100 (90 when omitted); ignored for png."
    )
    webhook_url: str | None = Field(
        default=None, max_length=4096, description="Where to POST the result when the task ends (signed, retried)."
    )
    user_id: str = Field(
        default="anonymous", max_length=64, description="Owner of the task; the first part of image keys."
    )

    def resolve(self, preset: Preset, limits: GenerationLimits, *, has_image: bool = False) -> ResolvedGenerate:
        """Fill defaults from the preset, check every preset-dependent range, look the LoRA up,
        pick a seed when none was given. Raises the seed's errors, naming the parameter."""
        defaults = preset.defaults
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
        n = self.n if self.n is not None else 1
        if not 1 <= n <= limits.max_images:
            raise InvalidInput(f"n must be between 1 and {limits.max_images}.")
        cost, cost_limit = height * width * steps * n, limits.request_cost_limit()
        if cost > cost_limit:
            raise InvalidInput(
                f"height x width x num_inference_steps x n is {cost}; one request may ask for at most "
                f"{cost_limit} on this server (fewer images or steps, or a smaller image).",
                error_code="COST_TOO_HIGH",
            )
        lora: ResolvedLora | None = None
        if self.lora is not None:
            spec = preset.lora(self.lora.name)
            if spec is None:
                known = ", ".join(known.name for known in preset.loras) or "none"
                raise InvalidInput(f"Unknown LoRA {self.lora.name!r}. Available: {known}.")
            scale = self.lora.scale if self.lora.scale is not None else spec.default_scale
            lora = ResolvedLora(name=spec.name, scale=scale, trigger_words=list(spec.trigger_words))
        return ResolvedGenerate(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            strength=strength,
            seed=self.seed if self.seed is not None else secrets.randbelow(2**31),
            lora=lora,
            n=n,
            output_format=self.output_format or "png",
            output_compression=self.output_compression,
            initial_image_url=self.initial_image_url,
            webhook_url=self.webhook_url,
            user_id=self.user_id,
        )


class ResolvedLora(BaseModel):
    """A LoRA looked up in the preset: its name, the scale to apply, the words that trigger it."""

    name: str
    scale: float
    trigger_words: list[str] = Field(default_factory=list)


class ResolvedGenerate(BaseModel):
    """A GenerateRequest with every default filled in and its LoRA resolved; what a task stores.

    Downstream code reads it as it is: nothing is looked up in the preset again.
    """

    prompt: str
    negative_prompt: str | None = None
    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int
    strength: float
    seed: int
    lora: ResolvedLora | None = None
    n: int = Field(default=1, description="Images to make; image i uses seed + i.")
    output_format: OutputFormat = "png"
    output_compression: int | None = None
    initial_image_url: str | None = None
    webhook_url: str | None = None
    user_id: str = "anonymous"
    product: ProductPayload | None = Field(
        default=None, description="The scene or the article placeholders, for the products that have one."
    )

    @property
    def pixel_steps_per_image(self) -> int:
        return self.height * self.width * self.num_inference_steps

    @property
    def cost(self) -> int:
        """Pixel-steps: height x width x num_inference_steps x images."""
        return self.pixel_steps_per_image * self.n

    def generation_specs(
        self, prompt: str, negative_prompt: str, init_image_png: bytes | None, task_id: str | None = None
    ) -> list[GenerationSpec]:
        """The Generator's inputs, one per image (seed + i): this request's settings with the final
        prompts and the photo. Sent together, they share the Generator's batches."""
        return [
            self.generation_spec(prompt, negative_prompt, init_image_png, task_id, seed=(self.seed + i) % 2**63)
            for i in range(self.n)
        ]

    def generation_spec(
        self,
        prompt: str,
        negative_prompt: str,
        init_image_png: bytes | None,
        task_id: str | None = None,
        seed: int | None = None,
    ) -> GenerationSpec:
        """The Generator's input for one image: this request's settings with the final prompts and the photo."""
        return GenerationSpec(
            task_id=task_id,
            prompt=prompt,
            negative_prompt=negative_prompt,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            height=self.height,
            width=self.width,
            seed=self.seed if seed is None else seed,
            strength=self.strength,
            init_image_png=init_image_png,
            lora_name=self.lora.name if self.lora else None,
            lora_scale=self.lora.scale if self.lora else 1.0,
        )


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
    max_images: int = Field(default=8, ge=1, le=64, description="Largest `n` (images per request) accepted.")
    max_request_cost: int | None = Field(
        default=None,
        ge=1,
        description="Largest height x width x steps x images of one request: what one Generator replica can "
        "run without running out of memory or holding the queue for long. None: max_side^2 x max_steps.",
    )

    def request_cost_limit(self) -> int:
        return self.max_request_cost or self.max_side * self.max_side * self.max_steps


# --- tasks -----------------------------------------------------------------------------------


class TaskStatus(StrEnum):
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"


class Stage(StrEnum):
    queued = "queued"
    writing = "writing"  # the prompt writer (scenes, articles)
    captioning = "captioning"
    generating = "generating"
    restoring = "restoring"  # face restoration after an instruction edit
    searching = "searching"
    storing = "storing"


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
    batch_size: int = Field(default=1, description="How many images shared the pipeline call.")
    seconds: float = 0.0
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


class TaskResult(BaseModel):
    """What GET /v1/result/{task_id} returns (and what a webhook POSTs)."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    status: TaskStatus
    created_at: float = Field(description="Unix time of submission.")
    updated_at: float = Field(description="Unix time of the last change.")
    progress: Progress | None = Field(default=None, description="While queued/processing.")
    attempts: int = Field(default=0, description="Times a worker has started this task.")
    queue_position: int | None = Field(
        default=None, description="While queued: tasks ahead of it in the queue (0: it runs next)."
    )
    eta_s: float | None = Field(
        default=None, description="While queued or running: seconds until it ends, from recent tasks' run times."
    )
    initial_image_url: str | None = None
    processed_image_url: str | None = Field(default=None, description="The (first) generated image.")
    images: list[GeneratedImage] | None = Field(default=None, description="Every generated image, in seed order.")
    output_format: OutputFormat | None = Field(default=None, description="Encoding of the generated images.")
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
        default=None,
        description="Why no image was generated: `not_a_desk`, or `generation_failed: CODE: message` when "
        "generating from a desk photo still failed after its retries (the shopping offers still come back).",
    )
    prompt: str | None = Field(default=None, description="The final prompt used.")
    negative_prompt: str | None = None
    seed: int | None = None
    lora: LoraSelection | None = None
    model_id: str | None = None
    timings: dict[str, float] | None = Field(default=None, description="Seconds per stage.")
    retries: list[StageRetry] | None = Field(
        default=None, description="Stage calls retried after a replica or node failure, in order."
    )
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


# The products' payloads validate against this module's patterns, so they are imported last.
from serve_app.products import ProductPayload  # noqa: E402

ResolvedGenerate.model_rebuild()
