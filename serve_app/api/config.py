"""What the ingress admits and whom (`admission:`, `auth:`, `cors:`, `openai:`, `long_requests:`), and its
probes (`health:`)."""

from __future__ import annotations

import ipaddress
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
    max_predicted_wait_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="A submit whose task is predicted to be done later than this many seconds from now gets 503 "
        "QUEUE_WAIT_TOO_LONG + Retry-After: the pixel-steps in flight and its own, over the pixel-steps a second "
        "the last 20 tasks done were finished at while the server had a backlog. Set it from your latency SLO; "
        "None: no bound in time.",
    )
    upload_bytes_in_flight: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Request bytes an ingress replica holds at once across all uploads being received; "
        "past it a submit gets 503 + Retry-After instead of the replica running out of memory.",
    )
    decoded_pixels_in_flight: int = Field(
        default=48 * 1024 * 1024,
        ge=1024 * 1024,
        description="Pixels of request images an ingress replica decodes at once (RGB: 3 bytes each); a decode "
        "past it waits up to decode_wait_s, then 503 DECODES_BUSY + Retry-After (serve_app.api.budgets).",
    )
    decode_wait_s: float = Field(default=10.0, ge=0, le=300, description="How long a decode waits for room.")
    max_json_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest body of a JSON route the framework parses (scenes, articles, textures, "
        "/v1/images/generations, cancels); past it 413 before the body is buffered.",
    )


class LongRequestsConfig(BaseModel):
    """Caps on long requests (event streams, waiting routes, uploads being received) per ingress
    replica, and the deadline of a request body (serve_app.api.slots)."""

    model_config = ConfigDict(extra="forbid")

    per_caller: int = Field(
        default=8, ge=1, le=1000, description="Long requests one caller (API key, else client address) holds at once."
    )
    total: int = Field(
        default=40,
        ge=1,
        le=10000,
        description="Long requests a replica holds at once; keep it below the Ingress's max_ongoing_requests "
        "so short requests (/healthcheck, /info, polls, submits) always find a slot.",
    )
    retry_after_s: int = Field(default=5, ge=1, le=3600, description="Retry-After of a refusal.")
    client_ip_header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header naming the client's address (its first value), e.g. X-Forwarded-For; read only "
        "from a peer in trusted_proxies. None: the TCP peer's address.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="Networks whose client_ip_header is believed (the load balancer, HAProxy on the node).",
    )
    body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A request whose body has not all arrived this long after it began: 408",
    )
    stream_max_s: float = Field(
        default=55.0,
        gt=0,
        le=86400,
        description="An event stream's life; the client resumes with Last-Event-ID. Below http_options."
        "request_timeout_s, so this app ends it cleanly before Serve would.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted_proxies: {network!r} is not an IP network") from exc
        return value

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(network, strict=False) for network in self.trusted_proxies]


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
