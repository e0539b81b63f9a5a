"""What clients see of a task: the poll answer (v1's, and the seed's flat shape) and the webhook body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_app.requests import SEED_SURFACE, LoraSelection, OutputFormat
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


class SeedResult(TaskResult):
    """What GET /result/{task_id} returns (the seed's shape; the webhook of a task submitted on
    POST /generate too): v1's fields, `image_url`, and one key per recommended item beside them,
    its offers (`"마우스": [{title, price, mall, category3, category4, link, image}, ...]`). An item
    named like a field stays under `recommendations`: the field wins."""

    image_url: str | None = Field(default=None, description="The generated image (processed_image_url).")
    recommendations: dict[str, list[Offer]] | None = Field(
        default=None, description="Only the items whose name is a field's name (the field keeps its key)."
    )


def seed_body(view: TaskResult) -> dict[str, Any]:
    """The seed's flat shape of a v1 view (see SeedResult). A finished task always has
    `initial_image_url`, `processed_image_url` and `image_url` (null when it made no image)."""
    body = view.model_dump(mode="json", exclude_none=True)
    offers: dict[str, Any] = body.pop("recommendations", None) or {}
    if view.status in (TaskStatus.done, TaskStatus.failed):
        body.setdefault("initial_image_url", None)
        body.setdefault("processed_image_url", None)
        body["image_url"] = body["processed_image_url"]
    taken = set(body) | set(SeedResult.model_fields)
    clashing = {name: found for name, found in offers.items() if name in taken}
    body.update({name: found for name, found in offers.items() if name not in taken})
    if clashing:
        body["recommendations"] = clashing
    return body


def webhook_body(record: TaskRecord) -> dict[str, Any]:
    """What a finished task's webhook POSTs: its result in the shape of the API it was submitted
    on (the seed's for POST /generate), with `image_url` (as the seed's webhook has it)."""
    view = task_view(record)
    if record.request.get("surface") == SEED_SURFACE:
        return seed_body(view)
    body = view.model_dump(mode="json", exclude_none=True)
    if view.processed_image_url is not None:
        body["image_url"] = view.processed_image_url
    return body
