"""A local Imgur (API 3, anonymous uploads) and its image host i.imgur.com for tests, with Imgur's
wire format: `Authorization: Client-ID <id>`, the `{"data": ..., "success": ..., "status": ...}`
envelope and its error bodies.

- `POST /3/image` (and `/3/upload`): multipart `image` (a file, or base64 text with
  `type=base64`), optional `type`, `name`, `title`, `description`. Answers the image:
  `{"data": {"id", "title", "description", "datetime", "type", "animated", "width", "height",
  "size", "views", "bandwidth", ..., "deletehash", "name", "link"}, "success": true, "status": 200}`.
  Not an image: `400` with `{"error": {"code": 1003, "message": "File type invalid (1)", ...}}`.
- `GET /3/image/{id}`: the image's data; `DELETE /3/image/{deletehash}`: `{"data": true, ...}`
  (an anonymous image is deleted by its deletehash only; unknown: 404).
- `GET /3/credits`: the Client-ID's rate limits.
- `GET /{id}.{ext}` (the link, as i.imgur.com): the bytes; a deleted or unknown image is a `302`
  to `/removed.png`, as i.imgur.com does.
A wrong or missing Client-ID is `403 {"data": {"error": "Invalid client_id", ...}}`; the
`rate_limit` rule answers `429` as Imgur does when a Client-ID's credits are spent. Every API
answer carries the `X-RateLimit-Client*` headers.
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
import threading
import time
from typing import Any

from testbed.stubs.provider_base import ProviderStub, Reply, StubRequest, multipart

CLIENT_ID = "0123456789abcde"
CLIENT_LIMIT = 12500
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def imgur_error(status: int, error: Any, request: StubRequest) -> Reply:
    body = {"data": {"error": error, "request": request.path, "method": request.method}, "success": False}
    return Reply(status, {**body, "status": status})


class ImgurStub(ProviderStub):
    def __init__(self) -> None:
        self._images_lock = threading.Lock()
        super().__init__()

    def on_reset(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}  # id -> data + "_bytes"
        self.uploads = 0

    def exempt(self, request: StubRequest) -> bool:
        return not request.path.startswith("/3/")  # the image host has no API limits

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        if mode == "rate_limit":
            return imgur_error(429, "Too Many Requests", request)
        if mode in ("unauthorized", "forbidden"):
            return imgur_error(403, "Permission Denied", request)
        if mode == "bad_request":
            return imgur_error(
                400, {"code": 1003, "message": "File type invalid (1)", "type": "ImgurException"}, request
            )
        return imgur_error(500, "Internal server error", request)

    def _limits(self) -> dict[str, str]:
        remaining = max(CLIENT_LIMIT - self.uploads * 10, 0)
        return {
            "X-RateLimit-ClientLimit": str(CLIENT_LIMIT),
            "X-RateLimit-ClientRemaining": str(remaining),
            "X-RateLimit-UserLimit": "2000",
            "X-RateLimit-UserRemaining": "1990",
            "X-RateLimit-UserReset": str(int(time.time()) + 3600),
        }

    def _ok(self, data: Any) -> Reply:
        return Reply(200, {"data": data, "success": True, "status": 200}, self._limits())

    def handle(self, request: StubRequest, mode: str) -> Reply:
        parts = request.path.strip("/").split("/")
        if parts[0] != "3":
            return self._deliver(request.path.strip("/"))
        if request.headers.get("authorization") != f"Client-ID {CLIENT_ID}":
            return imgur_error(403, "Invalid client_id", request)
        if parts[1:] == ["credits"] and request.method == "GET":
            remaining = self._limits()["X-RateLimit-ClientRemaining"]
            return self._ok(
                {
                    "UserLimit": 2000,
                    "UserRemaining": 1990,
                    "UserReset": int(time.time()) + 3600,
                    "ClientLimit": CLIENT_LIMIT,
                    "ClientRemaining": int(remaining),
                }
            )
        if parts[1:] in (["image"], ["upload"]) and request.method == "POST":
            return self._upload(request)
        if len(parts) == 3 and parts[1] == "image":
            return self._image(request, parts[2])
        return imgur_error(404, "Not found", request)

    def _upload(self, request: StubRequest) -> Reply:
        from PIL import Image

        fields, files = multipart(request)
        data = files.get("image")
        if data is None and "image" in fields:
            try:
                data = base64.b64decode(fields["image"], validate=True)
            except (binascii.Error, ValueError):
                data = b""
        if not data:
            return imgur_error(400, "No image data was sent to the upload api", request)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height, fmt = image.width, image.height, (image.format or "").lower()
        except Exception:
            return imgur_error(
                400, {"code": 1003, "message": "File type invalid (1)", "type": "ImgurException"}, request
            )
        ext = {"jpeg": "jpg"}.get(fmt, fmt)
        image_id = "".join(secrets.choice(_ALPHABET) for _ in range(7))
        record = {
            "id": image_id,
            "title": fields.get("title"),
            "description": fields.get("description"),
            "datetime": int(time.time()),
            "type": f"image/{fmt}",
            "animated": False,
            "width": width,
            "height": height,
            "size": len(data),
            "views": 0,
            "bandwidth": 0,
            "vote": None,
            "favorite": False,
            "nsfw": None,
            "section": None,
            "account_url": None,
            "account_id": 0,
            "is_ad": False,
            "in_most_viral": False,
            "has_sound": False,
            "tags": [],
            "ad_type": 0,
            "ad_url": "",
            "edited": "0",
            "in_gallery": False,
            "deletehash": "".join(secrets.choice(_ALPHABET) for _ in range(15)),
            "name": fields.get("name", ""),
            "link": f"{self.base_url}/{image_id}.{ext}",
        }
        with self._images_lock:
            self.images[image_id] = {**record, "_bytes": data}
            self.uploads += 1
        return self._ok(record)

    def _image(self, request: StubRequest, ref: str) -> Reply:
        with self._images_lock:
            if request.method == "DELETE":
                found = next((i for i, r in self.images.items() if r["deletehash"] == ref), None)
                if found is None:
                    return imgur_error(404, f"Unable to find an image with the id, {ref}", request)
                del self.images[found]
                return self._ok(True)
            record = self.images.get(ref)
        if request.method != "GET" or record is None:
            return imgur_error(404, f"Unable to find an image with the id, {ref}", request)
        return self._ok({k: v for k, v in record.items() if not k.startswith("_") and k != "deletehash"})

    def _deliver(self, name: str) -> Reply:
        image_id, _, ext = name.partition(".")
        with self._images_lock:
            record = self.images.get(image_id)
        if record is None or not record["link"].endswith(f"/{name}"):
            return Reply(302, b"", {"Location": f"{self.base_url}/removed.png"})
        return Reply(
            200, record["_bytes"], {"Content-Type": record["type"], "Cache-Control": "public, max-age=31536000"}
        )
