"""A body-size bound for the routes whose JSON body FastAPI reads itself.

`/v1/generate`, `/v1/images/edits` and `/v1/edits` read their bodies by hand against their own
limits; every other POST (the scene, article, texture and OpenAI generation routes, cancels, webhook replays)
would otherwise be buffered whole, however large, before validation. This ASGI middleware reads
such a body itself, at most `admission.max_json_body_bytes` of it, and answers 413
PAYLOAD_TOO_LARGE (in the route's error shape) past that, at once when a Content-Length already
says so; a body within the bound is handed to the app as it came.
"""

from __future__ import annotations

from typing import Any

from serve_app.api.deps import current_context
from serve_app.api.errors import error_response
from serve_app.errors import PayloadTooLarge

OWN_LIMITS = ("/v1/generate", "/v1/images/edits", "/v1/edits")  # these read uploads against their own limits
DEFAULT_LIMIT = 1024 * 1024


class JsonBodyLimit:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or path.endswith(OWN_LIMITS):
            await self.app(scope, receive, send)
            return
        ctx = current_context()
        limit = ctx.args.admission.max_json_body_bytes if ctx is not None else DEFAULT_LIMIT
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(path, limit, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(path, limit, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)

    @staticmethod
    async def _refuse(path: str, limit: int, scope: dict[str, Any], receive: Any, send: Any) -> None:
        response = error_response(path, PayloadTooLarge(f"Request body exceeds {limit} bytes."))
        await response(scope, receive, send)


def _replay(chunks: list[bytes], final: dict[str, Any] | None, upstream: Any) -> Any:
    """A `receive` that hands the buffered body over as one message, then the real connection's
    next messages (a disconnect arrives when the client really goes)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            if final is not None:
                return final
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await upstream()

    return receive
