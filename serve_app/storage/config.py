"""Where images are stored: local files, any S3-compatible store, or Cloudinary (`storage:`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from serve_app.errors import ConfigurationError
from serve_app.settings import Settings

#: S3's region when neither storage.region nor $AWS_REGION says one.
DEFAULT_REGION = "us-east-1"


class LocalStorageConfig(BaseModel):
    kind: Literal["local"] = "local"
    root: str | None = Field(default=None, description="Folder for images; <data_dir>/images when None.")
    public_base_url: str | None = Field(
        default=None, description="Base URL the ingress serves /files/ under; the app's public_base_url when None."
    )


class S3StorageConfig(BaseModel):
    kind: Literal["s3"] = "s3"
    bucket: str | None = Field(default=None, description="The bucket; $S3_BUCKET_NAME (the seed's name) when not set.")
    endpoint_url: str | None = Field(default=None, description="None for AWS; SeaweedFS/MinIO/R2 URL.")
    region: str | None = Field(
        default=None, description=f"$AWS_REGION (or $AWS_DEFAULT_REGION) when not set, else {DEFAULT_REGION}."
    )
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    url_mode: Literal["presigned", "public"] = "presigned"
    public_base_url: str | None = Field(default=None, description="Base of public URLs (CDN).")
    presign_expiry_s: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    create_bucket: bool = Field(default=False, description="Create the bucket at start (dev/test).")
    input_prefixes: list[str] = Field(
        default_factory=lambda: ["uploads/"],
        description="Key prefixes an s3://bucket/key initial image may name; any other key (another "
        "user's images, .json records) is refused. Empty: no s3:// inputs.",
    )
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    timeout_s: float = 10.0
    max_attempts: int = 3


CLOUD_NAME = r"^[A-Za-z0-9_-]{1,100}$"


class CloudinaryStorageConfig(BaseModel):
    """Cloudinary (source spec image-generation-storage-guide.md): signed uploads of `authenticated`
    (never public) resources, and signed URLs (see serve_app.storage.cloudinary).

    The API key and secret are never in YAML: `api_key_env` / `api_secret_env` name the variables."""

    kind: Literal["cloudinary"] = "cloudinary"
    cloud_name: str | None = Field(
        default=None,
        pattern=CLOUD_NAME,
        description="The account's cloud name; $CLOUDINARY_CLOUD_NAME (the seed's name) when not set.",
    )
    api_base_url: str = Field(default="https://api.cloudinary.com", description="Upload and Admin API root.")
    delivery_base_url: str = Field(default="https://res.cloudinary.com", description="Delivery (CDN) root.")
    folder: str = Field(default="", pattern=r"^[A-Za-z0-9_/-]*$", description="Public ids start with this folder.")
    api_key_env: str = "CLOUDINARY_API_KEY"
    api_secret_env: str = "CLOUDINARY_API_SECRET"
    timeout_s: float = Field(default=20.0, gt=0, le=300)
    url_mode: Literal["expiring", "cdn"] = Field(
        default="expiring",
        description="expiring: signed download URLs that expire after url_expiry_s (required with API keys on); "
        "cdn: signed CDN delivery URLs, cached but valid for ever.",
    )
    url_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600, description="How long an expiring URL is valid."
    )


StorageConfig = LocalStorageConfig | S3StorageConfig | CloudinaryStorageConfig


def s3_from_environment(cfg: S3StorageConfig, settings: Settings) -> S3StorageConfig:
    """`cfg` with the bucket and region the environment gives where the YAML is silent."""
    bucket = cfg.bucket or settings.s3_bucket
    if not bucket:
        raise ConfigurationError("S3 storage needs storage.bucket or $S3_BUCKET_NAME.")
    return cfg.model_copy(update={"bucket": bucket, "region": cfg.region or settings.s3_region or DEFAULT_REGION})


def cloudinary_from_environment(cfg: CloudinaryStorageConfig, settings: Settings) -> CloudinaryStorageConfig:
    """`cfg` with the cloud name the environment gives where the YAML is silent."""
    name = cfg.cloud_name or settings.cloudinary_cloud_name
    if not name or not re.fullmatch(CLOUD_NAME, name):
        raise ConfigurationError(
            "Cloudinary storage needs storage.cloud_name or $CLOUDINARY_CLOUD_NAME (letters, digits, _ and -)."
        )
    return cfg.model_copy(update={"cloud_name": name})
