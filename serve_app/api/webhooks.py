"""POST /v1/tasks/{task_id}/webhook: deliver a finished task's webhook again.

For a receiver that lost a delivery (or was down past every retry): the task's signed result is
queued in the task store's webhook outbox again, and the TaskRunner's maintenance pass delivers it
as it delivers any other (retries and backoff included), with the same Standard Webhooks
`webhook-id` as the first delivery, so a receiver that did get it deduplicates. Each replay makes
the server POST to a URL the caller chose, so replays are bounded (`webhooks.replay`): per caller
in a rolling minute, and per task in all (429 + Retry-After past either).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from serve_app.api.auth import CallerDep
from serve_app.api.deps import Ctx
from serve_app.api.intake import ERRORS
from serve_app.api.schemas import ErrorResponse
from serve_app.tasks.outbox import ReplayLimits
from serve_app.webhooks import make_msg_id

router = APIRouter(prefix="/v1", tags=["webhooks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: ERRORS[401],
    404: ERRORS[404],
    409: {
        "model": ErrorResponse,
        "description": "TASK_NOT_FINISHED: the task still runs (its webhook is sent when it ends); "
        "NO_WEBHOOK: it was submitted without a webhook_url.",
    },
    422: {"model": ErrorResponse, "description": "WEBHOOKS_DISABLED: this server has no webhook signing secret."},
    429: {
        "model": ErrorResponse,
        "description": "REPLAY_RATE_LIMITED: this caller's replays in the last minute reached "
        "webhooks.replay.per_caller_per_minute; REPLAY_LIMIT_REACHED: the task was replayed "
        "webhooks.replay.max_per_task times and is not replayed again. See Retry-After.",
    },
}


class WebhookReplay(BaseModel):
    """The answer to a replay: the delivery is queued."""

    task_id: str = Field(description="The task whose webhook is sent again.")
    webhook_id: str = Field(description="The Standard Webhooks `webhook-id`: the same as the first delivery's.")
    webhook_status: str = Field(description="`pending` until it is delivered (or fails every attempt).")


@router.post(
    "/tasks/{task_id}/webhook",
    status_code=202,
    response_model=WebhookReplay,
    responses=_ERRORS,
    summary="Deliver a finished task's signed webhook again (same webhook-id), through the outbox.",
)
async def replay_webhook(task_id: str, request: Request, ctx: Ctx, caller: CallerDep) -> WebhookReplay:
    ctx.webhooks.require("Webhooks")
    bounds, retention = ctx.args.webhooks.replay, ctx.args.retention
    limits = ReplayLimits(
        per_caller=bounds.per_caller_per_minute,
        max_per_task=bounds.max_per_task,
        task_kept_s=retention.ttl_s + retention.webhook_grace_s,
    )
    record = await asyncio.to_thread(
        lambda: ctx.tasks.outbox.replay(task_id, caller.key_id, caller=caller.rate_scope(request), limits=limits)
    )
    return WebhookReplay(
        task_id=record.task_id, webhook_id=make_msg_id(record.task_id), webhook_status=record.webhook_status or ""
    )
