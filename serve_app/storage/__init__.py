"""Image stores: local filesystem (default), S3-compatible, Cloudinary, Google Drive or Imgur; `build_store` picks
one from config."""

from __future__ import annotations

import logging

from serve_app.errors import AppError, ConfigurationError
from serve_app.settings import Settings
from serve_app.storage.base import ImageStore, make_key, sanitize_user_id, sidecar_key, validate_key
from serve_app.storage.config import (
    CloudinaryStorageConfig,
    GoogleDriveStorageConfig,
    ImgurStorageConfig,
    LocalStorageConfig,
    S3StorageConfig,
    StorageConfig,
    cloudinary_from_environment,
)
from serve_app.storage.local import LocalImageStore
from serve_app.storage.s3 import S3ImageStore, parse_s3_url

__all__ = [
    "ImageStore",
    "LocalImageStore",
    "S3ImageStore",
    "build_store",
    "start_store",
    "make_key",
    "parse_s3_url",
    "sanitize_user_id",
    "sidecar_key",
    "validate_key",
]


def build_store(cfg: StorageConfig, settings: Settings) -> ImageStore:
    """The store for `cfg` (call `await store.start()` once before use)."""
    if isinstance(cfg, LocalStorageConfig):
        return LocalImageStore(cfg)
    if isinstance(cfg, S3StorageConfig):
        return S3ImageStore(cfg, settings)
    if isinstance(cfg, CloudinaryStorageConfig):
        from serve_app.storage.cloudinary import CloudinaryImageStore

        return CloudinaryImageStore(cloudinary_from_environment(cfg, settings))
    if isinstance(cfg, GoogleDriveStorageConfig):
        from serve_app.storage.google_drive import GoogleDriveImageStore

        return GoogleDriveImageStore(cfg, settings)
    if isinstance(cfg, ImgurStorageConfig):
        from serve_app.storage.imgur import ImgurImageStore

        return ImgurImageStore(cfg, settings)
    raise ConfigurationError(f"Unknown storage kind {getattr(cfg, 'kind', cfg)!r}.")


async def start_store(cfg: StorageConfig, settings: Settings) -> ImageStore:
    """Build and start the store. A store that is down at boot is logged, not fatal: the replica
    still starts, /healthcheck reports the storage error, and uploads fail with S3_UPLOAD_FAILED
    until it is back (so a storage outage never takes the whole service down)."""
    store = build_store(cfg, settings)
    try:
        await store.start()
    except AppError as exc:
        logging.getLogger("ray.serve").warning("image store not ready at start: %s %s", exc.error_code, exc.message)
    return store
