"""What the client returns: typed views of the server's JSON.

They mirror the server's models (`serve_app.tasks.views`, `serve_app.requests`) loosely and on
purpose: every model allows fields it does not declare (the server adds fields over time; they
are kept, readable as attributes and in `model_dump()`), and statuses and stages are plain
strings, so a newer server never breaks an older client.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagegen_client.sse import ServerSentEvent

FINISHED = ("done", "failed")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskAccepted(_Open):
    """The answer to a submit: the task's id (poll it, stream its events, wait for it)."""

    task_id: str
    status: str = "queued"


class Progress(_Open):
    """What a running task is doing: `stage` (queued, captioning, generating, searching, storing)."""

    stage: str
    step: int | None = Field(default=None, description="Diffusion step done (while generating).")
    total_steps: int | None = None


class GeneratedImage(_Open):
    """One image a task made."""

    url: str
    key: str | None = None
    seed: int | None = None


class TaskResult(_Open):
    """GET /v1/result/{task_id}: status and progress while running, the outputs when done."""

    task_id: str
    status: str
    created_at: float | None = None
    updated_at: float | None = None
    progress: Progress | None = None
    attempts: int = 0
    queue_position: int | None = Field(default=None, description="While queued: tasks ahead (0: next).")
    eta_s: float | None = Field(default=None, description="Seconds until it ends, estimated by the server.")
    initial_image_url: str | None = None
    processed_image_url: str | None = None
    images: list[GeneratedImage] | None = None
    output_format: str | None = None
    caption: str | None = None
    is_desk: bool | None = None
    desk_score: float | None = None
    items: list[dict[str, Any]] | None = None
    recommendations: dict[str, list[dict[str, Any]]] | None = None
    recommendation_errors: dict[str, str] | None = None
    generation_skipped: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    lora: dict[str, Any] | None = None
    model_id: str | None = None
    timings: dict[str, float] | None = None
    error_code: str | None = None
    message: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def image_urls(self) -> list[str]:
        """Every generated image's URL: `images` when the server lists them, else `processed_image_url`."""
        if self.images:
            return [image.url for image in self.images]
        return [self.processed_image_url] if self.processed_image_url else []


class ProgressEvent(_Open):
    """The data of a `progress` event: status, stage, step i of n, queue position, ETA."""

    task_id: str
    status: str
    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    queue_position: int | None = None
    eta_s: float | None = None
    attempts: int = 0


class TaskEvent(BaseModel):
    """One event of a task's stream: `progress` (with `progress`) or the final `result` (with `result`).

    Events of a kind this client does not know keep their raw `data` only."""

    event: str
    id: str | None = None
    data: str = ""
    progress: ProgressEvent | None = None
    result: TaskResult | None = None

    @property
    def final(self) -> bool:
        return self.event == "result"

    @classmethod
    def from_sse(cls, sse: ServerSentEvent) -> TaskEvent:
        """Parse a server-sent event's JSON data by its event name."""
        progress = result = None
        if sse.event == "progress":
            progress = ProgressEvent.model_validate(json.loads(sse.data))
        elif sse.event == "result":
            result = TaskResult.model_validate(json.loads(sse.data))
        return cls(event=sse.event, id=sse.id or None, data=sse.data, progress=progress, result=result)

    @classmethod
    def from_result(cls, result: TaskResult) -> TaskEvent:
        """The event a poll stands for (when the server's event stream is not available)."""
        if result.finished:
            return cls(event="result", data=result.model_dump_json(exclude_none=True), result=result)
        stage = result.progress.stage if result.progress else None
        progress = ProgressEvent(
            task_id=result.task_id,
            status=result.status,
            stage=stage,
            step=result.progress.step if result.progress else None,
            total_steps=result.progress.total_steps if result.progress else None,
            queue_position=result.queue_position,
            eta_s=result.eta_s,
            attempts=result.attempts,
        )
        return cls(event="progress", data=progress.model_dump_json(exclude_none=True), progress=progress)


class WebhookReplay(_Open):
    """The answer to POST /v1/tasks/{task_id}/webhook: the delivery is queued again."""

    task_id: str
    webhook_id: str = Field(description="The Standard Webhooks message id: the same as the first delivery's.")
    webhook_status: str = "pending"
