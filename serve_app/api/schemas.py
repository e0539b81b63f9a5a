"""Answers of the HTTP API that are not a task's view: accepted, errors, health."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.tasks.records import TaskStatus


class TaskAccepted(BaseModel):
    task_id: str = Field(description="Poll GET /v1/result/{task_id} with it.")
    status: TaskStatus = Field(default=TaskStatus.queued, description="Always `queued` on submit.")


class ErrorResponse(BaseModel):
    error_code: str
    message: str


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    deployments: dict[str, str] = Field(description="Deployment name -> ready|error message.")
    storage: str = Field(description="ok, or `not ready: ` and an error code (the details are in the logs).")
    task_store: str = Field(description="ok, or `not ready: ` and an error code (the details are in the logs).")
