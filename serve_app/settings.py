"""Secrets and environment knobs (pydantic-settings); never in YAML."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Secrets and environment knobs; never in YAML."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    imagegen_webhook_secret: str | None = Field(
        default=None,
        description="Standard Webhooks secret: whsec_<base64 key>, prefix and padding optional; required for webhooks.",
    )
    imagegen_tasks_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL DSN of the task store when tasks.store is postgres."
    )
    naver_client_id: str | None = None
    naver_client_secret: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    imagegen_torch_threads: int | None = Field(
        default=None, description="torch threads per model replica; default: the replica's num_cpus, rounded up."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
