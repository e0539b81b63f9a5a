"""Images on Cloudinary (source spec image-generation-storage-guide.md), through its REST APIs.

Nothing stored is a public resource: images, the users' photos and the JSON reproducibility
records are all uploaded with delivery type `authenticated`, which Cloudinary serves only to a
signed request. Sources: Cloudinary's SDK, pycloudinary `cloudinary/utils.py` (`sign_request`,
`private_download_url`, `cloudinary_url(sign_url=True)`), and its tests' known answers.

- Upload (signed): `POST {api}/v1_1/{cloud}/{image|raw}/upload`, multipart `file` with
  `public_id`, `overwrite`, `type=authenticated`, `timestamp`, `api_key` and `signature` = SHA-1
  hex of the signed parameters sorted by name as `k=v&k=v`, followed by the API secret (the
  "string to sign"). Images are `image` resources whose public id is the key without its
  extension (the extension is the format); records are `raw` resources whose public id is the key.
- URLs (`url_mode`):
  - `expiring` (the default; the only mode allowed with API keys on): a private download URL,
    `{api}/v1_1/{cloud}/{kind}/download?` + signed `timestamp`, `public_id`, `format`, `type`,
    `expires_at` (now + `url_expiry_s`); Cloudinary refuses it after `expires_at`, and the CDN
    never caches it.
  - `cdn`: a signed delivery URL, `{delivery}/{cloud}/{kind}/authenticated/s--SIG--/v1/{id}[.{fmt}]`,
    SIG = the first 8 characters of the URL-safe base64 SHA-1 of `{id}[.{fmt}]` + the API secret.
    Cached by the CDN, and valid for ever: whoever holds one sees the image.
- `get` reads through a download URL that expires in minutes.
- Delete: signed `POST .../{kind}/destroy` with `public_id` and `type`
  (`{"result": "ok" | "not found"}`).
- Sweep: the Admin API lists resources by kind and type and prefix (basic auth, `next_cursor`
  pages); only this app's keys (`is_own_key`) older than the cutoff are destroyed.
Resources this store wrote before it went private (type `upload`, public) are still read,
deleted and swept, so none is left behind. Errors keep the storage contract's codes:
S3_UPLOAD_FAILED for an upload (the source spec's message), S3_DOWNLOAD_FAILED,
STORAGE_DELETE_FAILED, S3_UNAVAILABLE, NotFound for a missing object; Cloudinary's words in them
are redacted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from serve_app.errors import ConfigurationError, NotFound
from serve_app.storage.base import is_own_key
from serve_app.storage.config import CloudinaryStorageConfig
from serve_app.storage.http_store import HttpImageStore, required_secrets

PRIVATE = "authenticated"  # the delivery type of everything this store uploads
LEGACY = "upload"  # the public type this store used before: still read, deleted and swept
READ_URL_TTL_S = 300  # how long the download URL `get` makes itself stays valid


def signature(params: dict[str, Any], secret: str) -> str:
    """Cloudinary's signature: SHA-1 of `k=v` pairs sorted by name, joined with `&`, then the secret."""
    signed = "&".join(f"{name}={params[name]}" for name in sorted(params) if params[name] not in (None, ""))
    return hashlib.sha1((signed + secret).encode("utf-8")).hexdigest()


def url_signature(to_sign: str, secret: str) -> str:
    """A delivery URL's `s--SIG--` component: the first 8 characters of the URL-safe base64 SHA-1
    of the path after the version (`{public_id}.{format}`) followed by the API secret."""
    digest = hashlib.sha1((to_sign + secret).encode("utf-8")).digest()
    return "s--" + base64.urlsafe_b64encode(digest)[:8].decode("ascii") + "--"


