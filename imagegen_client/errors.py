"""The client's exceptions: one base, and an API error carrying what the server said."""

from __future__ import annotations

from typing import Any

import httpx


class ImagegenError(Exception):
    """Base of every error this package raises."""


class ApiError(ImagegenError):
    """The server answered with an error status (after any retries).

    `status` is the HTTP status, `error_code` the server's code (`INVALID_INPUT`, `QUEUE_FULL`,
    `TASK_NOT_FOUND`, ...; `BAD_REQUEST` for its `{"detail": ...}` 400s, `HTTP_<status>` when the
    body is not JSON), `message` its message, `retry_after` the seconds of a Retry-After header.
    """

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        *,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.message = message
        self.retry_after = retry_after
        self.body = body
        super().__init__(f"{status} {error_code}: {message}")

    @classmethod
    def from_response(cls, response: httpx.Response, retry_after: float | None = None) -> ApiError:
        status = response.status_code
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        code, message = f"HTTP_{status}", (response.text or response.reason_phrase or "").strip()[:500]
        if isinstance(body, dict):
            if isinstance(body.get("error"), dict):  # the OpenAI-compatible routes' shape
                body = body["error"]
                code = str(body.get("code") or code)
                message = str(body.get("message") or message)
            elif "error_code" in body:
                code, message = str(body["error_code"]), str(body.get("message") or message)
            elif "detail" in body:  # the source spec's `{"detail": ...}` 400s
                code = "BAD_REQUEST" if status == 400 else code
                message = str(body["detail"])
        return cls(status, code, message, retry_after=retry_after, body=body)


class ImagegenConnectionError(ImagegenError):
    """The server could not be reached, or stopped answering, on every attempt."""


class EventsUnavailable(ImagegenError):
    """The server has no event stream for tasks (an older server, or a proxy that refuses it)."""


class WaitTimeout(ImagegenError, TimeoutError):
    """A task did not end within the time given to wait for it."""


class TaskNotDone(ImagegenError):
    """Its outputs were asked for, but the task has not ended `done`."""

    def __init__(self, task_id: str, status: str, error_code: str | None = None) -> None:
        self.task_id = task_id
        self.status = status
        self.error_code = error_code
        detail = f" ({error_code})" if error_code else ""
        super().__init__(f"task {task_id} is {status}{detail}, not done")
