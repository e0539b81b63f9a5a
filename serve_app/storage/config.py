"""Where images are stored: local files, any S3-compatible store, or Cloudinary (`storage:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LocalStorageConfig(BaseModel):
    kind: Literal["local"] = "local"
    root: str | None = Field(default=None, description="Folder for images; <data_dir>/images when None.")
    public_base_url: str | None = Field(
        default=None, description="Base URL the ingress serves /files/ under; the app's public_base_url when None."
    )


class S3StorageConfig(BaseModel):
    kind: Literal["s3"] = "s3"
    bucket: str
    endpoint_url: str | None = Field(default=None, description="None for AWS; SeaweedFS/MinIO/R2 URL.")
    region: str = "us-east-1"
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


class CloudinaryStorageConfig(BaseModel):
    """Cloudinary (source spec image-generation-storage-guide.md): signed uploads of `authenticated`
    (never public) resources, and signed URLs (see serve_app.storage.cloudinary).

    The API key and secret are never in YAML: `api_key_env` / `api_secret_env` name the variables."""

    kind: Literal["cloudinary"] = "cloudinary"
    cloud_name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$", description="The account's cloud name.")
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
