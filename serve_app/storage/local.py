"""Images on the local filesystem, served by the ingress under `/files/{key}`.

Writes are atomic (a temp file in the same folder, fsync, os.replace), so a reader never sees half an
image and a crash leaves at most a stray `.tmp-*` file. All file I/O runs in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

from serve_app.errors import ConfigurationError, InvalidInput, NotFound, StorageError
from serve_app.storage.base import ImageStore, ingress_url, is_own_key, validate_key
from serve_app.storage.config import LocalStorageConfig

log = logging.getLogger(__name__)


class LocalImageStore(ImageStore):
    """Files under `config.root`; URLs `{public_base_url}/files/{key}` (relative when the base is None).

    Error codes: STORAGE_WRITE_FAILED / STORAGE_READ_FAILED / STORAGE_UNAVAILABLE (StorageError, 500).
    """

    ingress_serves = True

    def __init__(self, config: LocalStorageConfig) -> None:
        if not config.root:
            raise ConfigurationError("Local storage needs a root folder (AppArgs.resolved() sets one).")
        self.config = config
        self.root = Path(config.root).expanduser().resolve()
        self._base_url = (config.public_base_url or "").rstrip("/")  # None: relative /files/... URLs

    def path_for(self, key: str) -> Path:
        """The file of `key`, guaranteed inside root (InvalidInput otherwise); it may not exist."""
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidInput("Storage key escapes the storage root.", error_code="INVALID_KEY")
        return path

    def url_for(self, key: str) -> str:
        return ingress_url(self._base_url, key)

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def check(self) -> None:
        def _check() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(f"{self.root} is not writable")

        try:
            await asyncio.to_thread(_check)
        except OSError as exc:
            log.warning("local image store unusable: %s", exc)
            raise StorageError("Image storage is unavailable.", error_code="STORAGE_UNAVAILABLE") from exc

    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path_for(key)
        try:
            await asyncio.to_thread(_atomic_write, path, data)
        except OSError as exc:
            log.warning("writing %s failed: %s", path, exc)
            raise StorageError("Failed to store the image.", error_code="STORAGE_WRITE_FAILED") from exc

    async def _get_object(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"No stored object {key!r}.") from exc
        except OSError as exc:
            log.warning("reading %s failed: %s", path, exc)
            raise StorageError("Failed to read the image.", error_code="STORAGE_READ_FAILED") from exc

    async def _delete_objects(self, keys: list[str]) -> None:
        def _delete() -> None:
            for key in keys:
                self.path_for(key).unlink(missing_ok=True)

        try:
            await asyncio.to_thread(_delete)
        except OSError as exc:
            log.warning("deleting from %s failed: %s", self.root, exc)
            raise StorageError("Failed to delete stored images.", error_code="STORAGE_DELETE_FAILED") from exc

    async def delete_older_than(self, cutoff: float) -> int:
        def _sweep() -> int:
            """One bottom-up walk: old files of this app's key shape, then folders left empty."""
            deleted = 0
            for folder, _subfolders, files in os.walk(self.root, topdown=False):
                here = Path(folder)
                for name in files:
                    path = here / name
                    try:
                        if is_own_key(path.relative_to(self.root).as_posix()) and path.stat().st_mtime < cutoff:
                            path.unlink()
                            deleted += 1
                    except FileNotFoundError:
                        continue
                if here != self.root:
                    try:
                        here.rmdir()  # only an empty day or user folder goes
                    except OSError:
                        pass
            return deleted

        try:
            return await asyncio.to_thread(_sweep)
        except OSError as exc:
            raise StorageError("Failed to sweep old images.", error_code="STORAGE_DELETE_FAILED") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
