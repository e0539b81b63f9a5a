"""A local Cloudinary for tests: the signed Upload API, destroy, the Admin API listing, ping, and
delivery URLs, with Cloudinary's error bodies.

- `POST /v1_1/{cloud}/{image|raw}/upload` (multipart: file, public_id, overwrite, timestamp,
  api_key, signature): the signature must be SHA-1 of the sorted `k=v&...` parameters (all but
  file, api_key, resource_type, cloud_name, signature) plus the secret, else
  `401 {"error": {"message": "Invalid Signature <sig>. String to sign - '<string>'."}}`; a timestamp
  older than an hour is `400 Stale request`. Answers the upload JSON (public_id, version,
  signature, width, height, format, resource_type, created_at, bytes, type, etag, url, secure_url).
- `POST /v1_1/{cloud}/{type}/destroy` (signed): `{"result": "ok" | "not found"}`.
- `GET /v1_1/{cloud}/resources/{type}/upload?prefix=&max_results=&next_cursor=` (basic auth).
- `GET /v1_1/{cloud}/ping` (basic auth): `{"status": "ok"}`.
- `GET /{cloud}/{type}/upload/{public_id}[.{format}]`: the delivered file (404 when missing).
`fail_uploads = n` makes the next n uploads answer 500.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import default
from typing import Any
from urllib.parse import parse_qs

from testbed.stubs.provider_base import ProviderStub, Reply, StubRequest

CLOUD, API_KEY, API_SECRET = "demo-cloud", "123456789012345", "test-cloudinary-secret"
UNSIGNED = {"file", "api_key", "resource_type", "cloud_name", "signature"}


def _form(request: StubRequest) -> dict[str, Any]:
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/x-www-form-urlencoded"):
        return {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
    message = BytesParser(policy=default).parsebytes(f"Content-Type: {kind}\r\n\r\n".encode() + request.body)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = payload if part.get_filename() else payload.decode()
    return fields


class CloudinaryStub(ProviderStub):
    def __init__(self) -> None:
        self._files_lock = threading.Lock()
        super().__init__()

    def on_reset(self) -> None:
        self.files: dict[tuple[str, str], dict[str, Any]] = {}  # (type, public_id) -> resource
        self.fail_uploads = 0

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        return Reply(500, {"error": {"message": "General Error"}})

    def _error(self, status: int, message: str) -> Reply:
        return Reply(status, {"error": {"message": message}}, {"X-Cld-Error": message})

    def _basic_auth_ok(self, request: StubRequest) -> bool:
        expected = "Basic " + base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
        return request.headers.get("authorization") == expected

    def _signature_problem(self, form: dict[str, Any]) -> Reply | None:
        if form.get("api_key") != API_KEY:
            return self._error(401, f"Unknown API key {form.get('api_key')}")
        signed = {k: v for k, v in form.items() if k not in UNSIGNED and v not in (None, "")}
        to_sign = "&".join(f"{k}={signed[k]}" for k in sorted(signed))
        expected = hashlib.sha1((to_sign + API_SECRET).encode()).hexdigest()
        if form.get("signature") != expected:
            return self._error(401, f"Invalid Signature {form.get('signature')}. String to sign - '{to_sign}'.")
        if time.time() - int(form.get("timestamp") or 0) > 3600:
            return self._error(
                400, f"Stale request - reported time is {form.get('timestamp')} which is more than 1 hour ago"
            )
        return None

    def handle(self, request: StubRequest, mode: str) -> Reply:
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["v1_1", CLOUD]:
            return self._api(request, parts[2:])
        if parts[:1] == [CLOUD] and len(parts) >= 4 and parts[2] == "upload" and request.method == "GET":
            kind, rest = parts[1], "/".join(parts[3:])
            with self._files_lock:
                found = self.files.get((kind, rest)) or self.files.get((kind, rest.rsplit(".", 1)[0]))
            if found is None:
                return Reply(404, b"", {"X-Cld-Error": "Resource not found"})
            return Reply(200, found["_bytes"], {"Content-Type": found["_type"]})
        return self._error(404, "Not found")

    def _api(self, request: StubRequest, rest: list[str]) -> Reply:
        if rest == ["ping"]:
            return (
                Reply(200, {"status": "ok"})
                if self._basic_auth_ok(request)
                else self._error(401, "Invalid credentials")
            )
        if len(rest) == 3 and rest[0] == "resources" and rest[2] == "upload" and request.method == "GET":
            if not self._basic_auth_ok(request):
                return self._error(401, "Invalid credentials")
            return self._listing(rest[1], request.query)
        if len(rest) == 2 and request.method == "POST" and rest[1] in ("upload", "destroy"):
            form = _form(request)
            problem = self._signature_problem(form)
            if problem is not None:
                return problem
            return self._upload(rest[0], form) if rest[1] == "upload" else self._destroy(rest[0], form)
        return self._error(404, "Not found")

    def _upload(self, kind: str, form: dict[str, Any]) -> Reply:
        if self.fail_uploads > 0:
            self.fail_uploads -= 1
            return self._error(500, "General Error")
        data = form.get("file")
        if not isinstance(data, bytes) or not form.get("public_id"):
            return self._error(400, "Missing required parameter - file")
        public_id = form["public_id"]
        width = height = None
        fmt = None
        content_type = "application/octet-stream"
        if kind == "image":
            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                width, height, fmt = image.width, image.height, (image.format or "png").lower()
            fmt = "jpg" if fmt == "jpeg" else fmt
            content_type = f"image/{'jpeg' if fmt == 'jpg' else fmt}"
        version = int(time.time())
        suffix = f".{fmt}" if fmt else ""
        url = f"{self.base_url}/{CLOUD}/{kind}/upload/v{version}/{public_id}{suffix}"
        resource = {
            "asset_id": hashlib.md5(public_id.encode()).hexdigest(),  # noqa: S324 - an id, as Cloudinary's
            "public_id": public_id,
            "version": version,
            "signature": hashlib.sha1(data).hexdigest(),
            "width": width,
            "height": height,
            "format": fmt,
            "resource_type": kind,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bytes": len(data),
            "type": "upload",
            "etag": hashlib.md5(data).hexdigest(),  # noqa: S324
            "url": url,
            "secure_url": url,
        }
        with self._files_lock:
            self.files[(kind, public_id)] = {**resource, "_bytes": data, "_type": content_type}
        return Reply(200, {k: v for k, v in resource.items() if v is not None})

    def _destroy(self, kind: str, form: dict[str, Any]) -> Reply:
        with self._files_lock:
            gone = self.files.pop((kind, form.get("public_id", "")), None)
        return Reply(200, {"result": "ok" if gone else "not found"})

    def _listing(self, kind: str, query: dict[str, list[str]]) -> Reply:
        prefix = (query.get("prefix") or [""])[0]
        size = int((query.get("max_results") or ["10"])[0])
        start = int((query.get("next_cursor") or ["0"])[0])
        with self._files_lock:
            found = sorted(
                (
                    {k: v for k, v in r.items() if not k.startswith("_")}
                    for (t, pid), r in self.files.items()
                    if t == kind and pid.startswith(prefix)
                ),
                key=lambda r: r["public_id"],
            )
        page = found[start : start + size]
        body: dict[str, Any] = {"resources": page}
        if start + size < len(found):
            body["next_cursor"] = str(start + size)
        return Reply(200, body)

    def age(self, public_id_part: str, seconds: float) -> None:
        """Make matching resources look `seconds` older (for the sweep)."""
        with self._files_lock:
            for resource in self.files.values():
                if public_id_part in resource["public_id"]:
                    created = datetime.strptime(resource["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                    when = datetime.fromtimestamp(created.timestamp() - seconds, UTC)
                    resource["created_at"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
