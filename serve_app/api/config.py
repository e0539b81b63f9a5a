"""What the ingress admits and whom (`admission:`, `auth:`, `cors:`, `openai:`), and its probes (`health:`)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.tasks.api_keys import KeyLimits


class AdmissionConfig(BaseModel):
    """What the ingress admits, by compute cost and upload bytes, beyond the task count (tasks.max_active).

    A request's cost is height x width x num_inference_steps x images ("pixel-steps"); the preset's
    `limits.max_request_cost` bounds one request (what one Generator replica can take).
    """

    max_active_cost: int | None = Field(
        default=None,
        ge=1,
        description="Sum of the costs of queued and running tasks above which a submit gets 503 + Retry-After; "
        "None: only tasks.max_active bounds the queue.",
    )
    upload_bytes_in_flight: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Request bytes an ingress replica holds at once across all uploads being received; "
        "past it a submit gets 503 + Retry-After instead of the replica running out of memory.",
    )
    max_json_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest body of a JSON route the framework parses (scenes, articles, textures, "
        "/v1/images/generations, cancels); past it 413 before the body is buffered.",
    )


class HealthConfig(BaseModel):
    """GET /healthcheck, which anyone may call as often as they like."""

    storage_probe_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long an ingress replica reuses its last storage probe (S3's writes an object) before "
        "probing again (so storage coming back shows that much later); concurrent checks share one probe. 0: probe "
        "on every check.",
    )


class AuthConfig(BaseModel):
    """API keys: off by default. On: /v1 and /files need a key made with `python -m serve_app.keys create`."""

    enabled: bool = Field(default=False, description="Require an API key on /v1/* and /files/*.")
    default_limits: KeyLimits = Field(
        default_factory=lambda: KeyLimits(requests_per_minute=60, max_in_flight=8),
        description="Limits of a key that sets none of its own.",
    )


class CorsConfig(BaseModel):
    """Cross-origin access for browser clients: off (no CORS headers at all) until origins are listed.

    Keys travel in `Authorization` / `X-API-Key`, never in cookies, so credentialed CORS is not offered.
    """

    allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port], as browsers send them) allowed to call the API; ['*'] for "
        "any; [] turns CORS off.",
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "DELETE"], description="Methods a preflight may ask for."
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "X-API-Key", "Idempotency-Key", "Last-Event-ID", "Content-Type"],
        description="Request headers a preflight may ask for.",
    )
    expose_headers: list[str] = Field(
        default_factory=lambda: ["Location", "Retry-After"], description="Response headers scripts may read."
    )
    max_age: int = Field(default=600, ge=0, le=86400, description="Seconds a browser may cache a preflight answer.")

    @model_validator(mode="after")
    def _check_origins(self) -> CorsConfig:
        if "*" in self.allow_origins and len(self.allow_origins) > 1:
            raise ValueError("cors.allow_origins: '*' allows every origin; list it alone")
        for origin in self.allow_origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            default_port = {"http": 80, "https": 443}.get(parts.scheme)
            if (
                default_port is None
                or not parts.hostname
                or origin != f"{parts.scheme}://{parts.netloc}"
                or origin != origin.lower()
                or parts.port == default_port
            ):
                raise ValueError(
                    f"cors.allow_origins: {origin!r} is not an origin as browsers send it: lowercase "
                    "http(s)://host[:port], no path or trailing slash, no default port"
                )
        return self

    @field_validator("allow_methods")
    @classmethod
    def _upper_methods(cls, methods: list[str]) -> list[str]:
        return [method.upper() for method in methods]

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins)


OPENAI_IMAGE_MODELS = [
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "chatgpt-image-latest",
]


class OpenAICompatConfig(BaseModel):
    """The OpenAI-compatible images API (POST /v1/images/generations and /v1/images/edits)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Serve the /v1/images routes.")
    max_wait_s: float = Field(
        default=50.0,
        gt=0,
        le=3600,
        description="Longest a request waits for its task before 504 (keep it below http_options.request_timeout_s).",
    )
    poll_s: float = Field(
        default=1.0,
        gt=0,
        le=5,
        description="Longest a waiting request goes without reading its task: the task store pushes every change "
        "of it (serve_app.tasks.notify), so this only bounds a lost push.",
    )
    default_response_format: Literal["url", "b64_json"] = Field(
        default="url", description="response_format when a request gives none."
    )
    model_aliases: list[str] = Field(
        default_factory=lambda: list(OPENAI_IMAGE_MODELS),
        description="OpenAI model names served by this server's preset (no LoRA), so code written for "
        "OpenAI runs unchanged; besides them `model` may name the preset or one of its LoRAs.",
    )
