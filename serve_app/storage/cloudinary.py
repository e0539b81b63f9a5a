"""Images on Cloudinary (source spec image-generation-storage-guide.md), through its REST APIs.

- Upload (signed): `POST {api}/v1_1/{cloud}/{image|raw}/upload`, multipart `file` with
  `public_id`, `overwrite`, `timestamp`, `api_key` and `signature` = SHA-1 hex of the signed
  parameters sorted by name as `k=v&k=v`, followed by the API secret (Cloudinary's "string to
  sign"). Images are `image` resources whose public id is the key without its extension (the
  extension is the delivered format); the JSON reproducibility records are `raw` resources whose
  public id is the whole key.
- Delivery: `{delivery}/{cloud}/{image|raw}/upload/{public_id}[.{format}]`, which `url_for`
  returns and `get` reads back (a CDN URL: public, as S3's `public` URL mode).
- Delete: signed `POST .../{type}/destroy` (`{"result": "ok" | "not found"}`).
- Sweep: the Admin API lists `upload` resources by prefix (basic auth, `next_cursor` pages); only
  this app's keys (`is_own_key`) older than the cutoff are destroyed.
Errors keep the storage contract's codes: S3_UPLOAD_FAILED for an upload (the source spec's message),
S3_DOWNLOAD_FAILED, STORAGE_DELETE_FAILED, S3_UNAVAILABLE, NotFound for a missing object.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from datetime import datetime
from typing import Any

import httpx

from serve_app.errors import ConfigurationError, NotFound, StorageError
from serve_app.storage.base import ImageStore, is_own_key
from serve_app.storage.config import CloudinaryStorageConfig

log = logging.getLogger(__name__)

UPLOAD_FAILED = "Failed to upload image to S3."  # the source spec's message: clients match on it whatever the store


def signature(params: dict[str, Any], secret: str) -> str:
    """Cloudinary's signature: SHA-1 of `k=v` pairs sorted by name, joined with `&`, then the secret."""
    signed = "&".join(f"{name}={params[name]}" for name in sorted(params) if params[name] not in (None, ""))
    return hashlib.sha1((signed + secret).encode("utf-8")).hexdigest()


