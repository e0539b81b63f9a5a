"""GET /v1/result/{task_id} (poll a task) and its cancellation (DELETE /v1/tasks/{task_id}, or POST
/v1/tasks/{task_id}/cancel): the task routes every product shares."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from serve_app.api.auth import Caller, CallerDep
from serve_app.api.deps import Ctx, IngressContext
from serve_app.api.intake import ERRORS
from serve_app.tasks.views import TaskResult, task_view

router = APIRouter(prefix="/v1", tags=["desk makeover"])

_READ_ERRORS = {code: ERRORS[code] for code in (401, 404)}
_CANCEL = {  # both cancel routes answer the same
    "status_code": 202,
    "response_model": TaskResult,
    "response_model_exclude_none": True,
    "responses": {code: ERRORS[code] for code in (401, 404, 409)},
}


@router.get(
    "/result/{task_id}",
    response_model=TaskResult,
    response_model_exclude_none=True,
    responses=_READ_ERRORS,
    summary="Poll a task: status, progress while running, the result when done.",
)
async def result(task_id: str, ctx: Ctx, caller: CallerDep) -> TaskResult:
    record, stats = await asyncio.to_thread(ctx.tasks.view, task_id, caller.key_id)
    return task_view(record, stats)


async def _cancel(task_id: str, ctx: IngressContext, caller: Caller) -> TaskResult:
    record = await asyncio.to_thread(ctx.tasks.request_cancel, task_id, caller.key_id)
    return task_view(record)


@router.delete(
    "/tasks/{task_id}",
    **_CANCEL,
    summary="Cancel a task: a queued task fails CANCELLED at once, a running one at its next step.",
)
async def cancel(task_id: str, ctx: Ctx, caller: CallerDep) -> TaskResult:
    return await _cancel(task_id, ctx, caller)


@router.post(
    "/tasks/{task_id}/cancel",
    **_CANCEL,
    summary="Same as DELETE /v1/tasks/{task_id}.",
)
async def cancel_post(task_id: str, ctx: Ctx, caller: CallerDep) -> TaskResult:
    return await _cancel(task_id, ctx, caller)
