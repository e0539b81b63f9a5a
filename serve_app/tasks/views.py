"""What clients see of a task: the poll answer and the webhook body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_app.requests import LoraSelection, OutputFormat
from serve_app.stages import DeskItem, GeneratedImage, Offer, StageRetry
from serve_app.tasks.records import Progress, Stage, TaskRecord, TaskStatus
from serve_app.tasks.store import QueueStats


class TaskResult(BaseModel):
    """What GET /v1/result/{task_id} returns (and what a webhook POSTs)."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    status: TaskStatus
    created_at: float = Field(description="Unix time of submission.")
    updated_at: float = Field(description="Unix time of the last change.")
    progress: Progress | None = Field(default=None, description="While queued/processing.")
    attempts: int = Field(default=0, description="Times a worker has started this task.")
    queue_position: int | None = Field(
        default=None, description="While queued: tasks ahead of it in the queue (0: it runs next)."
    )
    eta_s: float | None = Field(
        default=None, description="While queued or running: seconds until it ends, from recent tasks' run times."
    )
    initial_image_url: str | None = None
    processed_image_url: str | None = Field(default=None, description="The (first) generated image.")
    images: list[GeneratedImage] | None = Field(default=None, description="Every generated image, in seed order.")
    output_format: OutputFormat | None = Field(default=None, description="Encoding of the generated images.")
    caption: str | None = None
    is_desk: bool | None = None
    desk_score: float | None = None
    items: list[DeskItem] | None = None
    recommendations: dict[str, list[Offer]] | None = Field(
        default=None, description="Korean item name -> up to 3 offers, cheapest first."
    )
    recommendation_errors: dict[str, str] | None = Field(
        default=None, description="Item name -> why its shopping search failed."
    )
    generation_skipped: str | None = Field(
        default=None,
        description="Why no image was generated: `not_a_desk`, or `generation_failed: CODE: message` when "
        "generating from a desk photo still failed after its retries (the shopping offers still come back).",
    )
    prompt: str | None = Field(default=None, description="The final prompt used.")
    negative_prompt: str | None = None
    seed: int | None = None
    lora: LoraSelection | None = None
    model_id: str | None = None
    timings: dict[str, float] | None = Field(default=None, description="Seconds per stage.")
    retries: list[StageRetry] | None = Field(
        default=None, description="Stage calls retried after a replica or node failure, in order."
    )
    error_code: str | None = None
    message: str | None = None


def task_view(record: TaskRecord, stats: QueueStats | None = None) -> TaskResult:
    """The client's view: status, progress (and queue position, ETA) while running, result fields when done."""
    body: dict[str, Any] = {
        "task_id": record.task_id,
        "status": record.status,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "attempts": record.attempts,
        "initial_image_url": record.initial_image_url,
    }
    if stats is not None:
        body.update(queue_position=stats.position, eta_s=stats.eta_s)
    if not record.finished:
        body["progress"] = record.progress or Progress(stage=Stage.queued)
    if record.result:
        body.update(record.result)
    if record.status == TaskStatus.failed:
        body["error_code"] = record.error_code
        body["message"] = record.message
    return TaskResult.model_validate(body)