class CloudinaryImageStore(ImageStore):
    def __init__(self, config: CloudinaryStorageConfig) -> None:
        missing = [var for var in (config.api_key_env, config.api_secret_env) if not os.environ.get(var, "").strip()]
        if missing:
            raise ConfigurationError(f"Cloudinary storage needs ${' and $'.join(missing)} set in the environment.")
        self.config = config
        self._key = os.environ[config.api_key_env].strip()
        self._secret = os.environ[config.api_secret_env].strip()
        self._folder = config.folder.strip("/") + "/" if config.folder.strip("/") else ""
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout_s))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- names ------------------------------------------------------------------------------------

    @staticmethod
    def _raw(key: str) -> bool:
        return key.endswith(".json")

    def public_id(self, key: str) -> str:
        stem = key if self._raw(key) else key.rsplit(".", 1)[0]
        return self._folder + stem

    def _kind(self, key: str) -> str:
        return "raw" if self._raw(key) else "image"

    def url_for(self, key: str) -> str:
        suffix = "" if self._raw(key) else "." + key.rsplit(".", 1)[1]
        base = self.config.delivery_base_url.rstrip("/")
        return f"{base}/{self.config.cloud_name}/{self._kind(key)}/upload/{self.public_id(key)}{suffix}"

    def _api(self, kind: str, action: str) -> str:
        return f"{self.config.api_base_url.rstrip('/')}/v1_1/{self.config.cloud_name}/{kind}/{action}"

    def _signed(self, params: dict[str, Any]) -> dict[str, Any]:
        params = {**params, "timestamp": str(int(time.time()))}
        return {**params, "api_key": self._key, "signature": signature(params, self._secret)}

    # -- the interface -------------------------------------------------------------------------------

    async def check(self) -> None:
        try:
            response = await self._http().get(
                f"{self.config.api_base_url.rstrip('/')}/v1_1/{self.config.cloud_name}/ping",
                auth=(self._key, self._secret),
            )
        except httpx.HTTPError as exc:
            raise StorageError("Cloudinary is unreachable.", error_code="S3_UNAVAILABLE") from exc
        if response.status_code != 200:
            raise StorageError(
                f"Cloudinary answered HTTP {response.status_code}{_said(response)}.", error_code="S3_UNAVAILABLE"
            )

    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        form = self._signed({"public_id": self.public_id(key), "overwrite": "true"})
        try:
            response = await self._http().post(
                self._api(self._kind(key), "upload"),
                data=form,
                files={"file": (key.rsplit("/", 1)[-1], data, content_type)},
            )
        except httpx.HTTPError as exc:
            log.warning("Cloudinary upload of %s failed: %s", key, exc)
            raise StorageError(UPLOAD_FAILED, error_code="S3_UPLOAD_FAILED") from exc
        if response.status_code != 200:
            log.warning("Cloudinary refused the upload of %s: HTTP %s%s", key, response.status_code, _said(response))
            raise StorageError(f"{UPLOAD_FAILED[:-1]} (Cloudinary{_said(response)}).", error_code="S3_UPLOAD_FAILED")

    async def _get_object(self, key: str) -> bytes:
        try:
            response = await self._http().get(self.url_for(key))
        except httpx.HTTPError as exc:
            raise StorageError("Failed to download image from S3.", error_code="S3_DOWNLOAD_FAILED") from exc
        if response.status_code == 404:
            raise NotFound(f"No stored object {key!r}.")
        if response.status_code != 200:
            raise StorageError("Failed to download image from S3.", error_code="S3_DOWNLOAD_FAILED")
        return response.content

    async def _delete_objects(self, keys: list[str]) -> None:
        for key in keys:
            form = self._signed({"public_id": self.public_id(key), "invalidate": "true"})
            try:
                response = await self._http().post(self._api(self._kind(key), "destroy"), data=form)
            except httpx.HTTPError as exc:
                raise StorageError("Failed to delete stored images.", error_code="STORAGE_DELETE_FAILED") from exc
            if response.status_code != 200 or response.json().get("result") not in ("ok", "not found"):
                raise StorageError(
                    f"Cloudinary refused to delete {key!r}{_said(response)}.", error_code="STORAGE_DELETE_FAILED"
                )

    async def delete_older_than(self, cutoff: float) -> int:
        old: list[str] = []
        for kind in ("image", "raw"):
            async for resource in self._list(kind):
                key = self._key_of(resource, kind)
                created = datetime.fromisoformat(str(resource.get("created_at", "")).replace("Z", "+00:00"))
                if key is not None and is_own_key(key) and created.timestamp() < cutoff:
                    old.append(key)
        await self._delete_objects(old)
        return len(old)

    def _key_of(self, resource: dict[str, Any], kind: str) -> str | None:
        public_id = str(resource.get("public_id", ""))
        if not public_id.startswith(self._folder):
            return None
        stem = public_id[len(self._folder) :]
        return stem if kind == "raw" else f"{stem}.{resource.get('format', '')}"

    async def _list(self, kind: str) -> Any:
        cursor: str | None = None
        while True:
            params = {"prefix": self._folder, "max_results": 500, **({"next_cursor": cursor} if cursor else {})}
            try:
                response = await self._http().get(
                    self._api("resources", kind) + "/upload", params=params, auth=(self._key, self._secret)
                )
            except httpx.HTTPError as exc:
                raise StorageError("Failed to sweep old images.", error_code="STORAGE_DELETE_FAILED") from exc
            if response.status_code != 200:
                raise StorageError(
                    f"Cloudinary refused the listing{_said(response)}.", error_code="STORAGE_DELETE_FAILED"
                )
            body = response.json()
            for resource in body.get("resources", []):
                yield resource
            cursor = body.get("next_cursor")
            if not cursor:
                return


def _said(response: httpx.Response) -> str:
    try:
        message = response.json().get("error", {}).get("message")
    except (ValueError, AttributeError):
        return ""
    return f": {str(message)[:200]}" if message else ""
