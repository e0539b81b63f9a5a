"""The image backend interface (SPEC.md section 2): one `generate` per image, whoever makes it.

The in-cluster diffusers Generator and every cloud provider (Hugging Face Inference Providers,
OpenAI Images, Stability AI, Replicate, KLING, Gemini) implement `ImageBackend`. A backend takes
the same `GenerationSpec` the Generator takes and answers a `BackendImage`: PNG bytes, which
backend and model made it, how long it took and what it cost. Fields a provider has no use for
(a LoRA, the step count) are ignored by it and say so in `BackendImage.ignored`.

Errors, all `AppError`s so a task that ends in one records its code:
- `BackendNotConfigured` (500, BACKEND_NOT_CONFIGURED): the key's environment variable is unset;
- `BackendAuthFailed` (500, BACKEND_AUTH_FAILED): the provider rejected the key (401/403);
- `UpstreamError` (502) with RATE_LIMITED, UPSTREAM_TIMEOUT, UPSTREAM_ERROR, UPSTREAM_REJECTED
  (the provider refused this prompt: content policy, bad size), UPSTREAM_BAD_RESPONSE.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, Field

from serve_app.errors import ConfigurationError
from serve_app.stages import GenerationSpec

OnStep = Callable[[int, int], Awaitable[None]]


class BackendNotConfigured(ConfigurationError):
    default_code = "BACKEND_NOT_CONFIGURED"
    default_message = "The image backend is not configured."


class BackendAuthFailed(ConfigurationError):
    default_code = "BACKEND_AUTH_FAILED"
    default_message = "The image backend rejected its API key."


class EditNotSupported(ConfigurationError):
    default_code = "EDIT_NOT_SUPPORTED"
    default_message = "The image backend cannot edit an image."


class ComposeNotSupported(EditNotSupported):
    """A composition (several input images made into one) asked of a backend that takes one image at most."""

    default_code = "COMPOSE_NOT_SUPPORTED"


class TilingNotSupported(ConfigurationError):
    default_code = "TILING_NOT_SUPPORTED"
    default_message = "The image backend cannot make a seamless tile."


class BackendImage(BaseModel):
    """One image a backend made."""

    image_png: bytes = Field(description="The image, always re-encoded as PNG.")
    backend: str = Field(description="Which backend made it: local, huggingface, openai, stability, ...")
    model: str = Field(description="The model id the backend used.")
    seed: int | None = Field(default=None, description="The seed, when the backend honours one.")
    seconds: float = Field(description="Wall time of the backend call, retries and polling included.")
    cost_usd: float = Field(description="The provider's price, or GPU-seconds x the configured price (local).")
    provider_request_id: str | None = Field(default=None, description="The provider's id for the job, if any.")
    attempts: int = Field(default=1, description="HTTP attempts made (retries of 429/503 included).")
    ignored: list[str] = Field(default_factory=list, description="Request fields this backend cannot honour.")
    safety_checker: Literal["passed", "not_run"] = Field(
        default="not_run",
        description="passed: the local model's safety checker saw the image (a flagged one fails CONTENT_FILTERED); "
        "not_run: the model has none, or a cloud provider moderated it on its side.",
    )

    def result_fields(self) -> dict[str, object]:
        """What a task's result says of the backend that made this image."""
        return {
            "backend": self.backend,
            "backend_model": self.model,
            "backend_seconds": self.seconds,
            "cost_usd": self.cost_usd,
            "provider_request_id": self.provider_request_id,
            "backend_ignored": self.ignored or None,
            "safety_checker": self.safety_checker,
        }


class BackendStatus(BaseModel):
    """What /info says of a backend."""

    name: str
    kind: Literal["local", "cloud"]
    model: str
    configured: bool = Field(description="Its key (or, for local, the Generator) is there.")
    reason: str | None = Field(default=None, description="Why it is not usable, when it is not.")
    price_usd_per_image: float | None = None
    rate_limit_per_minute: float | None = None
    provider: str | None = Field(default=None, description="Hugging Face: the Inference Provider that runs it.")


class ImageBackend(ABC):
    """Makes one image from a `GenerationSpec`."""

    name: str
    kind: Literal["local", "cloud"] = "cloud"

    @abstractmethod
    async def generate(self, spec: GenerationSpec, on_step: OnStep | None = None) -> BackendImage:
        """The image for `spec`; raises an AppError (see the module doc) when it cannot."""

    @abstractmethod
    def status(self) -> BackendStatus:
        """Configured and usable? Never calls the provider."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def to_png(data: bytes, provider: str, max_pixels: int) -> tuple[bytes, int, int]:
    """`data` (any image format Pillow reads) as PNG bytes, with its width and height.

    UpstreamError(UPSTREAM_BAD_RESPONSE) when it is not an image, or has more than `max_pixels`
    pixels: the header is read first, so a small file claiming a huge size is never decompressed."""
    from PIL import Image, UnidentifiedImageError

    from serve_app.errors import UpstreamError

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            check_pixels(image.size, provider, max_pixels)
            image.load()
            converted = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise UpstreamError(
            f"{provider} answered with bytes that are not an image.", error_code="UPSTREAM_BAD_RESPONSE"
        ) from exc
    out = io.BytesIO()
    converted.save(out, format="PNG")
    return out.getvalue(), converted.width, converted.height


def check_pixels(size: tuple[int, int], provider: str, max_pixels: int) -> None:
    """UpstreamError(UPSTREAM_BAD_RESPONSE) when a provider's image is larger than `max_pixels`."""
    from serve_app.errors import UpstreamError

    width, height = size
    if width * height > max_pixels:
        raise UpstreamError(
            f"{provider} answered a {width}x{height} image; at most {max_pixels} pixels are accepted.",
            error_code="UPSTREAM_BAD_RESPONSE",
        )


def image_mime(data: bytes) -> str:
    """The media type of input image bytes (PNG, JPEG or WEBP: what the app stores), from their magic numbers."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def ignored_fields(spec: GenerationSpec, honoured: set[str]) -> list[str]:
    """Names of the spec's set fields a backend does not honour (for `BackendImage.ignored`)."""
    candidates = {
        "negative_prompt": bool(spec.negative_prompt),
        "seed": True,
        "num_inference_steps": True,
        "guidance_scale": True,
        "lora": spec.lora_name is not None,
        "init_image": spec.init_image_png is not None,
        "image_guidance_scale": spec.is_edit,
    }
    return sorted(name for name, present in candidates.items() if present and name not in honoured)
