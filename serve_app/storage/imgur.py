"""Images on Imgur (source spec image-generation-storage-guide.md), through its API 3, uploaded
anonymously with the application's Client-ID.

An Imgur image is public to anyone holding its link (unlisted: in no gallery, found by nobody
else), so `AppArgs` refuses this store with API keys on. Imgur takes images only: the `.json`
reproducibility records stay in the ledger, never on Imgur. The ledger (one SQLite file on this
node) maps each key to its Imgur id, link and deletehash (an anonymous image can only be deleted
with its deletehash), so retention can delete what it stored; being node-local, `AppArgs` refuses
it beside a cluster's shared task store.

- Upload: `POST {api}/3/image`, `Authorization: Client-ID <id>`, multipart `image` (the bytes),
  `type=file`, `name`; answers `{"data": {"id", "link", "deletehash", ...}, "success", "status"}`.
  A key written again gets a new image, and the old one is deleted.
- Read: `GET <link>` (i.imgur.com); a deleted image redirects to `removed.png`: NotFound.
- Delete: `DELETE {api}/3/image/{deletehash}` (`{"data": true, ...}`); a 404 is already gone.
- Ready: `GET {api}/3/credits` (the Client-ID's remaining uploads).
Errors (`{"data": {"error": ...}, "success": false, "status": n}`) keep the storage contract's
codes, with Imgur's words in them, the Client-ID redacted.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from serve_app.errors import ConfigurationError, NotFound, StorageError
from serve_app.settings import Settings
from serve_app.storage.base import is_own_key
from serve_app.storage.config import ImgurStorageConfig
from serve_app.storage.http_store import HttpImageStore, required_secrets

SCHEMA = """CREATE TABLE IF NOT EXISTS imgur_objects (
    key TEXT PRIMARY KEY,
    image_id TEXT,
    link TEXT,
    deletehash TEXT,
    record BLOB,
    created_at REAL NOT NULL
)"""


class ImgurImageStore(HttpImageStore):
    service = "Imgur"

    def __init__(
        self, config: ImgurStorageConfig, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        client_id = settings.imgur_client_id.get_secret_value() if settings.imgur_client_id else None
        self._client_id = required_secrets("Imgur", {"IMGUR_CLIENT_ID": client_id})["IMGUR_CLIENT_ID"]
        if not config.ledger_path:
            raise ConfigurationError("Imgur storage needs a ledger_path (AppArgs.resolved() sets one).")
        super().__init__(config.timeout_s, [self._client_id])
        self.config = config
        self.ledger = Path(config.ledger_path).expanduser().resolve()
        self._api_root = config.api_base_url.rstrip("/")
        self._clock = clock

    def _error_text(self, response: httpx.Response) -> str:
        error = response.json().get("data", {}).get("error")
        return str(error.get("message", "") if isinstance(error, dict) else error or "")

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Client-ID {self._client_id}"}

    # -- the ledger -----------------------------------------------------------------------------------

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.ledger, timeout=30)
        try:
            with connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(SCHEMA)
                yield connection
        finally:
            connection.close()

    def _row(self, key: str) -> dict[str, Any] | None:
        with self._db() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM imgur_objects WHERE key = ?", (key,)).fetchone()
        return dict(row) if row is not None else None

    async def _ledger(self, code: str, call: Callable[[], Any]) -> Any:
        """Run a ledger operation in a thread; a failing ledger is StorageError `code`."""
        try:
            return await asyncio.to_thread(call)
        except sqlite3.Error as exc:
            raise StorageError(f"The Imgur ledger {self.ledger} failed: {exc}.", error_code=code) from exc

    def _remember(self, key: str, **fields: Any) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO imgur_objects (key, image_id, link, deletehash, record, created_at) "
                "VALUES (:key, :image_id, :link, :deletehash, :record, :created_at)",
                {"image_id": None, "link": None, "deletehash": None, "record": None, **fields, "key": key},
            )

    def _forget(self, key: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM imgur_objects WHERE key = ?", (key,))

    # -- the interface ------------------------------------------------------------------------------

    def url_for(self, key: str) -> str:
        row = self._row(key)
        if row is None or not row["link"]:
            raise NotFound(f"No stored image {key!r}.")
        return str(row["link"])

    async def check(self) -> None:
        await self._ledger("S3_UNAVAILABLE", lambda: self._row(""))
        response = await self._send("GET", f"{self._api_root}/3/credits", "S3_UNAVAILABLE", headers=self._auth)
        if response.status_code != 200:
            raise self._refused(response, "S3_UNAVAILABLE", "the credits request")

    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        code = "S3_UPLOAD_FAILED"
        before = await self._ledger(code, lambda: self._row(key))
        now = self._clock()
        if not content_type.startswith("image/"):  # a record: kept here, never on Imgur
            await self._ledger(code, lambda: self._remember(key, record=data, created_at=now))
        else:
            name = key.rsplit("/", 1)[-1]
            response = await self._send(
                "POST",
                f"{self._api_root}/3/image",
                code,
                headers=self._auth,
                data={"type": "file", "name": name},
                files={"image": (name, data, content_type)},
            )
            try:
                image = response.json()["data"] if response.status_code == 200 else {}
            except (ValueError, KeyError, TypeError):
                image = {}
            if not isinstance(image, dict) or not all(image.get(f) for f in ("id", "link", "deletehash")):
                raise self._refused(response, code, f"the upload of {key}")
            fields = {"image_id": image["id"], "link": image["link"], "deletehash": image["deletehash"]}
            await self._ledger(code, lambda: self._remember(key, **fields, created_at=now))
        if before is not None and before["deletehash"]:
            await self._delete_image(key, str(before["deletehash"]), code)  # the image it replaced

    async def _get_object(self, key: str) -> bytes:
        code = "S3_DOWNLOAD_FAILED"
        row = await self._ledger(code, lambda: self._row(key))
        if row is None:
            raise NotFound(f"No stored object {key!r}.")
        if row["record"] is not None:
            return bytes(row["record"])
        response = await self._send("GET", str(row["link"]), code)
        if response.status_code == 200:
            return response.content
        if response.status_code in (302, 404) or response.is_redirect:
            raise NotFound(f"No stored object {key!r} (Imgur removed it).")
        raise self._refused(response, code, f"to read {key}")

    async def _delete_image(self, key: str, deletehash: str, code: str) -> None:
        response = await self._send("DELETE", f"{self._api_root}/3/image/{deletehash}", code, headers=self._auth)
        if response.status_code not in (200, 404):
            raise self._refused(response, code, f"to delete {key}")

    async def _delete_objects(self, keys: list[str]) -> None:
        code = "STORAGE_DELETE_FAILED"
        for key in keys:
            row = await self._ledger(code, lambda key=key: self._row(key))  # type: ignore[misc]
            if row is None:
                continue
            if row["deletehash"]:
                await self._delete_image(key, str(row["deletehash"]), code)
            await self._ledger(code, lambda key=key: self._forget(key))  # type: ignore[misc]

    async def delete_older_than(self, cutoff: float) -> int:
        def _old() -> list[str]:
            with self._db() as db:
                rows = db.execute("SELECT key FROM imgur_objects WHERE created_at < ?", (cutoff,)).fetchall()
            return [key for (key,) in rows if is_own_key(key)]

        old = await self._ledger("STORAGE_DELETE_FAILED", _old)
        await self._delete_objects(old)
        return len(old)
