"""What a client asks for, validated once at the edge: `GenerateRequest` (the settings every
product shares) and `ResolvedGenerate`, the request with every default filled in that a task stores.

Ranges that depend on the preset (max side, max steps) are checked in `GenerateRequest.resolve`,
which names the offending parameter in its error.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from serve_app.errors import BadRequest, InvalidInput
from serve_app.presets import GenerationLimits, Preset
from serve_app.stages import GenerationSpec

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


#: `ResolvedGenerate.surface` of a task submitted on the seed's own paths (POST /generate).
SEED_SURFACE = "seed"


class GenerateRequest(BaseModel):
    """Body of POST /v1/generate (JSON, or the form fields of a multipart upload).

    Ranges that hold for every preset are field constraints; `resolve` checks the ones that
    depend on the preset and turns the request into the `ResolvedGenerate` a task stores.
    """

    model_config = ConfigDict(extra="forbid")

    initial_image_url: str | None = Field(
        default=None,
        max_length=4096,
        description="The desk photo: an http(s) URL or s3://bucket/key on the configured bucket, under one of "
        "its input prefixes (with API keys on, under the key's own folder of one: <prefix><key's user id>/). "
        "Omit it when the image is uploaded as the multipart part `image`.",
    )
    # Defaults to "" (not None) so that a missing prompt where one is needed gets the source spec's
    # `400 {"detail": "Prompt must not be empty."}`, not a 422.
    prompt: str = Field(
        default="",
        description="What the restyled image should look like. Required without a photo; with a desk photo "
        "(initial_image_url or an upload) it may be left out, and the prompt is composed from the photo's "
        'caption and the prompt templates. Never empty: "" is 400 {"detail": "Prompt must not be empty."}.',
    )
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

    def resolve(
        self, preset: Preset, limits: GenerationLimits, *, has_image: bool = False, caption_prompt: bool = False
    ) -> ResolvedGenerate:
        """Fill defaults from the preset, check every preset-dependent range, look the LoRA up,
        pick a seed when none was given. Raises the source spec's errors, naming the parameter.

        `caption_prompt`: the flow composes the prompt from the photo's caption and its templates
        (the desk makeover with a photo), so the prompt may be left out; an empty one is still 400."""
        prompt_left_out = "prompt" not in self.model_fields_set
        if not (caption_prompt and prompt_left_out) and not self.prompt.strip():
            raise BadRequest("Prompt must not be empty.")
        if len(self.prompt) > limits.max_prompt_chars:
            raise InvalidInput(f"Prompt must be at most {limits.max_prompt_chars} characters.")
        if self.negative_prompt is not None and len(self.negative_prompt) > limits.max_prompt_chars:
            raise InvalidInput(f"Negative prompt must be at most {limits.max_prompt_chars} characters.")
        return self.resolve_settings(preset, limits, has_image=has_image)

    def resolve_settings(
        self,
        preset: Preset,
        limits: GenerationLimits,
        *,
        has_image: bool = False,
        count: int | None = None,
        counted: str = "n",
    ) -> ResolvedGenerate:
        """`resolve` without the prompt: for the products that write their prompts themselves
        (scenes, article placeholders, textures). `count` images (one per placeholder or texture,
        `counted` in the cost's error) instead of the request's `n`."""
        defaults = preset.defaults
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
        n = count if count is not None else self.n if self.n is not None else 1
        if count is None:
            if not 1 <= n <= limits.max_images:
                raise InvalidInput(f"n must be between 1 and {limits.max_images}.")
            _check_cost(height * width * steps * n, limits, "n", " (fewer images or steps, or a smaller image)")
        lora: ResolvedLora | None = None
        if self.lora is not None:
            spec = preset.lora(self.lora.name)
            if spec is None:
                known = ", ".join(known.name for known in preset.loras) or "none"
                raise InvalidInput(f"Unknown LoRA {self.lora.name!r}. Available: {known}.")
            scale = self.lora.scale if self.lora.scale is not None else spec.default_scale
            lora = ResolvedLora(name=spec.name, scale=scale, trigger_words=list(spec.trigger_words))
        if count is not None:
            _check_cost(height * width * steps * n, limits, counted, "")
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


def _check_cost(cost: int, limits: GenerationLimits, counted: str, hint: str) -> None:
    limit = limits.request_cost_limit()
    if cost > limit:
        raise InvalidInput(
            f"height x width x num_inference_steps x {counted} is {cost}; one request may ask for at most "
            f"{limit} on this server{hint}.",
            error_code="COST_TOO_HIGH",
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
    surface: str = Field(
        default="v1",
        description="The API the task was submitted on: its webhook is in that API's shape (`seed`: the seed's "
        "flat shape, for POST /generate).",
    )
    more_input_keys: list[str] = Field(
        default_factory=list,
        description="The task's input images after its photo, stored at intake (the compose product's garment).",
    )
    product: Any = Field(
        default=None,
        description="The product's own payload model (scene, placeholders, textures, edit), for the products "
        "that have one; read back from the task store as its JSON, which the product's flow parses.",
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
