"""Image backends and their fallback chains (`backends:`), face restoration's provider."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CLOUD_BACKENDS = ("huggingface", "openai", "stability", "replicate", "kling", "gemini")

BACKEND_NAMES = ("local", *CLOUD_BACKENDS)


EDIT_BACKENDS = (
    "local",
    "openai",
    "replicate",
    "stability",
)  # the backends that can edit a given image by an instruction


def chain_entry(entry: str) -> tuple[str, str | None]:
    """A chain entry `backend` or `backend:model` (a cloud backend with another model, e.g.
    `huggingface:black-forest-labs/FLUX.1-dev` for textures)."""
    name, _, model = entry.partition(":")
    return name, model or None


class Variant(BaseModel):
    """One arm of an A/B test: a share of callers whose images come from its own backend chain."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")] = Field(
        description="Recorded on results and metrics."
    )
    percent: Annotated[float, Field(gt=0, le=100)] = Field(description="Share of callers, in percent.")
    chain: list[str] = Field(min_length=1, description="Backends tried in order (entries as in backends.chains).")


class CloudBackendConfig(BaseModel):
    """One cloud image provider: where it is, which model, its key's variable, limits and price.

    Keys are never in YAML: `api_key_env` names the environment variable that holds one."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="The provider's API root; a stub's URL in tests.")
    model: str = Field(description="The provider's model id.")
    api_key_env: str = Field(description="Environment variable holding the API key (KLING: the access key).")
    secret_key_env: str | None = Field(default=None, description="KLING only: the secret key's variable.")
    timeout_s: float = Field(default=60.0, gt=0, le=600, description="One HTTP request.")
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries of 429/502/503/504, on top of the try.")
    backoff_base_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles each time.")
    backoff_max_s: float = Field(default=30.0, gt=0, description="Longest exponential delay.")
    max_retry_wait_s: float = Field(
        default=60.0, gt=0, description="Longest single wait, even when Retry-After asks for more."
    )
    rate_limit_per_minute: float = Field(default=60.0, gt=0, description="Client-side limit, per replica.")
    price_usd_per_image: float = Field(default=0.0, ge=0, description="What one image costs at the provider.")
    poll_interval_s: float = Field(default=2.0, gt=0, le=60, description="Replicate/KLING: task polling period.")
    max_poll_s: float = Field(default=300.0, gt=0, description="Replicate/KLING: give up (and cancel) after this.")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Provider-specific request fields (OpenAI quality, Stability output_format, KLING aspect...).",
    )


class LocalBackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_usd_per_gpu_second: float = Field(
        default=0.001, ge=0, description="Cost of the in-cluster Generator: GPU-seconds per image x this (~$3.6/h)."
    )


def cloud_config(base_url: str, model: str, key: str, rate: float, price: float, **extra: object) -> CloudBackendConfig:
    return CloudBackendConfig.model_validate(
        {
            "base_url": base_url,
            "model": model,
            "api_key_env": key,
            "rate_limit_per_minute": rate,
            "price_usd_per_image": price,
            **extra,
        }
    )


class BackendsConfig(BaseModel):
    """Every image backend, and the fallback chain each product tries in order.

    Defaults: the seeds' rate limits (Hugging Face about 10 a minute, DALL-E 3 five a minute) and
    the providers' list prices; the in-cluster Generator costs GPU-seconds x its price."""

    model_config = ConfigDict(extra="forbid")

    local: LocalBackendConfig = Field(default_factory=LocalBackendConfig)
    huggingface: CloudBackendConfig = Field(
        default_factory=lambda: cloud_config(
            "https://router.huggingface.co/hf-inference",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "HF_TOKEN",
            10,
            0.0,
        )
    )
    openai: CloudBackendConfig = Field(
        default_factory=lambda: cloud_config("https://api.openai.com/v1", "dall-e-3", "OPENAI_API_KEY", 5, 0.04)
    )
    stability: CloudBackendConfig = Field(
        default_factory=lambda: cloud_config("https://api.stability.ai", "core", "STABILITY_API_KEY", 900, 0.03)
    )
    replicate: CloudBackendConfig = Field(
        default_factory=lambda: cloud_config(
            "https://api.replicate.com/v1", "black-forest-labs/flux-schnell", "REPLICATE_API_TOKEN", 600, 0.003
        )
    )
    kling: CloudBackendConfig = Field(
        default_factory=lambda: cloud_config(
            "https://api-singapore.klingai.com",
            "kling-v1",
            "KLING_ACCESS_KEY",
            60,
            0.0035,
            secret_key_env="KLING_SECRET_KEY",
        )
    )
    gemini: CloudBackendConfig = Field(
        default_factory=lambda: cloud_config(
            "https://generativelanguage.googleapis.com", "gemini-2.5-flash-image", "GEMINI_API_KEY", 10, 0.039
        )
    )
    chains: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "scene_internal": ["local"],
            "scene_external": ["kling", "local"],
            "article": ["local", "huggingface"],
            "texture": ["local", "huggingface:black-forest-labs/FLUX.1-dev"],
            "edit": ["local", "openai:gpt-image-1"],
        },
        description="Product -> backends tried in order; the next one runs when the one before fails.",
    )
    experiments: dict[str, list[Variant]] = Field(
        default_factory=dict,
        description="A/B tests: product -> variants (name, percent, chain), percents summing to 100; a caller "
        "(API key, else user id) always lands in the same variant.",
    )

    @model_validator(mode="after")
    def _chains_name_backends(self) -> BackendsConfig:
        """Every chain and A/B arm names known backends (which products there are, and which chains
        must edit, `serve_app.config.AppArgs` checks)."""
        for product, chain in self.chains.items():
            unknown = [
                entry
                for entry in chain
                if chain_entry(entry)[0] not in BACKEND_NAMES or (entry.startswith("local:") and entry != "local")
            ]
            if unknown or not chain:
                raise ValueError(
                    f"backends.chains.{product}: {unknown or 'an empty chain'} (backends: {', '.join(BACKEND_NAMES)})"
                )
        for product, variants in self.experiments.items():
            if abs(sum(v.percent for v in variants) - 100) > 1e-6 or len({v.name for v in variants}) != len(variants):
                raise ValueError(
                    f"backends.experiments.{product}: variants need distinct names and percents summing to 100"
                )
            for variant in variants:
                bad = [e for e in variant.chain if chain_entry(e)[0] not in BACKEND_NAMES or e.startswith("local:")]
                if bad:
                    raise ValueError(f"backends.experiments.{product}.{variant.name}: unknown backends {bad}")
        return self

    def variant_for(self, product: str, caller: str) -> Variant | None:
        """The caller's arm of the product's A/B test (None without one): a stable hash of the
        product and the caller into [0, 100), so the same caller always gets the same arm."""
        variants = self.experiments.get(product)
        if not variants:
            return None
        point = int.from_bytes(hashlib.sha256(f"{product}:{caller}".encode()).digest()[:8], "big") % 10_000 / 100
        edge = 0.0
        for variant in variants:
            edge += variant.percent
            if point < edge:
                return variant
        return variants[-1]

    def cloud(self, name: str) -> CloudBackendConfig:
        return getattr(self, name)


class FaceRestorationConfig(BaseModel):
    """Face restoration after an edit: GFPGAN through Replicate (no local option: see
    serve_app.backends.restoration). Replicate's URL, key and retries come from backends.replicate."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["replicate", "off"] = Field(default="replicate", description="off: requests for it are 422.")
    model: str = Field(
        default="tencentarc/gfpgan:0fbacf7afc6c144e5be9767cff80f25aff23e52b0708f17e20f9879b2f21516c",
        description="Replicate model:version taking `img`, `version`, `scale`.",
    )
    gfpgan_version: str = Field(default="v1.4", description="The model's `version` input (GFPGAN v1.3, v1.4...).")
    scale: float = Field(default=1.0, gt=0, le=4, description="Upscaling factor (1 keeps the edit's size).")
    price_usd_per_image: float = Field(default=0.0023, ge=0, description="What one restoration costs.")
