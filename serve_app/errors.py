"""One exception tree for the whole app; every class carries its HTTP status and error code.

The ingress has a single handler that turns any `AppError` into the error shape of SPEC.md
section 4. Deployments raise these too; a task that ends in one records its `error_code` and
`message`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class AppError(Exception):
    """Base of every error the service reports to a client."""

    status_code: ClassVar[int] = 500
    default_code: ClassVar[str] = "INTERNAL_ERROR"
    default_message: ClassVar[str] = "Internal server error."

    def __init__(
        self,
        message: str | None = None,
        *,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.error_code = error_code or self.default_code
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The JSON body sent to the client."""
        return {"error_code": self.error_code, "message": self.message}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep code and message when Ray pickles the error across processes.
        return (_rebuild, (type(self), self.message, self.error_code, self.headers))


def _rebuild(cls: type[AppError], message: str, error_code: str, headers: dict[str, str]) -> AppError:
    # Through the base initialiser: subclasses' own signatures (retry_after_s, ...) are not needed.
    error = cls.__new__(cls)
    AppError.__init__(error, message, error_code=error_code, headers=headers)
    return error


class BadRequest(AppError):
    """400 in the source spec's FastAPI shape: `{"detail": ...}` (used for an empty prompt)."""

    status_code = 400
    default_code = "BAD_REQUEST"
    default_message = "Bad request."

    def body(self) -> dict[str, Any]:
        return {"detail": self.message}


class InvalidInput(AppError):
    status_code = 422
    default_code = "INVALID_INPUT"
    default_message = "Invalid input."
    param: str | None = None  # the request field at fault, when known (the OpenAI error shape has it)


class UnsafeURL(InvalidInput):
    """A user-supplied URL points somewhere the service must not fetch or post to."""

    default_code = "UNSAFE_URL"
    default_message = "URL is not allowed."


class ImageFetchFailed(InvalidInput):
    """The initial image could not be fetched or decoded."""

    default_code = "IMAGE_FETCH_FAILED"
    default_message = "Failed to fetch the initial image."
    upstream_status: int | None = None  # the HTTP status, when a non-2xx answer was the failure (not pickled)


class InvalidImage(InvalidInput):
    default_code = "INVALID_IMAGE"
    default_message = "The image could not be decoded or is out of bounds."


class Unauthorized(AppError):
    """No API key, or one that is unknown, malformed or revoked (auth on)."""

    status_code = 401
    default_code = "UNAUTHORIZED"
    default_message = "A valid API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`."

    def __init__(self, message: str | None = None, *, error_code: str | None = None) -> None:
        super().__init__(message, error_code=error_code, headers={"WWW-Authenticate": 'Bearer realm="imagegen"'})


class Forbidden(AppError):
    """The key is valid but may not make this request (over its per-image limit, another user id)."""

    status_code = 403
    default_code = "FORBIDDEN"
    default_message = "This API key may not make this request."


class TooManyRequests(AppError):
    """A key's rate or in-flight limit is reached; retrying after `Retry-After` seconds may succeed."""

    status_code = 429
    default_code = "RATE_LIMITED"
    default_message = "Too many requests for this API key; retry later."

    def __init__(self, message: str | None = None, *, error_code: str | None = None, retry_after_s: float = 1) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(message, error_code=error_code, headers={"Retry-After": str(seconds)})


class NotFound(AppError):
    status_code = 404
    default_code = "NOT_FOUND"
    default_message = "Not found."


class RequestTimeout(AppError):
    status_code = 408
    default_code = "REQUEST_TIMEOUT"
    default_message = "The request body did not arrive in time."


class Conflict(AppError):
    status_code = 409
    default_code = "CONFLICT"
    default_message = "Conflict."


class PayloadTooLarge(AppError):
    status_code = 413
    default_code = "PAYLOAD_TOO_LARGE"
    default_message = "Payload too large."


class QueueFull(AppError):
    status_code = 503
    default_code = "QUEUE_FULL"
    default_message = "The service is at capacity; retry later."

    def __init__(self, message: str | None = None, *, error_code: str | None = None, retry_after_s: int = 5) -> None:
        super().__init__(message, error_code=error_code, headers={"Retry-After": str(max(1, int(retry_after_s)))})


class ServiceUnavailable(AppError):
    status_code = 503
    default_code = "SERVICE_UNAVAILABLE"
    default_message = "Service unavailable; retry later."


class StorageError(AppError):
    """Writing or reading an image in the image store failed."""

    status_code = 500
    default_code = "S3_UPLOAD_FAILED"
    default_message = "Failed to upload image to S3."


class ConfigurationError(AppError):
    """The service is misconfigured (missing key, bad credentials, unknown preset)."""

    status_code = 500
    default_code = "CONFIGURATION_ERROR"
    default_message = "The service is misconfigured."


class UpstreamError(AppError):
    """An external provider failed (rate limited, timed out, answered garbage)."""

    status_code = 502
    default_code = "UPSTREAM_ERROR"
    default_message = "An upstream provider failed."


class GenerationFailed(AppError):
    status_code = 500
    default_code = "GENERATION_FAILED"
    default_message = "Image generation failed."


class ContentFiltered(AppError):
    """The model's safety checker flagged the image it made (the pipeline blacked it out)."""

    status_code = 422
    default_code = "CONTENT_FILTERED"
    default_message = (
        "The safety checker flagged the generated image, so none is returned; change the prompt or the seed."
    )


class TaskCancelled(AppError):
    status_code = 409
    default_code = "CANCELLED"
    default_message = "The task was cancelled."


class WorkerLost(AppError):
    status_code = 500
    default_code = "WORKER_LOST"
    default_message = "The worker running this task stopped responding."