class CloudinaryImageStore(HttpImageStore):
    service = "Cloudinary"

    def __init__(self, config: CloudinaryStorageConfig, *, clock: Callable[[], float] = time.time) -> None:
        if not config.cloud_name:  # build_store fills it from $CLOUDINARY_CLOUD_NAME
            raise ConfigurationError("Cloudinary storage needs storage.cloud_name or $CLOUDINARY_CLOUD_NAME.")
        env = required_secrets(
            "Cloudinary", {var: os.environ.get(var) for var in (config.api_key_env, config.api_secret_env)}
        )
        self.config = config
        self._key = env[config.api_key_env]
        self._secret = env[config.api_secret_env]
        super().__init__(config.timeout_s, [self._key, self._secret])
        self._folder = config.folder.strip("/") + "/" if config.folder.strip("/") else ""
        self._clock = clock  # Unix time: signatures' timestamps and URLs' expiry

    # -- names ------------------------------------------------------------------------------------

    @staticmethod
    def _raw(key: str) -> bool:
        return key.endswith(".json")

    def public_id(self, key: str) -> str:
        stem = key if self._raw(key) else key.rsplit(".", 1)[0]
        return self._folder + stem

    def _kind(self, key: str) -> str:
        return "raw" if self._raw(key) else "image"

    def _format(self, key: str) -> str:
        return "" if self._raw(key) else key.rsplit(".", 1)[1]

    def url_for(self, key: str) -> str:
        if self.config.url_mode == "cdn":
            source = self.public_id(key) + (f".{self._format(key)}" if self._format(key) else "")
            base = self.config.delivery_base_url.rstrip("/")
            signed = url_signature(source, self._secret)
            return f"{base}/{self.config.cloud_name}/{self._kind(key)}/{PRIVATE}/{signed}/v1/{source}"
        return self.download_url(key, int(self._clock()) + self.config.url_expiry_s)

    def download_url(self, key: str, expires_at: int, delivery_type: str = PRIVATE) -> str:
        """Cloudinary's private download URL of `key`, refused after Unix time `expires_at`."""
        params = {"public_id": self.public_id(key), "format": self._format(key), "type": delivery_type}
        query = urlencode(self._signed({**params, "expires_at": str(expires_at)}))
        return f"{self._api(self._kind(key), 'download')}?{query}"

    def _api(self, kind: str, action: str) -> str:
        return f"{self.config.api_base_url.rstrip('/')}/v1_1/{self.config.cloud_name}/{kind}/{action}"

    def _signed(self, params: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in params.items() if v not in (None, "")}
        params["timestamp"] = str(int(self._clock()))
        return {**params, "api_key": self._key, "signature": signature(params, self._secret)}

    def _error_text(self, response: httpx.Response) -> str:
        return str(response.json().get("error", {}).get("message") or "")

    # -- the interface -------------------------------------------------------------------------------

    async def check(self) -> None:
        ping = f"{self.config.api_base_url.rstrip('/')}/v1_1/{self.config.cloud_name}/ping"
        response = await self._send("GET", ping, "S3_UNAVAILABLE", auth=(self._key, self._secret))
        if response.status_code != 200:
            raise self._refused(response, "S3_UNAVAILABLE", "the ping")

    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        form = self._signed({"public_id": self.public_id(key), "overwrite": "true", "type": PRIVATE})
        files = {"file": (key.rsplit("/", 1)[-1], data, content_type)}
        response = await self._send(
            "POST", self._api(self._kind(key), "upload"), "S3_UPLOAD_FAILED", data=form, files=files
        )
        if response.status_code != 200:
            raise self._refused(response, "S3_UPLOAD_FAILED", f"the upload of {key}")

    async def _get_object(self, key: str) -> bytes:
        for delivery_type in (PRIVATE, LEGACY):
            url = self.download_url(key, int(self._clock()) + READ_URL_TTL_S, delivery_type)
            response = await self._send("GET", url, "S3_DOWNLOAD_FAILED")
            if response.status_code == 200:
                return response.content
            if response.status_code != 404:
                raise self._refused(response, "S3_DOWNLOAD_FAILED", f"to read {key}")
        raise NotFound(f"No stored object {key!r}.")

    async def _delete_objects(self, keys: list[str]) -> None:
        for key in keys:
            if not await self._destroy(key, PRIVATE):
                await self._destroy(key, LEGACY)

    async def _destroy(self, key: str, delivery_type: str) -> bool:
        """Destroy one resource; whether it was there."""
        form = self._signed({"public_id": self.public_id(key), "type": delivery_type, "invalidate": "true"})
        response = await self._send("POST", self._api(self._kind(key), "destroy"), "STORAGE_DELETE_FAILED", data=form)
        try:
            result = response.json().get("result") if response.status_code == 200 else None
        except (ValueError, AttributeError):
            result = None
        if result not in ("ok", "not found"):
            raise self._refused(response, "STORAGE_DELETE_FAILED", f"to delete {key}")
        return result == "ok"

    async def delete_older_than(self, cutoff: float) -> int:
        old: list[tuple[str, str]] = []
        for kind in ("image", "raw"):
            for delivery_type in (PRIVATE, LEGACY):
                async for resource in self._list(kind, delivery_type):
                    key = self._key_of(resource, kind)
                    created = datetime.fromisoformat(str(resource.get("created_at", "")).replace("Z", "+00:00"))
                    if key is not None and is_own_key(key) and created.timestamp() < cutoff:
                        old.append((key, delivery_type))
        for key, delivery_type in old:
            await self._destroy(key, delivery_type)
        return len(old)

    def _key_of(self, resource: dict[str, Any], kind: str) -> str | None:
        public_id = str(resource.get("public_id", ""))
        if not public_id.startswith(self._folder):
            return None
        stem = public_id[len(self._folder) :]
        return stem if kind == "raw" else f"{stem}.{resource.get('format', '')}"

    def _list(self, kind: str, delivery_type: str) -> AsyncIterator[dict[str, Any]]:
        return self._paged(
            f"{self._api('resources', kind)}/{delivery_type}",
            "STORAGE_DELETE_FAILED",
            {"prefix": self._folder, "max_results": 500},
            ("resources", "next_cursor", "next_cursor"),
            auth=(self._key, self._secret),
        )
