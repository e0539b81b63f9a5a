"""A local Google Drive (API v3) and Google OAuth token endpoint for tests, with Google's wire
format: paths, query parameters, status codes and error bodies.

- `POST /token` (form): `grant_type=refresh_token` with `client_id`, `client_secret`,
  `refresh_token`, or `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an RS256
  `assertion` whose signature, `iss`, `aud` (this URL), `iat`/`exp` (at most an hour) are checked
  against the stub's service account. Answers `{"access_token", "expires_in": 3599, "scope",
  "token_type": "Bearer"}`; refusals are `400 {"error": "invalid_grant", "error_description"}` or
  `401 {"error": "invalid_client", ...}`.
- Every API call needs `Authorization: Bearer <live token>`, else 401 (`authError`).
- `POST /upload/drive/v3/files?uploadType=multipart` (multipart/related: JSON metadata, then the
  media), `PATCH /upload/drive/v3/files/{id}?uploadType=multipart` (new content), and
  `uploadType=resumable` (metadata and `X-Upload-Content-*` headers -> `200` with the session URI in
  `Location`; `PUT` the bytes there, no token needed -> `200`/`201` and the file). A parent that does not exist is
  `404 File not found`.
- `GET /drive/v3/files/{id}?alt=media` (the bytes), `GET /drive/v3/files/{id}` (metadata, `fields`),
  `DELETE /drive/v3/files/{id}` (`204`), `GET /drive/v3/files?q=&fields=&pageSize=&pageToken=`
  (the query language's `name = '...'`, `'<id>' in parents`, `trashed = false`,
  `modifiedTime < '<RFC 3339>'`, joined by `and`; anything else is `400 Invalid Value`),
  `GET /drive/v3/about?fields=...` (`fields` is required, as Drive's).
Errors: `{"error": {"code", "message", "errors": [{"message", "domain", "reason", ...}], "status"}}`.
`expire_tokens()` makes every token given so far refused (as an expired one is); `quota_full` makes
uploads `403 storageQuotaExceeded`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import default
from typing import Any
from urllib.parse import parse_qs

from testbed.stubs.provider_base import ProviderStub, Reply, StubRequest

CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN = (
    "1234-stub.apps.googleusercontent.com",
    "GOCSPX-stub-secret",
    "1//0stub-refresh",
)
SERVICE_EMAIL = "imagegen@stub-project.iam.gserviceaccount.com"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FOLDER_MIME = "application/vnd.google-apps.folder"
_CLAUSE = re.compile(
    r"^(?:name = '(?P<name>(?:[^'\\]|\\.)*)'|'(?P<parent>[^']+)' in parents|trashed = (?P<trashed>true|false)"
    r"|modifiedTime < '(?P<before>[^']+)')$"
)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(when * 1000) % 1000:03d}Z"


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=UTC).timestamp()


def drive_error(code: int, message: str, reason: str, status: str = "", location: str = "") -> Reply:
    error: dict[str, Any] = {"message": message, "domain": "global", "reason": reason}
    if location:
        error |= {"location": location, "locationType": "parameter"}
    body: dict[str, Any] = {"code": code, "message": message, "errors": [error]}
    if status:
        body["status"] = status
    return Reply(code, {"error": body})


def _unauthenticated() -> Reply:
    reply = drive_error(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential.",
        "authError",
        "UNAUTHENTICATED",
    )
    reply.body["error"]["errors"][0] |= {"message": "Invalid Credentials", "location": "Authorization"}  # type: ignore[index]
    reply.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    return reply


class GoogleDriveStub(ProviderStub):
    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._files_lock = threading.Lock()
        super().__init__()

    def on_reset(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}  # id -> metadata + "_bytes"
        self.tokens: dict[str, float] = {}  # access token -> expiry (Unix time)
        self.sessions: dict[str, dict[str, Any]] = {}  # resumable upload id -> metadata
        self.grants: list[str] = []  # grant types, in order
        self.quota_full = False

    # -- test helpers --------------------------------------------------------------------------------

    def service_account_info(self, email: str = SERVICE_EMAIL) -> dict[str, str]:
        """A service account JSON key (as the Cloud console gives it) whose key this stub trusts."""
        from cryptography.hazmat.primitives import serialization

        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account",
            "project_id": "stub-project",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "token_uri": f"{self.base_url}/token",
        }

    def add_folder(self, name: str, parent: str = "root") -> str:
        file_id = secrets.token_urlsafe(24)
        with self._files_lock:
            self.files[file_id] = self._resource(file_id, {"name": name, "mimeType": FOLDER_MIME, "parents": [parent]})
        return file_id

    def expire_tokens(self) -> None:
        with self._files_lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def age(self, name_part: str, seconds: float) -> None:
        """Make matching files look `seconds` older (for the sweep)."""
        with self._files_lock:
            for found in self.files.values():
                if name_part in found["name"]:
                    found["modifiedTime"] = _rfc3339(_parse_time(found["modifiedTime"]) - seconds)

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        if mode == "rate_limit":
            return drive_error(429, "Rate Limit Exceeded", "rateLimitExceeded", "RESOURCE_EXHAUSTED")
        if mode == "forbidden":
            return drive_error(
                403, "The user does not have sufficient permissions for this file.", "insufficientFilePermissions"
            )
        if mode == "unauthorized":
            return _unauthenticated()
        return drive_error(500, "Internal Error", "internalError")

    def exempt(self, request: StubRequest) -> bool:
        return request.path == "/token"

    # -- routing ---------------------------------------------------------------------------------------

    def handle(self, request: StubRequest, mode: str) -> Reply:
        path = request.path
        if path == "/token" and request.method == "POST":
            return self._token(request)
        if request.method == "PUT" and path == "/upload/drive/v3/files" and request.query.get("upload_id"):
            return self._finish_session(request.query["upload_id"][0], request.body)  # the session URI is the grant
        if not self._authorised(request):
            return _unauthenticated()
        query = {k: v[0] for k, v in request.query.items()}
        if path == "/drive/v3/about" and request.method == "GET":
            if not query.get("fields"):
                return drive_error(
                    400, "The 'fields' parameter is required for this method.", "required", location="fields"
                )
            return Reply(200, {"user": {"kind": "drive#user", "displayName": "Stub", "emailAddress": SERVICE_EMAIL}})
        if path == "/drive/v3/files" and request.method == "GET":
            return self._list(query)
        if path.startswith("/drive/v3/files/"):
            return self._file(request.method, path.removeprefix("/drive/v3/files/"), query)
        if path.startswith("/upload/drive/v3/files"):
            return self._upload(request, path.removeprefix("/upload/drive/v3/files").strip("/"), query)
        return drive_error(404, "Not Found", "notFound")

    def _authorised(self, request: StubRequest) -> bool:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self._files_lock:
            return self.tokens.get(token, 0.0) > time.time()

    # -- OAuth -----------------------------------------------------------------------------------------

    def _token(self, request: StubRequest) -> Reply:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return Reply(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
            if form.get("refresh_token") != REFRESH_TOKEN:
                return Reply(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
            scope = "https://www.googleapis.com/auth/drive.file"
        elif grant == JWT_BEARER:
            problem, scope = self._assertion_problem(form.get("assertion", ""))
            if problem:
                return Reply(400, {"error": "invalid_grant", "error_description": problem})
        else:
            return Reply(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: " + grant})
        token = "ya29." + secrets.token_urlsafe(32)
        with self._files_lock:
            self.tokens[token] = time.time() + 3599
            self.grants.append(grant)
        return Reply(200, {"access_token": token, "expires_in": 3599, "scope": scope, "token_type": "Bearer"})

    def _assertion_problem(self, assertion: str) -> tuple[str, str]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            head, body, signature = assertion.split(".")
            header, claims = json.loads(_b64url_decode(head)), json.loads(_b64url_decode(body))
        except ValueError:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.", ""
        if header.get("alg") != "RS256":
            return "Invalid JWT Signature.", ""
        try:
            self._key.public_key().verify(
                _b64url_decode(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return "Invalid JWT Signature.", ""
        if claims.get("iss") != SERVICE_EMAIL:
            return "Invalid grant: account not found", ""
        if claims.get("aud") != f"{self.base_url}/token":
            return "Invalid JWT: Failed audience check.", ""
        now = time.time()
        iat, exp = float(claims.get("iat", 0)), float(claims.get("exp", 0))
        if not (iat - 300 <= now <= exp) or exp - iat > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.", ""
        if not claims.get("scope"):
            return "Invalid JWT: scope missing", ""
        return "", str(claims["scope"])

    # -- files -----------------------------------------------------------------------------------------

    def _resource(self, file_id: str, metadata: dict[str, Any], data: bytes = b"") -> dict[str, Any]:
        now = _rfc3339(time.time())
        return {
            "kind": "drive#file",
            "id": file_id,
            "name": str(metadata.get("name") or "Untitled"),
            "mimeType": str(metadata.get("mimeType") or "application/octet-stream"),
            "parents": list(metadata.get("parents") or ["root"]),
            "trashed": False,
            "createdTime": now,
            "modifiedTime": now,
            "size": str(len(data)),
            "_bytes": data,
        }

    @staticmethod
    def _fields(resource: dict[str, Any], fields: str | None) -> dict[str, Any]:
        public = {k: v for k, v in resource.items() if not k.startswith("_")}
        if not fields:
            return {k: public[k] for k in ("kind", "id", "name", "mimeType")}
        wanted = {f.strip() for f in fields.split(",")}
        return {k: v for k, v in public.items() if k in wanted}

    def _not_found(self, file_id: str) -> Reply:
        return drive_error(404, f"File not found: {file_id}.", "notFound", location="fileId")

    def _file(self, method: str, file_id: str, query: dict[str, str]) -> Reply:
        with self._files_lock:
            found = self.files.get(file_id)
            if found is None or found["trashed"]:
                return self._not_found(file_id)
            if method == "DELETE":
                del self.files[file_id]
                return Reply(204, b"")
        if method != "GET":
            return drive_error(405, "Method Not Allowed", "httpMethodNotAllowed")
        if query.get("alt") == "media":
            if found["mimeType"] == FOLDER_MIME:
                return drive_error(403, "Only files with binary content can be downloaded.", "fileNotDownloadable")
            return Reply(200, found["_bytes"], {"Content-Type": found["mimeType"]})
        return Reply(200, self._fields(found, query.get("fields")))

    def _matches(self, found: dict[str, Any], clauses: list[re.Match[str]]) -> bool:
        for clause in clauses:
            if clause["name"] is not None and found["name"] != re.sub(r"\\(.)", r"\1", clause["name"]):
                return False
            if clause["parent"] is not None and clause["parent"] not in found["parents"]:
                return False
            if clause["trashed"] is not None and found["trashed"] != (clause["trashed"] == "true"):
                return False
            if clause["before"] is not None and not _parse_time(found["modifiedTime"]) < _parse_time(clause["before"]):
                return False
        return True

    def _list(self, query: dict[str, str]) -> Reply:
        clauses = [_CLAUSE.match(part.strip()) for part in re.split(r"\s+and\s+", query.get("q", "")) if part.strip()]
        if any(clause is None for clause in clauses):
            return drive_error(400, "Invalid Value", "invalid", location="q")
        size = min(int(query.get("pageSize", "100")), 1000)
        start = int(query.get("pageToken", "0") or 0)
        with self._files_lock:
            found = sorted(
                (f for f in self.files.values() if self._matches(f, clauses)),  # type: ignore[arg-type]
                key=lambda f: f["id"],
            )
        page = found[start : start + size]
        fields = query.get("fields", "")
        inner = re.search(r"files\(([^)]*)\)", fields)
        body: dict[str, Any] = {
            "kind": "drive#fileList",
            "incompleteSearch": False,
            "files": [self._fields(f, inner.group(1) if inner else None) for f in page],
        }
        if start + size < len(found):
            body["nextPageToken"] = str(start + size)
        return Reply(200, body)

    # -- uploads ---------------------------------------------------------------------------------------

    def _upload(self, request: StubRequest, file_id: str, query: dict[str, str]) -> Reply:
        kind = query.get("uploadType")
        if request.method not in ("POST", "PATCH") or (request.method == "PATCH") != bool(file_id):
            return drive_error(405, "Method Not Allowed", "httpMethodNotAllowed")
        if kind == "multipart":
            head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
            message = BytesParser(policy=default).parsebytes(head + request.body)
            if not message.is_multipart():
                return drive_error(400, "Bad Request", "badContent")
            parts = list(message.iter_parts())
            if len(parts) != 2 or parts[0].get_content_type() != "application/json":
                return drive_error(400, "Bad Request", "badContent")
            metadata = json.loads(parts[0].get_payload(decode=True) or b"{}")
            metadata.setdefault("mimeType", parts[1].get_content_type())
            return self._store(file_id, metadata, parts[1].get_payload(decode=True) or b"", query)
        if kind == "resumable":
            upload_id = secrets.token_urlsafe(16)
            metadata = request.json() or {}
            metadata.setdefault("mimeType", request.headers.get("x-upload-content-type"))
            with self._files_lock:
                self.sessions[upload_id] = {"file_id": file_id, "metadata": metadata, "query": query}
            location = f"{self.base_url}/upload/drive/v3/files?uploadType=resumable&upload_id={upload_id}"
            return Reply(200, b"", {"Location": location, "X-GUploader-UploadID": upload_id})
        return drive_error(400, f"Invalid value for UploadType: {kind}", "invalid", location="uploadType")

    def _finish_session(self, upload_id: str, data: bytes) -> Reply:
        with self._files_lock:
            session = self.sessions.pop(upload_id, None)
        if session is None:
            return Reply(404, b"Not Found")
        reply = self._store(session["file_id"], session["metadata"], data, session["query"])
        if reply.status == 200 and not session["file_id"]:
            reply.status = 201  # a resumable create answers 201 Created
        return reply

    def _store(self, file_id: str, metadata: dict[str, Any], data: bytes, query: dict[str, str]) -> Reply:
        if self.quota_full:
            return drive_error(403, "The user's Drive storage quota has been exceeded.", "storageQuotaExceeded")
        with self._files_lock:
            if file_id:  # files.update: new content (and name/mimeType), same id and parents
                found = self.files.get(file_id)
                if found is None:
                    return self._not_found(file_id)
                if "parents" in metadata:
                    return drive_error(
                        403,
                        "The parents field is not directly writable in update requests. Use the addParents and "
                        "removeParents parameters instead.",
                        "fieldNotWritable",
                    )
                found.update(
                    {k: v for k, v in metadata.items() if k in ("name", "mimeType")},
                    _bytes=data,
                    size=str(len(data)),
                    modifiedTime=_rfc3339(time.time()),
                )
                return Reply(200, self._fields(found, query.get("fields")))
            for parent in metadata.get("parents") or []:
                if parent != "root" and self.files.get(parent, {}).get("mimeType") != FOLDER_MIME:
                    return self._not_found(parent)
            new_id = secrets.token_urlsafe(24)
            self.files[new_id] = self._resource(new_id, metadata, data)
            return Reply(200, self._fields(self.files[new_id], query.get("fields")))
