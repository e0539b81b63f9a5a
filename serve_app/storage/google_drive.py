"""Images on Google Drive (source spec image-generation-storage-guide.md), through the Drive API v3.

Every image and `.json` record is a private file named by its key in one folder (`folder_id`);
nothing is shared, so the ingress serves the images itself under `/files/{key}` (`ingress_serves`),
with the local store's access rules. Sources: Google's "Upload file data", files.create /
files.get / files.delete / files.list references, "Using OAuth 2.0 for Server to Server
Applications" (the JWT bearer grant).

- Access token: `POST {token_url}` with `grant_type=refresh_token` (client id, secret, refresh token)
  or `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an RS256 JWT assertion signed with
  the service account's key (`iss` its email, `scope`, `aud` the token URL, one hour). Kept until a
  minute before `expires_in`; a 401 from the API takes a new one and retries once.
- Write: `POST {api}/upload/drive/v3/files?uploadType=multipart` (multipart/related: the JSON
  metadata `{name, parents, mimeType}`, then the bytes), or above `resumable_above_bytes` a
  resumable upload (the metadata to `?uploadType=resumable`, then the bytes in one `PUT` to the
  session URI in `Location`); a key that exists is overwritten in place (`PATCH .../files/{id}`).
- Find: `GET {api}/drive/v3/files?q=name = '<key>' and '<folder>' in parents and trashed = false`
  (ids are remembered per replica). Read: `GET .../files/{id}?alt=media`. Delete:
  `DELETE .../files/{id}` (204). Sweep: files.list by `modifiedTime <` the cutoff, pages by
  `nextPageToken`; only this app's keys (`is_own_key`) are deleted.
Errors keep the storage contract's codes (S3_UPLOAD_FAILED, S3_DOWNLOAD_FAILED,
STORAGE_DELETE_FAILED, S3_UNAVAILABLE, NotFound), with Drive's reason in them, secrets redacted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from serve_app.errors import ConfigurationError, NotFound
from serve_app.settings import Settings
from serve_app.storage.base import ingress_url, is_own_key
from serve_app.storage.config import GoogleDriveStorageConfig
from serve_app.storage.http_store import HttpImageStore, required_secrets

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_MARGIN_S = 60  # a token this close to its expiry is replaced before use
ASSERTION_TTL_S = 3600  # Google's longest: one hour


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def service_account_assertion(info: dict[str, Any], scope: str, audience: str, now: int) -> str:
    """The signed JWT a service account trades for an access token (RS256 over `header.claims`)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_private_key(str(info["private_key"]).encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError("The service account's private_key is not an RSA key.")
    header = {"alg": "RS256", "typ": "JWT", **({"kid": info["private_key_id"]} if info.get("private_key_id") else {})}
    claims = {"iss": info["client_email"], "scope": scope, "aud": audience, "iat": now, "exp": now + ASSERTION_TTL_S}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _service_account(settings: Settings) -> dict[str, Any]:
    """The service account key from GOOGLE_DRIVE_SERVICE_ACCOUNT_JSON or the file GOOGLE_APPLICATION_CREDENTIALS."""
    if settings.google_drive_service_account_json is not None:
        text, where = (
            settings.google_drive_service_account_json.get_secret_value(),
            "$GOOGLE_DRIVE_SERVICE_ACCOUNT_JSON",
        )
    elif settings.google_application_credentials:
        where = f"$GOOGLE_APPLICATION_CREDENTIALS ({settings.google_application_credentials})"
        try:
            text = Path(settings.google_application_credentials).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"Google Drive storage cannot read {where}: {exc.strerror}.") from exc
    else:
        raise ConfigurationError(
            "Google Drive storage with auth service_account needs $GOOGLE_DRIVE_SERVICE_ACCOUNT_JSON or "
            "$GOOGLE_APPLICATION_CREDENTIALS set in the environment."
        )
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{where} is not a service account JSON key.") from exc
    if not isinstance(info, dict) or not info.get("client_email") or not info.get("private_key"):
        raise ConfigurationError(f"{where} is not a service account JSON key (client_email, private_key).")
    try:
        service_account_assertion(info, "check", "check", 0)  # the key loads and signs
    except ImportError as exc:
        raise ConfigurationError("auth service_account needs the `cryptography` package.") from exc
    except ValueError as exc:
        raise ConfigurationError(f"The private_key in {where} does not load.") from exc
    return info


