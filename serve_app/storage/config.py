"""Where images are stored: local files, any S3-compatible store, Cloudinary, Google Drive or Imgur (`storage:`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

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


class GoogleDriveStorageConfig(BaseModel):
    """Google Drive (source spec image-generation-storage-guide.md) through the Drive API v3: every
    image and record is a private file in one folder, and the app serves images itself under
    `/files/{key}` (with API keys on, only to the owning key), as with local storage.

    Credentials come from the environment (serve_app.settings), never from YAML: `auth: oauth` uses a
    user's refresh token (GOOGLE_DRIVE_CLIENT_ID, GOOGLE_DRIVE_CLIENT_SECRET,
    GOOGLE_DRIVE_REFRESH_TOKEN), `auth: service_account` a service account key (the JSON in
    GOOGLE_DRIVE_SERVICE_ACCOUNT_JSON, or its file in GOOGLE_APPLICATION_CREDENTIALS)."""

    kind: Literal["google_drive"] = "google_drive"
    auth: Literal["oauth", "service_account"] = Field(
        default="oauth", description="oauth: a user's refresh token; service_account: a signed JWT assertion (RS256)."
    )
    folder_id: str = Field(
        default="root",
        pattern=r"^[A-Za-z0-9_-]{1,200}$",
        description="The folder files go in: `root` (My Drive) or a folder id; a service account needs a folder "
        "of a shared drive (it has no storage of its own).",
    )
    scope: str = Field(
        default="https://www.googleapis.com/auth/drive.file",
        description="OAuth scope a service account asks for; drive.file: only the files this app created.",
    )
    api_base_url: str = Field(default="https://www.googleapis.com", description="Root of /drive/v3 and /upload.")
    token_url: str = Field(default="https://oauth2.googleapis.com/token", description="Google's OAuth token endpoint.")
    public_base_url: str | None = Field(
        default=None, description="Base URL the ingress serves /files/ under; the app's public_base_url when None."
    )
    resumable_above_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=0,
        description="Files larger than this go up as a resumable upload, smaller ones as one multipart request "
        "(Drive's advice: multipart up to 5 MB).",
    )
    timeout_s: float = Field(default=30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _a_service_account_needs_a_shared_folder(self) -> GoogleDriveStorageConfig:
        if self.auth == "service_account" and self.folder_id == "root":
            raise ValueError(
                "a service account has no Drive storage of its own: set folder_id to a folder of a shared drive "
                "it is a member of (and scope https://www.googleapis.com/auth/drive)."
            )
        return self


class ImgurStorageConfig(BaseModel):
    """Imgur (source spec image-generation-storage-guide.md) through its API 3: anonymous uploads with
    a Client-ID. Images are public to anyone holding their link (unlisted, never in the gallery), so
    this store is refused with API keys on. The `.json` records are never sent to Imgur (it takes
    images only): they stay in the ledger beside each image's id, link and deletehash, a SQLite file
    on this node, so the store is refused with a cluster's shared task store (tasks.store postgres)."""

    kind: Literal["imgur"] = "imgur"
    api_base_url: str = Field(default="https://api.imgur.com", description="Root of /3/image.")
    ledger_path: str | None = Field(
        default=None, description="SQLite file of ids, links, deletehashes and records; <data_dir>/imgur.db when None."
    )
    timeout_s: float = Field(default=30.0, gt=0, le=300)


StorageConfig = (
    LocalStorageConfig | S3StorageConfig | CloudinaryStorageConfig | GoogleDriveStorageConfig | ImgurStorageConfig
)


def storage_refusal(storage: StorageConfig, *, keys_on: bool, shared_tasks: bool) -> str | None:
    """Why `storage` is unsafe with API keys on (`keys_on`) or on a cluster whose nodes share the
    task store (`shared_tasks`), or None when it is fine."""
    if keys_on and isinstance(storage, S3StorageConfig) and storage.url_mode == "public":
        return (
            "auth.enabled with storage.url_mode 'public' would show every key's images to anyone holding "
            "a URL; use url_mode 'presigned' (time-limited URLs handed only to the task's key)."
        )
    if keys_on and isinstance(storage, CloudinaryStorageConfig) and storage.url_mode == "cdn":
        return (
            "auth.enabled with Cloudinary storage.url_mode 'cdn' would give every key's images URLs that never "
            "expire, open to anyone holding one; use url_mode 'expiring' (signed URLs valid for url_expiry_s)."
        )
    if keys_on and isinstance(storage, ImgurStorageConfig):
        return (
            "auth.enabled with storage.kind 'imgur' would show every key's images to anyone holding a link: "
            "Imgur images are public (unlisted by link) and never expire; use google_drive, s3 (presigned), "
            "cloudinary (expiring) or local storage."
        )
    if shared_tasks and isinstance(storage, ImgurStorageConfig):
        return (
            "storage.kind 'imgur' keeps its deletehashes and records in a ledger on one node, which the other "
            "nodes of a cluster (tasks.store postgres) cannot see or delete from; use s3, cloudinary or "
            "google_drive there."
        )
    return None


def resolve_storage(storage: StorageConfig, data_dir: Path, public_base_url: str) -> StorageConfig:
    """`storage` with its defaults that depend on the app filled in: absolute paths under `data_dir`,
    and the ingress's `public_base_url` for the stores whose images it serves."""
    if isinstance(storage, LocalStorageConfig):
        root = Path(storage.root or data_dir / "images").expanduser().resolve()
        base = storage.public_base_url or public_base_url
        return storage.model_copy(update={"root": str(root), "public_base_url": base.rstrip("/")})
    if isinstance(storage, GoogleDriveStorageConfig):
        base = storage.public_base_url or public_base_url
        return storage.model_copy(update={"public_base_url": base.rstrip("/")})
    if isinstance(storage, ImgurStorageConfig):
        ledger = Path(storage.ledger_path or data_dir / "imgur.db").expanduser().resolve()
        return storage.model_copy(update={"ledger_path": str(ledger)})
    return storage


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
