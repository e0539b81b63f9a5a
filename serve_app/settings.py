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
    # Google Drive storage (auth oauth): the OAuth client and the user's refresh token.
    google_drive_refresh_token: SecretStr | None = Field(default=None, description="Scope drive.file (or drive).")
    google_drive_client_id: str | None = None
    google_drive_client_secret: SecretStr | None = None
    # Google Drive storage (auth service_account): the JSON key itself, or the path of its file.
    google_drive_service_account_json: SecretStr | None = None
    google_application_credentials: str | None = None
    imgur_client_id: SecretStr | None = Field(default=None, description="Imgur storage: the app's Client-ID.")
    imagegen_torch_threads: int | None = Field(
        default=None, description="torch threads per model replica; default: the replica's num_cpus, rounded up."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
