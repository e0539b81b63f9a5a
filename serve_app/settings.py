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
    google_drive_client_id: str | None = Field(default=None, description="Drive storage, auth oauth: OAuth client id.")
    google_drive_client_secret: SecretStr | None = Field(
        default=None, description="Drive storage: OAuth client secret."
    )
    google_drive_refresh_token: SecretStr | None = Field(
        default=None, description="Drive storage, auth oauth: the user's refresh token (scope drive.file or drive)."
    )
    google_drive_service_account_json: SecretStr | None = Field(
        default=None, description="Drive storage, auth service_account: the service account's JSON key itself."
    )
    google_application_credentials: str | None = Field(
        default=None, description="Drive storage, auth service_account: path of the service account's JSON key file."
    )
    imgur_client_id: SecretStr | None = Field(
        default=None, description="Imgur storage: the application's Client-ID (anonymous uploads)."
    )
    imagegen_torch_threads: int | None = Field(
        default=None, description="torch threads per model replica; default: the replica's num_cpus, rounded up."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
