"""The image store interface, collision-free key names and key validation shared by all backends."""

from __future__ import annotations

import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

from serve_app.errors import InvalidInput, StorageError

MAX_KEY_LEN = 1024
MAX_USER_LEN = 64
_USER_BAD = re.compile(r"[^A-Za-z0-9_-]")
_EXT_RE = re.compile(r"^[a-z0-9]{1,10}$")
_OWN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}/\d{8}/[0-9a-f]{32}\.[a-z0-9]{1,10}(\.json)?$")


def sanitize_user_id(user_id: str | None) -> str:
    """A user id safe as one key segment: [A-Za-z0-9_-] only (others become `_`), <= 64, never empty."""
    cleaned = _USER_BAD.sub("_", (user_id or "").strip())[:MAX_USER_LEN]
    return cleaned or "anonymous"


def make_key(user_id: str | None, ext: str = "png", now: datetime | None = None) -> str:
    """A new collision-free key `{user}/{yyyymmdd}/{uuid4hex}.{ext}` (UTC date)."""
    ext = ext.lower().lstrip(".")
    if not _EXT_RE.match(ext):
        raise ValueError(f"invalid file extension {ext!r}")
    day = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d")
    return f"{sanitize_user_id(user_id)}/{day}/{uuid.uuid4().hex}.{ext}"


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise InvalidInput.

    Refused: empty, longer than 1024 bytes, a leading `/`, backslashes, control characters, and empty,
    `.` or `..` segments, so no key can leave the store's root or prefix.
    """
    if not isinstance(key, str) or not key:
        raise InvalidInput("Storage key is empty.", error_code="INVALID_KEY")
    if len(key.encode("utf-8")) > MAX_KEY_LEN:
        raise InvalidInput("Storage key is too long.", error_code="INVALID_KEY")
    if key.startswith("/") or "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidInput(
            "Storage key has a leading slash, a backslash or control characters.", error_code="INVALID_KEY"
        )
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidInput("Storage key has an empty, '.' or '..' segment.", error_code="INVALID_KEY")
    return key


def is_own_key(key: str) -> bool:
    """Whether `key` has the shape `make_key` gives (or its `.json` sidecar): only such objects are
    ever swept by age, never anything else that shares the bucket or folder."""
    return bool(_OWN_KEY_RE.match(key))


def ingress_url(base_url: str | None, key: str) -> str:
    """The URL of `key` at the ingress's `GET /files/{key}` (relative when `base_url` is None)."""
    return f"{(base_url or '').rstrip('/')}/files/{quote(validate_key(key), safe='/')}"


def sidecar_key(key: str) -> str:
    """Key of the JSON record stored beside an image."""
    return key + ".json"


class ImageStore(ABC):
    """Where generated (and uploaded) images live; every method is safe to call from async code."""

    #: Whether the ingress serves this store's images itself under `GET /files/{key}` (the store
    #: keeps them private and `url_for` points there), with the local store's access rules.
    ingress_serves: ClassVar[bool] = False

    #: Told the error code of every StorageError that put, get or delete raise (the owning
    #: deployment counts them as backend errors); None: nobody listens.
    on_error: Callable[[str], None] | None = None

    @contextmanager
    def _observed(self) -> Iterator[None]:
        try:
            yield
        except StorageError as exc:
            if self.on_error is not None:
                self.on_error(exc.error_code)
            raise

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the backend at replica start (make the folder, create the bucket when configured)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""

    async def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Store `data` under `key` and return the URL clients use.

        With `metadata`, a JSON sidecar (e.g. the reproducibility record) is also written at
        `key + ".json"`, after the image. Raises InvalidInput for a bad key, StorageError on failure.
        """
        validate_key(key)
        with self._observed():
            await self._put_object(key, data, content_type)
            if metadata is not None:
                record = json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")
                await self._put_object(sidecar_key(key), record, "application/json")
        return self.url_for(key)

    async def get(self, key: str) -> bytes:
        """The bytes under `key`; NotFound when missing, StorageError when the store fails."""
        validate_key(key)
        with self._observed():
            return await self._get_object(key)

    async def get_metadata(self, key: str) -> dict[str, Any]:
        """The JSON sidecar written by `put(..., metadata=...)`; NotFound when there is none."""
        return json.loads(await self.get(sidecar_key(key)))

    async def delete(self, keys: list[str]) -> int:
        """Delete the objects under `keys` (a missing one is not an error); returns how many were
        asked for. StorageError when the store fails."""
        valid = [validate_key(key) for key in keys]
        if not valid:
            return 0
        with self._observed():
            await self._delete_objects(valid)
        return len(valid)

    @abstractmethod
    async def delete_older_than(self, cutoff: float) -> int:
        """Delete this app's objects (`is_own_key`) last written before Unix time `cutoff`;
        returns how many went."""

    @abstractmethod
    async def _delete_objects(self, keys: list[str]) -> None:
        """Delete objects (keys already validated); missing ones are skipped."""

    @abstractmethod
    def url_for(self, key: str) -> str:
        """The URL a client uses to download `key`."""

    @abstractmethod
    async def check(self) -> None:
        """Raise StorageError when the store is unreachable or unusable (readiness probe)."""

    @abstractmethod
    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        """Write one object (key already validated)."""

    @abstractmethod
    async def _get_object(self, key: str) -> bytes:
        """Read one object (key already validated)."""
