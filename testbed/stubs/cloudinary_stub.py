"""A local Cloudinary for tests: the signed Upload API, destroy, the Admin API listing, ping, private
download URLs and delivery URLs, with Cloudinary's error bodies. Resources are kept per resource
kind (`image`, `raw`), delivery type (`upload`, `private`, `authenticated`) and public id.

- `POST /v1_1/{cloud}/{image|raw}/upload` (multipart: file, public_id, overwrite, type, timestamp,
  api_key, signature): the signature must be SHA-1 of the sorted `k=v&...` parameters (all but
  file, api_key, resource_type, cloud_name, signature) plus the secret, else
  `401 {"error": {"message": "Invalid Signature <sig>. String to sign - '<string>'."}}`; a timestamp
  older than an hour is `400 Stale request`. `type` is `upload` when absent. Answers the upload
  JSON (public_id, version, signature, width, height, format, resource_type, created_at, bytes,
  type, etag, url, secure_url; a non-public type's URLs carry the `s--SIG--` signature).
- `POST /v1_1/{cloud}/{kind}/destroy` (signed; `type`, `upload` when absent):
  `{"result": "ok" | "not found"}`.
- `GET /v1_1/{cloud}/resources/{kind}/{type}?prefix=&max_results=&next_cursor=` (basic auth).
- `GET /v1_1/{cloud}/ping` (basic auth): `{"status": "ok"}`.
- `GET /v1_1/{cloud}/{kind}/download?timestamp&public_id&format&type&expires_at&api_key&signature`
  (pycloudinary's `private_download_url`): signed like an upload; valid until `expires_at`, or an
  hour after `timestamp` without one (this stub's refusal of a late one is its own wording);
  `404 Resource not found - <public_id>` when missing.
- `GET /{cloud}/{kind}/{type}/[s--SIG--/][v<version>/]{public_id}[.{format}]`: the delivered file.
  `upload` needs no signature; `authenticated` needs SIG = the first 8 characters of the URL-safe
  base64 SHA-1 of `{public_id}[.{format}]` + the secret (else 401); a `private` original is never
  delivered here (401); 404 when missing.
`fail_uploads = n` makes the next n uploads answer 500.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
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
TYPES = ("upload", "private", "authenticated")


def delivery_signature(to_sign: str, secret: str = API_SECRET) -> str:
    digest = hashlib.sha1((to_sign + secret).encode()).digest()
    return "s--" + base64.urlsafe_b64encode(digest)[:8].decode() + "--"


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
        self.files: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, type, public_id) -> resource
        self.fail_uploads = 0

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        return Reply(500, {"error": {"message": "General Error"}})

    def _error(self, status: int, message: str) -> Reply:
        return Reply(status, {"error": {"message": message}}, {"X-Cld-Error": message})

    def _basic_auth_ok(self, request: StubRequest) -> bool:
        expected = "Basic " + base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
        return request.headers.get("authorization") == expected

    def _signature_problem(self, form: dict[str, Any], expiring: bool = False) -> Reply | None:
        if form.get("api_key") != API_KEY:
            return self._error(401, f"Unknown API key {form.get('api_key')}")
        signed = {k: v for k, v in form.items() if k not in UNSIGNED and v not in (None, "")}
        to_sign = "&".join(f"{k}={signed[k]}" for k in sorted(signed))
        expected = hashlib.sha1((to_sign + API_SECRET).encode()).hexdigest()
        if form.get("signature") != expected:
            return self._error(401, f"Invalid Signature {form.get('signature')}. String to sign - '{to_sign}'.")
        if expiring and form.get("expires_at"):
            if time.time() > int(form["expires_at"]):
                return self._error(401, f"This link expired at {form['expires_at']}")
        elif time.time() - int(form.get("timestamp") or 0) > 3600:
            return self._error(
                400, f"Stale request - reported time is {form.get('timestamp')} which is more than 1 hour ago"
            )
        return None

    def _find(self, kind: str, delivery_type: str, source: str) -> dict[str, Any] | None:
        """The resource a delivered path names: `{public_id}` or `{public_id}.{format}`."""
        with self._files_lock:
            found = self.files.get((kind, delivery_type, source))
            stem, _, fmt = source.rpartition(".")
            if found is None and stem and self.files.get((kind, delivery_type, stem), {}).get("format") == fmt:
                found = self.files[(kind, delivery_type, stem)]
            return found

    def handle(self, request: StubRequest, mode: str) -> Reply:
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["v1_1", CLOUD]:
            return self._api(request, parts[2:])
        if parts[:1] == [CLOUD] and len(parts) >= 4 and parts[2] in TYPES and request.method == "GET":
            return self._deliver(parts[1], parts[2], parts[3:])
        return self._error(404, "Not found")

    def _deliver(self, kind: str, delivery_type: str, rest: list[str]) -> Reply:
        if delivery_type != "upload":
            sig = rest.pop(0) if rest and rest[0].startswith("s--") else None
            source = "/".join(rest[1:] if rest and re.fullmatch(r"v\d+", rest[0]) else rest)
            if delivery_type == "private" or sig != delivery_signature(source):
                return Reply(401, b"", {"X-Cld-Error": "Resource is restricted: signature required"})
        if rest and re.fullmatch(r"v\d+", rest[0]):
            rest = rest[1:]
        found = self._find(kind, delivery_type, "/".join(rest))
        if found is None:
            return Reply(404, b"", {"X-Cld-Error": "Resource not found"})
        return Reply(200, found["_bytes"], {"Content-Type": found["_type"]})

    def _download(self, kind: str, query: dict[str, list[str]]) -> Reply:
        form = {k: v[0] for k, v in query.items()}
        problem = self._signature_problem(form, expiring=True)
        if problem is not None:
            return problem
        public_id = form.get("public_id", "")
        source = f"{public_id}.{form['format']}" if form.get("format") else public_id
        found = self._find(kind, form.get("type") or "upload", source)
        if found is None:
            return self._error(404, f"Resource not found - {public_id}")
        return Reply(200, found["_bytes"], {"Content-Type": found["_type"]})

    def _api(self, request: StubRequest, rest: list[str]) -> Reply:
        if rest == ["ping"]:
            return (
                Reply(200, {"status": "ok"})
                if self._basic_auth_ok(request)
                else self._error(401, "Invalid credentials")
            )
        if len(rest) == 3 and rest[0] == "resources" and rest[2] in TYPES and request.method == "GET":
            if not self._basic_auth_ok(request):
                return self._error(401, "Invalid credentials")
            return self._listing(rest[1], rest[2], request.query)
        if len(rest) == 2 and rest[1] == "download" and request.method == "GET":
            return self._download(rest[0], request.query)
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
        public_id, delivery_type = form["public_id"], form.get("type") or "upload"
        if delivery_type not in TYPES:
            return self._error(400, f"Invalid type {delivery_type}")
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
        signed = "" if delivery_type == "upload" else delivery_signature(public_id + suffix) + "/"
        url = f"{self.base_url}/{CLOUD}/{kind}/{delivery_type}/{signed}v{version}/{public_id}{suffix}"
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
            "type": delivery_type,
            "etag": hashlib.md5(data).hexdigest(),  # noqa: S324
            "url": url,
            "secure_url": url,
        }
        with self._files_lock:
            self.files[(kind, delivery_type, public_id)] = {**resource, "_bytes": data, "_type": content_type}
        return Reply(200, {k: v for k, v in resource.items() if v is not None})

    def _destroy(self, kind: str, form: dict[str, Any]) -> Reply:
        with self._files_lock:
            gone = self.files.pop((kind, form.get("type") or "upload", form.get("public_id", "")), None)
        return Reply(200, {"result": "ok" if gone else "not found"})

    def _listing(self, kind: str, delivery_type: str, query: dict[str, list[str]]) -> Reply:
        prefix = (query.get("prefix") or [""])[0]
        size = int((query.get("max_results") or ["10"])[0])
        start = int((query.get("next_cursor") or ["0"])[0])
        with self._files_lock:
            found = sorted(
                (
                    {k: v for k, v in r.items() if not k.startswith("_")}
                    for (k, t, pid), r in self.files.items()
                    if k == kind and t == delivery_type and pid.startswith(prefix)
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
