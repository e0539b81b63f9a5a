"""Routes that answer with the finished result instead of a task id (the OpenAI-compatible images
API, the source spec's synchronous scene call): the task is recorded and run like any other, and the
route waits on it for a bounded time.

- `Prefer: respond-async` (RFC 7240): 202 with the task id at once, as /v1/generate answers.
- `Prefer: wait=N`: wait at most N seconds (and at most the route's own bound).
- Past the wait: 504 TIMEOUT naming the task (`X-Task-Id`, `Location`), which goes on; the same
  Idempotency-Key waits on it again. Without a key the 504 says `x-should-retry: false`, since a
  client's automatic retry would start a second task.
- A task that failed answers its error code and message (CANCELLED 409, STAGE_UNAVAILABLE 503,
  CONTENT_FILTERED 422, others 500), with `X-Task-Id`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import Header
from fastapi.responses import JSONResponse

from serve_app.api.auth import Caller
from serve_app.api.deps import IngressContext
from serve_app.api.schemas import TaskAccepted
from serve_app.errors import AppError
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import TaskStatus

PREFER_DOC = (
    "RFC 7240: `respond-async` answers 202 with the task at once; `wait=N` waits at most N seconds "
    "(and at most the route's bound) before the 504."
)
PreferHeader = Annotated[str | None, Header(alias="Prefer", description=PREFER_DOC)]


def preferences(header: str | None) -> tuple[bool, float | None]:
    """RFC 7240 `Prefer`: (respond-async asked, wait=N seconds or None); others are ignored."""
    respond_async, wait = False, None
    for token in (header or "").split(","):
        name, _, value = token.partition("=")
        name = name.strip().lower()
        if name == "respond-async":
            respond_async = True
        elif name == "wait":
            try:
                wait = max(0.0, float(value.strip().strip('"')))
            except ValueError:
                continue
    return respond_async, wait


async def _wait(ctx: IngressContext, record: TaskRecord, key_id: str | None, wait_s: float) -> TaskRecord:
    """The task once it has ended; _WaitTimeout (504) past `wait_s`. The task store pushes each
    change of the task (serve_app.tasks.notify); without one it is read every `openai.poll_s`."""
    deadline = time.monotonic() + wait_s
    with ctx.changes.watch(record.task_id) as changed:
        record = await asyncio.to_thread(ctx.tasks.owned, record.task_id, key_id)  # watched from here on
        while not record.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _WaitTimeout(record.task_id, wait_s)
            await ctx.changes.wait(changed, min(left, ctx.args.openai.poll_s))
            record = await asyncio.to_thread(ctx.tasks.owned, record.task_id, key_id)
    return record


class _WaitTimeout(AppError):
    status_code = 504
    default_code = "TIMEOUT"

    def __init__(self, task_id: str, waited_s: float) -> None:
        super().__init__(
            f"The result is not ready after {waited_s:g} s. They are task {task_id}, which goes on: poll "
            f"GET /v1/result/{task_id}, or repeat this request with the same Idempotency-Key to wait again.",
            headers={"X-Task-Id": task_id, "Location": f"/v1/result/{task_id}"},
        )


_FAILED_STATUS = {"CANCELLED": 409, "STAGE_UNAVAILABLE": 503, "CONTENT_FILTERED": 422}


async def respond_or_wait(
    ctx: IngressContext,
    caller: Caller,
    record: TaskRecord,
    prefer: str | None,
    idempotency_key: str | None,
    max_wait_s: float,
) -> TaskRecord | JSONResponse:
    """The finished task (done; a failed one is raised as its error), or the 202 answer when the
    client prefers it async. Raises the 504 past the wait."""
    headers = {"X-Task-Id": record.task_id}
    respond_async, wait = preferences(prefer)
    if respond_async:
        accepted = TaskAccepted(task_id=record.task_id, status=record.status)
        headers.update({"Location": f"/v1/result/{record.task_id}", "Preference-Applied": "respond-async"})
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers=headers)
    try:
        record = await _wait(ctx, record, caller.key_id, max_wait_s if wait is None else min(wait, max_wait_s))
    except _WaitTimeout as exc:
        if not idempotency_key:  # a retry without the key would start another task: say so to clients
            exc.headers["x-should-retry"] = "false"
        raise
    if record.status == TaskStatus.failed:
        error = AppError(record.message or "The task failed.", error_code=record.error_code or "INTERNAL_ERROR")
        error.status_code = _FAILED_STATUS.get(error.error_code, 500)  # type: ignore[misc]
        error.headers = dict(headers)
        if idempotency_key:  # repeating it would answer with this same failed task
            error.headers["x-should-retry"] = "false"
        raise error
    return record
