"""One cloud image provider's settings (`backends.<name>:`), and `cloud_config` to write defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.settings import env_choice

#: The Hugging Face Inference Providers the huggingface backend can route text-to-image through
#: (huggingface_hub's provider helpers define each one's route and payload).
HuggingFaceProvider = Literal["hf-inference", "fal-ai", "together", "nscale", "replicate"]


class CloudBackendConfig(BaseModel):
    """One cloud image provider: where it is, which model, its key's variable, limits and price.

    Keys are never in YAML: `api_key_env` names the environment variable that holds one."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="The provider's API root; a stub's URL in tests.")
    model: str = Field(description="The provider's model id.")
    api_key_env: str = Field(description="Environment variable holding the API key (KLING: the access key).")
    secret_key_env: str | None = Field(default=None, description="KLING only: the secret key's variable.")
    # Hugging Face only: the Inference Provider (hf-inference when unset), reached as {base_url}/{provider}/...
    # through the router, and the Hub that says the model's id there (https://huggingface.co when unset).
    provider: HuggingFaceProvider | None = None
    hub_url: str | None = None
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
    max_download_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="Largest image downloaded from a URL the provider answers."
    )
    max_image_pixels: int = Field(
        default=4096 * 4096,
        gt=0,
        description="Largest image (width x height) taken from the provider, checked before it is decoded.",
    )
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Provider-specific request fields (OpenAI quality, Stability output_format, KLING aspect...).",
    )


def missing_keys(cfg: CloudBackendConfig) -> list[str]:
    """The environment variables the provider's keys live in that are not set, under any of the
    seeds' names for them (serve_app.settings.SEED_NAMES); none: configured."""
    names = [cfg.api_key_env, *([cfg.secret_key_env] if cfg.secret_key_env else [])]
    return [name for name in names if env_choice(name) is None]


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
