"""Secrets and environment knobs (pydantic-settings); never in YAML.

The seeds' own names for a variable are read as aliases (`SEED_NAMES`; the first one set wins, an
empty or blank variable counts as unset), and `/info` says which one was used (`environment()`:
names, never values).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

#: Each variable with more than one name (the seeds' names, besides this app's), in the order they
#: are tried.
SEED_NAMES: dict[str, tuple[str, ...]] = {
    # texture-generator-upgrade.md, image-generation-storage-guide.md, enhancement-api-options.md
    "HF_TOKEN": ("HF_TOKEN", "HUGGING_FACE_API_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_KEY"),
    # scene-image-service-readme.md (AWS_DEFAULT_REGION: boto's own name)
    "S3_BUCKET_NAME": ("S3_BUCKET_NAME",),
    "AWS_REGION": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    # image-generation-storage-guide.md
    "CLOUDINARY_CLOUD_NAME": ("CLOUDINARY_CLOUD_NAME",),
}


def variable_names(name: str) -> tuple[str, ...]:
    """`name` and the seeds' names for the same variable (just `name` when it has none)."""
    return SEED_NAMES.get(name, (name,))


def spelled(name: str) -> str:
    """`$NAME`, with the seeds' names for it: `$HF_TOKEN (or $HUGGING_FACE_API_TOKEN, ...)`."""
    first, *others = variable_names(name)
    return f"${first}" + (f" (or {', '.join('$' + other for other in others)})" if others else "")


def env_choice(name: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(the name used, its value stripped) for `name`: the first of `variable_names(name)` set to
    a non-blank value, as pydantic-settings reads them (names case-insensitively); None when none
    is. Read at each call, so a rotated secret takes effect at once."""
    env = os.environ if environ is None else environ
    present = {key.upper(): value.strip() for key, value in env.items() if value.strip()}
    for candidate in variable_names(name):
        if candidate.upper() in present:
            return candidate, present[candidate.upper()]
    return None


def _seed_named(name: str, description: str) -> Any:
    """An optional setting read from `name` or any of the seeds' names for it."""
    return Field(default=None, validation_alias=AliasChoices(*variable_names(name)), description=description)


class _NonBlankEnv(EnvSettingsSource):
    """The environment without its blank variables, so an empty seed name never hides a later one."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key: value for key, value in super()._load_env_vars().items() if value is None or value.strip()}


class Settings(BaseSettings):
    """Secrets and environment knobs; never in YAML."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False, populate_by_name=True)

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
    imagegen_malloc_keep_mb: int = Field(
        default=1024,
        ge=0,
        le=2047,  # mallopt takes an int of bytes
        description="freed memory (MiB) a model replica keeps for its next batch instead of giving it back "
        "to the OS and faulting it in again (glibc); 0: the C library's defaults.",
    )
    # The settings the seeds name otherwise: read by every name of SEED_NAMES (the first set wins).
    hf_token: SecretStr | None = _seed_named("HF_TOKEN", "Hugging Face token (the backend reads it at each call).")
    s3_bucket: str | None = _seed_named("S3_BUCKET_NAME", "S3 storage's bucket when storage.bucket is not set.")
    s3_region: str | None = _seed_named("AWS_REGION", "S3 storage's region when storage.region is not set.")
    cloudinary_cloud_name: str | None = _seed_named("CLOUDINARY_CLOUD_NAME", "Cloudinary's cloud name, else YAML's.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _NonBlankEnv(settings_cls), dotenv_settings, file_secret_settings

    @classmethod
    def environment(cls, environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """Each setting with seed names: the names it is read by, in order, and the one it was read
        from (`variable`, None when none is set). Names only, never a value."""
        used: dict[str, dict[str, Any]] = {}
        for field, info in cls.model_fields.items():
            if isinstance(info.validation_alias, AliasChoices):
                names = [str(choice) for choice in info.validation_alias.choices]
                found = env_choice(names[0], environ)
                used[field] = {"variable": found[0] if found else None, "names": names}
        return used


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