def _quoted(value: str) -> str:
    """A string literal of Drive's query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class GoogleDriveImageStore(HttpImageStore):
    service = "Google Drive"
    ingress_serves = True

    def __init__(
        self, config: GoogleDriveStorageConfig, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        secret = settings.google_drive_client_secret
        refresh = settings.google_drive_refresh_token
        self._grant: dict[str, str] = {}
        self._account: dict[str, Any] | None = None
        if config.auth == "oauth":
            env = required_secrets(
                "Google Drive",
                {
                    "GOOGLE_DRIVE_CLIENT_ID": settings.google_drive_client_id,
                    "GOOGLE_DRIVE_CLIENT_SECRET": secret.get_secret_value() if secret else None,
                    "GOOGLE_DRIVE_REFRESH_TOKEN": refresh.get_secret_value() if refresh else None,
                },
            )
            self._grant = {
                "grant_type": "refresh_token",
                "client_id": env["GOOGLE_DRIVE_CLIENT_ID"],
                "client_secret": env["GOOGLE_DRIVE_CLIENT_SECRET"],
                "refresh_token": env["GOOGLE_DRIVE_REFRESH_TOKEN"],
            }
            secrets = [self._grant["client_secret"], self._grant["refresh_token"]]
        else:
            self._account = _service_account(settings)
            secrets = [str(self._account["private_key"])]
        super().__init__(config.timeout_s, secrets)
        self.config = config
        self._api_root = config.api_base_url.rstrip("/")
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self._ids: dict[str, str] = {}  # key -> file id, as found or written by this replica

    def url_for(self, key: str) -> str:
        return ingress_url(self.config.public_base_url, key)

    def _error_text(self, response: httpx.Response) -> str:
        body = response.json()
        error = body.get("error")
        if isinstance(error, dict):  # the API: {"error": {"code", "message", "errors": [{"reason", ...}]}}
            reasons = ", ".join(str(e.get("reason")) for e in error.get("errors", []) if e.get("reason"))
            return f"{error.get('message', '')}" + (f" ({reasons})" if reasons else "")
        if error:  # the token endpoint: {"error": "invalid_grant", "error_description": "..."}
            return f"{error}: {body.get('error_description', '')}".rstrip(": ")
        return ""

    # -- credentials --------------------------------------------------------------------------------

    async def _access_token(self, code: str, stale: str | None = None) -> str:
        """A live access token; a new one when there is none, it is about to expire, or it is `stale`
        (the API refused it). A refusal of the credentials is StorageError `code`."""
        async with self._token_lock:
            if self._token is not None and self._token != stale and self._clock() < self._token_expires:
                return self._token
            if self._account is not None:
                now = int(self._clock())
                audience = self.config.token_url
                form = {
                    "grant_type": JWT_BEARER,
                    "assertion": service_account_assertion(self._account, self.config.scope, audience, now),
                }
            else:
                form = self._grant
            response = await self._send("POST", self.config.token_url, code, data=form)
            try:
                body = response.json() if response.status_code == 200 else {}
            except ValueError:
                body = {}
            if not body.get("access_token"):
                raise self._refused(response, code, "the credentials")
            self._token = str(body["access_token"])
            self._token_expires = self._clock() + float(body.get("expires_in", 3600)) - TOKEN_MARGIN_S
            return self._token

    async def _call(self, method: str, url: str, code: str, **kwargs: Any) -> httpx.Response:
        """An authorised API request; on a 401 the token is renewed and the request sent once more."""
        token = await self._access_token(code)
        headers = kwargs.pop("headers", {})
        response = await self._send(
            method, url, code, headers={**headers, "Authorization": f"Bearer {token}"}, **kwargs
        )
        if response.status_code == 401:
            token = await self._access_token(code, stale=token)
            response = await self._send(
                method, url, code, headers={**headers, "Authorization": f"Bearer {token}"}, **kwargs
            )
        return response

    # -- files --------------------------------------------------------------------------------------

    def _files(self, file_id: str = "", upload: bool = False) -> str:
        root = f"{self._api_root}/upload/drive/v3/files" if upload else f"{self._api_root}/drive/v3/files"
        return f"{root}/{file_id}" if file_id else root

    def _list(self, query: str, code: str, fields: str = "id,name") -> AsyncIterator[dict[str, Any]]:
        params = {
            "q": f"{_quoted(self.config.folder_id)} in parents and trashed = false and {query}",
            "fields": f"nextPageToken,files({fields})",
            "pageSize": "1000",
            "spaces": "drive",
            "supportsAllDrives": "true",
            "includeItemsFromAllDrives": "true",
        }
        return self._paged(self._files(), code, params, ("files", "pageToken", "nextPageToken"), send=self._call)

    async def _find(self, key: str, code: str) -> str | None:
        """The id of the file named `key` in the folder, or None."""
        if key in self._ids:
            return self._ids[key]
        async with aclosing(self._list(f"name = {_quoted(key)}", code)) as found:
            async for match in found:
                self._ids[key] = str(match["id"])
                return self._ids[key]
        return None

    async def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        code = "S3_UPLOAD_FAILED"
        file_id = await self._find(key, code)
        metadata: dict[str, Any] = {"name": key, "mimeType": content_type}
        if file_id is None:
            metadata["parents"] = [self.config.folder_id]
        method = "PATCH" if file_id else "POST"
        params = {"supportsAllDrives": "true", "fields": "id,name"}
        url = self._files(file_id or "", upload=True)
        resumable = len(data) > self.config.resumable_above_bytes
        if resumable:  # the metadata opens a session; the bytes follow in one PUT to its URI
            first: dict[str, Any] = {
                "json": metadata,
                "headers": {"X-Upload-Content-Type": content_type, "X-Upload-Content-Length": str(len(data))},
            }
        else:  # one multipart/related request: the JSON metadata, then the bytes
            boundary = uuid.uuid4().hex
            head = (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(metadata)}\r\n"
                f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
            ).encode()
            first = {
                "content": head + data + f"\r\n--{boundary}--\r\n".encode(),
                "headers": {"Content-Type": f"multipart/related; boundary={boundary}"},
            }
        kind = "resumable" if resumable else "multipart"
        response = await self._call(method, url, code, params={"uploadType": kind, **params}, **first)
        if resumable and response.status_code == 200 and response.headers.get("location"):
            session = response.headers["location"]
            response = await self._send("PUT", session, code, content=data, headers={"Content-Type": content_type})
        if file_id is not None and response.status_code == 404:  # deleted elsewhere since this replica saw it
            self._ids.pop(key, None)
            return await self._put_object(key, data, content_type)
        if response.status_code not in (200, 201) or "id" not in response.text:
            raise self._refused(response, code, f"the upload of {key}")
        self._ids[key] = str(response.json()["id"])

    async def _get_object(self, key: str) -> bytes:
        code = "S3_DOWNLOAD_FAILED"
        file_id = await self._find(key, code)
        if file_id is not None:
            response = await self._call(
                "GET", self._files(file_id), code, params={"alt": "media", "supportsAllDrives": "true"}
            )
            if response.status_code == 200:
                return response.content
            if response.status_code != 404:
                raise self._refused(response, code, f"to read {key}")
            self._ids.pop(key, None)  # deleted elsewhere
        raise NotFound(f"No stored object {key!r}.")

    async def _delete_file(self, key: str, file_id: str) -> None:
        code = "STORAGE_DELETE_FAILED"
        response = await self._call("DELETE", self._files(file_id), code, params={"supportsAllDrives": "true"})
        if response.status_code not in (200, 204, 404):
            raise self._refused(response, code, f"to delete {key}")
        self._ids.pop(key, None)

    async def _delete_objects(self, keys: list[str]) -> None:
        for key in keys:
            file_id = await self._find(key, "STORAGE_DELETE_FAILED")
            if file_id is not None:
                await self._delete_file(key, file_id)

    async def delete_older_than(self, cutoff: float) -> int:
        before = datetime.fromtimestamp(cutoff, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        old = [
            (str(found["name"]), str(found["id"]))
            async for found in self._list(f"modifiedTime < '{before}'", "STORAGE_DELETE_FAILED")
            if is_own_key(str(found.get("name", "")))
        ]
        for key, file_id in old:
            await self._delete_file(key, file_id)
        return len(old)

    async def check(self) -> None:
        code = "S3_UNAVAILABLE"
        response = await self._call("GET", f"{self._api_root}/drive/v3/about", code, params={"fields": "user"})
        if response.status_code != 200:
            raise self._refused(response, code, "the about request")
        if self.config.folder_id != "root":
            folder = await self._call(
                "GET", self._files(self.config.folder_id), code, params={"fields": "id", "supportsAllDrives": "true"}
            )
            if folder.status_code != 200:
                raise self._refused(folder, code, f"the folder {self.config.folder_id}")
