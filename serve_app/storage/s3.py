"""Images in any S3-compatible store (AWS S3, SeaweedFS, MinIO, R2) through boto3.

boto3 is blocking, so every call runs in a worker thread; one client is shared (boto3 clients are
thread-safe). Errors map to the source spec's codes: put -> StorageError S3_UPLOAD_FAILED ("Failed to upload
image to S3."), get -> StorageError S3_DOWNLOAD_FAILED, a missing key -> NotFound, an unreachable
store -> StorageError S3_UNAVAILABLE. Object keys are `config.prefix` + the store key.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from serve_app.errors import ConfigurationError, InvalidInput, NotFound, PayloadTooLarge, StorageError
from serve_app.settings import Settings
from serve_app.storage.base import ImageStore, is_own_key, sanitize_user_id, validate_key
from serve_app.storage.config import S3StorageConfig, s3_from_environment

log = logging.getLogger(__name__)

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})
UPLOAD_FAILED = "Failed to upload image to S3."
DOWNLOAD_FAILED = "Failed to download image from S3."


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; InvalidInput when it is not one."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not _BUCKET_RE.match(parts.netloc or "") or parts.query or parts.fragment:
        raise InvalidInput("initial_image_url must be an http(s) URL or s3://bucket/key.", error_code="INVALID_URL")
    key = parts.path.lstrip("/")
    validate_key(key)
    return parts.netloc, key


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


class S3ImageStore(ImageStore):
    """An S3 bucket; URLs are presigned GETs (url_mode presigned) or `{public_base_url}/{prefix}{key}`."""

    def __init__(self, config: S3StorageConfig, settings: Settings) -> None:
        config = s3_from_environment(config, settings)  # the bucket and region of $S3_BUCKET_NAME / $AWS_REGION
        if config.url_mode == "public" and not config.public_base_url:
            raise ConfigurationError("storage.public_base_url is required when url_mode is public.")
        self.config = config
        self._prefix = config.prefix.strip("/") + "/" if config.prefix.strip("/") else ""
        boto_config = BotoConfig(
            region_name=config.region,
            signature_version="s3v4",
            s3={"addressing_style": config.addressing_style},
            retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
            connect_timeout=config.timeout_s,
            read_timeout=config.timeout_s,
        )
        session = boto3.session.Session(
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            region_name=config.region,
        )
        self.client: Any = session.client("s3", endpoint_url=config.endpoint_url, config=boto_config)

    def object_key(self, key: str) -> str:
        """The bucket key of a store key (prefix applied)."""
        return self._prefix + validate_key(key)

    def url_for(self, key: str) -> str:
        object_key = self.object_key(key)
        if self.config.url_mode == "public":
            assert self.config.public_base_url is not None
            return f"{self.config.public_base_url.rstrip('/')}/{quote(object_key, safe='/')}"
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.config.bucket, "Key": object_key},
            ExpiresIn=self.config.presign_expiry_s,
        )

    async def start(self) -> None:
        if self.config.create_bucket:
            await self.ensure_bucket()

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (the `create_bucket` option calls this at start)."""

        def _ensure() -> None:
            try:
                self.client.head_bucket(Bucket=self.config.bucket)
                return
            except ClientError as exc:
                if _error_code(exc) not in _NO_BUCKET_CODES:
                    raise
            kwargs: dict[str, Any] = {"Bucket": self.config.bucket}
            if self.config.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as exc:
                if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        try:
            await asyncio.to_thread(_ensure)
        except (BotoCoreError, ClientError) as exc:
            log.warning("creating bucket %s failed: %s", self.config.bucket, exc)
            raise StorageError(
                f"Could not create S3 bucket {self.config.bucket!r}.", error_code="S3_UNAVAILABLE"
            ) from exc

    async def check(self) -> None:
        """Ready means writable: a store that answers HEAD but cannot take a PUT (a volume server
        still starting, a read-only policy) is not ready, so the probe writes one tiny object."""
        try:
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.config.bucket,
                Key=self.object_key(".healthcheck"),
                Body=b"ok",
                ContentType="text/plain",
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("S3 bucket %s unreachable: %s", self.config.bucket, exc)
            raise StorageError("S3 storage is unavailable.", error_code="S3_UNAVAILABLE") from exc

    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        object_key = self.object_key(key)
        try:
            await asyncio.to_thread(
                self.client.put_object, Bucket=self.config.bucket, Key=object_key, Body=data, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("S3 put %s/%s failed: %s", self.config.bucket, object_key, exc)
            raise StorageError(UPLOAD_FAILED, error_code="S3_UPLOAD_FAILED") from exc

    def _delete_bucket_keys(self, object_keys: list[str]) -> None:
        """Delete bucket keys (prefix included), 1000 per DeleteObjects call; blocking."""
        for start in range(0, len(object_keys), 1000):
            chunk = [{"Key": key} for key in object_keys[start : start + 1000]]
            answer = self.client.delete_objects(Bucket=self.config.bucket, Delete={"Objects": chunk, "Quiet": True})
            errors = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StorageError(
                    f"S3 refused to delete {len(errors)} object(s): {errors[0].get('Code')}.",
                    error_code="STORAGE_DELETE_FAILED",
                )

    async def _delete_objects(self, keys: list[str]) -> None:
        try:
            await asyncio.to_thread(self._delete_bucket_keys, [self.object_key(key) for key in keys])
        except (BotoCoreError, ClientError) as exc:
            log.warning("S3 delete in %s failed: %s", self.config.bucket, exc)
            raise StorageError("Failed to delete stored images.", error_code="STORAGE_DELETE_FAILED") from exc

    async def delete_older_than(self, cutoff: float) -> int:
        def _sweep() -> int:
            old: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=self._prefix):
                for item in page.get("Contents", []):
                    own = is_own_key(item["Key"][len(self._prefix) :])
                    if own and item["LastModified"].timestamp() < cutoff:
                        old.append(item["Key"])
            self._delete_bucket_keys(old)
            return len(old)

        try:
            return await asyncio.to_thread(_sweep)
        except (BotoCoreError, ClientError) as exc:
            log.warning("S3 sweep of %s failed: %s", self.config.bucket, exc)
            raise StorageError("Failed to sweep old images.", error_code="STORAGE_DELETE_FAILED") from exc

    async def _get_object(self, key: str) -> bytes:
        return await self._download(self.config.bucket, self.object_key(key))

    def input_prefixes(self, owner: str | None = None) -> list[str]:
        """The key prefixes an `s3://` initial image may be under: `input_prefixes`, or with an
        `owner` (the caller's API key's user id, keys on) only that owner's folder in each."""
        allowed = [prefix for prefix in self.config.input_prefixes if prefix]
        if owner is None:
            return allowed
        return [f"{prefix.rstrip('/')}/{sanitize_user_id(owner)}/" for prefix in allowed]

    async def get_s3_url(self, url: str, max_bytes: int | None = None, owner: str | None = None) -> bytes:
        """The object behind an `s3://bucket/key` initial image URL: the configured bucket, under one
        of `input_prefixes` (so no caller can read another's images or records through it), and
        with `owner` under that owner's own folder of one (`uploads/<owner>/...`).

        The key is taken as-is (no prefix), as a client names the object it uploaded. PayloadTooLarge
        when the object is larger than `max_bytes`.
        """
        bucket, key = parse_s3_url(url)
        if bucket != self.config.bucket:
            raise InvalidInput(f"Only s3://{self.config.bucket}/... URLs are accepted.", error_code="INVALID_URL")
        allowed = self.input_prefixes(owner)
        if not any(key.startswith(prefix) for prefix in allowed) or key.endswith(".json"):
            where = ", ".join(f"s3://{bucket}/{prefix}" for prefix in allowed) or "nowhere (none configured)"
            raise InvalidInput(f"s3:// images are accepted only under {where}.", error_code="INVALID_URL")
        return await self._download(bucket, key, max_bytes)

    async def _download(self, bucket: str, object_key: str, max_bytes: int | None = None) -> bytes:
        def _read() -> bytes:
            response = self.client.get_object(Bucket=bucket, Key=object_key)
            with response["Body"] as body:
                if max_bytes is None:
                    return body.read()
                if int(response.get("ContentLength") or 0) > max_bytes:
                    raise PayloadTooLarge(f"The image is larger than the limit of {max_bytes} bytes.")
                data = body.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise PayloadTooLarge(f"The image is larger than the limit of {max_bytes} bytes.")
                return data

        try:
            return await asyncio.to_thread(_read)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise NotFound(f"No stored object {object_key!r}.") from exc
            log.warning("S3 get %s/%s failed: %s", bucket, object_key, exc)
            raise StorageError(DOWNLOAD_FAILED, error_code="S3_DOWNLOAD_FAILED") from exc
        except BotoCoreError as exc:
            log.warning("S3 get %s/%s failed: %s", bucket, object_key, exc)
            raise StorageError(DOWNLOAD_FAILED, error_code="S3_DOWNLOAD_FAILED") from exc
