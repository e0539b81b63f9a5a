"""GET /v1/tasks/{task_id}/events: a task's progress as Server-Sent Events, resumable.

Events, each with an `id:` that only grows for a task:
- `progress`: status, stage, step i of n, queue position and ETA; sent when any of them changes;
- `result`: the same body as GET /v1/result once the task has ended; the stream closes after it.

A client that reconnects with `Last-Event-ID` gets only what is newer than that id (nothing but
the close when it already saw the result). The stream reads the task store (not a replica's
memory) whenever the store pushes a change of the task, so it works from any ingress replica,
and ends after `long_requests.stream_max_s` (clients reconnect with `Last-Event-ID`; the `retry:` line
says after how long). A stream is a long request: it holds one of its caller's slots (serve_app.api.slots).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from serve_app.api.auth import CallerDep
from serve_app.api.deps import Ctx, IngressContext
from serve_app.api.schemas import ErrorResponse
from serve_app.api.slots import LONG
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import Stage, TaskStatus
from serve_app.tasks.store import QueueStats
from serve_app.tasks.views import task_view

router = APIRouter(prefix="/v1", tags=["desk makeover"])

POLL_S = 0.5  # a stream reads its task at least this often without a pushed change (queue position, ETA)
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream


class ProgressEvent(BaseModel):
    """The data of a `progress` event."""

    task_id: str
    status: TaskStatus
    stage: Stage | None = None
    step: int | None = Field(default=None, description="Diffusion step done (while generating).")
    total_steps: int | None = None
    queue_position: int | None = Field(default=None, description="While queued: tasks ahead (0: next).")
    eta_s: float | None = Field(default=None, description="Seconds until it ends, from recent run times.")
    attempts: int = 0


def event_id(record: TaskRecord, stats: QueueStats) -> int:
    """Grows with every change: the task's last update (ms), then a queued task's advance in line.
    The result's id is above every progress id of its millisecond too: a task that ends in the
    millisecond of its last progress write still sends its result to a client that saw that write."""
    if record.finished:
        return int(record.updated_at * 1000) * 1000 + 1000
    advance = 999 - min(stats.position, 999) if stats.position is not None else 999
    return int(record.updated_at * 1000) * 1000 + advance


def _frame(kind: str, ident: int, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {ident}\nevent: {kind}\ndata: {payload}\n\n".encode()


def _progress(record: TaskRecord, stats: QueueStats) -> dict[str, Any]:
    progress = record.progress
    event = ProgressEvent(
        task_id=record.task_id,
        status=record.status,
        stage=progress.stage if progress else None,
        step=progress.step if progress else None,
        total_steps=progress.total_steps if progress else None,
        queue_position=stats.position,
        eta_s=stats.eta_s,
        attempts=record.attempts,
    )
    return event.model_dump(mode="json", exclude_none=True)


def _parse_last_id(value: str | None) -> int:
    try:
        return int(value) if value else -1
    except ValueError:
        return -1


async def _stream(
    ctx: IngressContext,
    task_id: str,
    key_id: str | None,
    last_id: int,
    poll_s: float,
    max_s: float,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[bytes]:
    """The task's events: each change the store pushes is sent at once; the task is read at least
    every `poll_s` anyway (queue position and ETA move with other tasks, and a push may be lost).
    Ends within `poll_s` of `gone()` turning true (the client left: its slot is free again)."""
    yield b"retry: 1000\n\n"
    deadline = time.monotonic() + max_s
    quiet_since = time.monotonic()
    last_sent: dict[str, Any] | None = None
    with ctx.changes.watch(task_id) as changed:
        while time.monotonic() < deadline:
            if gone is not None and await gone():
                return
            record, stats = await asyncio.to_thread(ctx.tasks.view, task_id, key_id)
            ident = event_id(record, stats)
            if record.finished:
                if ident > last_id:
                    yield _frame("result", ident, task_view(record).model_dump(mode="json", exclude_none=True))
                return
            data = _progress(record, stats)
            if ident > last_id and data != last_sent:
                yield _frame("progress", ident, data)
                last_id, last_sent, quiet_since = ident, data, time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield b": keepalive\n\n"
                quiet_since = time.monotonic()
            await ctx.changes.wait(changed, poll_s)


@router.get(
    "/tasks/{task_id}/events",
    dependencies=[LONG],
    summary="Live task events (Server-Sent Events): progress, queue position, ETA, then the result.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "`progress` events, then one `result`."},
        401: {"model": ErrorResponse, "description": "API keys on: no live key."},
        404: {"model": ErrorResponse, "description": "Unknown task (or, with API keys on, another key's task)."},
    },
)
async def events(
    task_id: str,
    ctx: Ctx,
    caller: CallerDep,
    request: Request,
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID", max_length=40),
) -> StreamingResponse:
    await asyncio.to_thread(ctx.tasks.owned, task_id, caller.key_id)  # 404 now, not inside the stream
    max_s = ctx.args.long_requests.stream_max_s
    last = _parse_last_id(last_event_id)
    stream = _stream(ctx, task_id, caller.key_id, last, POLL_S, max_s, request.is_disconnected)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
