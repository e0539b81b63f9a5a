"""What the stores behind an outside HTTP API share (Cloudinary, Google Drive, Imgur): one lazy
httpx client, secrets that must be set, transport failures and refusals turned into the storage
contract's error codes, and the service's own words in them with every secret redacted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import httpx

from serve_app.errors import ConfigurationError, StorageError
from serve_app.redact import redact
from serve_app.storage.base import ImageStore

log = logging.getLogger(__name__)

# The source spec's messages: clients match on them whatever the store.
UPLOAD_FAILED = "Failed to upload image to S3."
DOWNLOAD_FAILED = "Failed to download image from S3."
DELETE_FAILED = "Failed to delete stored images."
SWEEP_FAILED = "Failed to sweep old images."

# error code -> the contract's message for it
FAILURES = {
    "S3_UPLOAD_FAILED": UPLOAD_FAILED,
    "S3_DOWNLOAD_FAILED": DOWNLOAD_FAILED,
    "STORAGE_DELETE_FAILED": DELETE_FAILED,
    "S3_UNAVAILABLE": "Image storage is unavailable.",
}


def required_secrets(service: str, values: dict[str, str | None]) -> dict[str, str]:
    """`values` (environment variable -> value) stripped; ConfigurationError naming every unset one."""
    missing = [name for name, value in values.items() if not (value or "").strip()]
    if missing:
        raise ConfigurationError(f"{service} storage needs ${' and $'.join(missing)} set in the environment.")
    return {name: (value or "").strip() for name, value in values.items()}


class HttpImageStore(ImageStore):
    """An ImageStore that talks to an outside HTTP API. Subclasses set `service` (its name in
    messages) and `_secrets` (values never to appear in an error or a log line), and may override
    `_error_text` to read the service's own error body."""

    service: ClassVar[str] = "The image store"

    def __init__(self, timeout_s: float, secrets: list[str]) -> None:
        self._timeout_s = timeout_s
        self._secrets = [secret for secret in secrets if secret]
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout_s))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _send(self, method: str, url: str, code: str, **kwargs: Any) -> httpx.Response:
        """One request; a transport failure (refused, timed out) is StorageError `code`."""
        try:
            return await self._http().request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("%s %s %s failed: %s", self.service, method, url.split("?", 1)[0], type(exc).__name__)
            raise StorageError(FAILURES[code], error_code=code) from exc

    async def _paged(
        self,
        url: str,
        code: str,
        params: dict[str, Any],
        page: tuple[str, str, str],
        send: Callable[..., Awaitable[httpx.Response]] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """The items of a paged listing; `page` names the items' field, the query parameter that asks
        for the next page and the answer's field that gives it. A refusal is StorageError `code`."""
        items, ask, answer = page
        cursor: str | None = None
        while True:
            response = await (send or self._send)(
                "GET", url, code, params={**params, **({ask: cursor} if cursor else {})}, **kwargs
            )
            if response.status_code != 200:
                raise self._refused(response, code, "the listing")
            body = response.json()
            for item in body.get(items, []):
                yield item
            cursor = body.get(answer)
            if not cursor:
                return

    def _error_text(self, response: httpx.Response) -> str:
        """The service's own message in an error answer ("" when none); override per service."""
        return ""

    def _said(self, response: httpx.Response) -> str:
        """The service's message, redacted and short, as `: message`, or nothing."""
        try:
            message = self._error_text(response)
        except (ValueError, AttributeError, TypeError):
            message = ""
        return f": {redact(str(message), self._secrets)[:200]}" if message else ""

    def _refused(self, response: httpx.Response, code: str, what: str) -> StorageError:
        """The StorageError for an answer that is not a success: the contract's message for `code`,
        then which service refused `what`, with its HTTP status and its own (redacted) words."""
        said = self._said(response)
        log.warning("%s refused %s: HTTP %s%s", self.service, what, response.status_code, said)
        return StorageError(
            f"{FAILURES[code][:-1]} ({self.service} refused {what}: HTTP {response.status_code}{said}).",
            error_code=code,
        )
