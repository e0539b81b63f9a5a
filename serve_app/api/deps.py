"""What the routes share inside one ingress replica (one replica = one process, so a module global)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from ray.serve.handle import DeploymentHandle

from serve_app.config import AppArgs, Preset, Settings
from serve_app.metrics import IngressMetrics
from serve_app.protocol import GenerationLimits
from serve_app.storage.base import ImageStore
from serve_app.tasks import TaskStore

logger = logging.getLogger("ray.serve")


@dataclass
class IngressContext:
    args: AppArgs
    preset: Preset
    limits: GenerationLimits
    settings: Settings
    tasks: TaskStore
    images: ImageStore
    runner: DeploymentHandle
    probes: dict[str, DeploymentHandle]
    metrics: IngressMetrics
    shopping_provider: str
    version: str
    _dispatches: set[asyncio.Task[Any]] = field(default_factory=set)

    def dispatch(self, task_id: str) -> None:
        """Push a task to the runner without holding the client; the runner's sweeper is the backstop."""

        async def push() -> None:
            try:
                await self.runner.run.remote(task_id)
            except Exception as exc:  # runner full or restarting: the task stays queued and is swept
                logger.warning("dispatch of task %s failed (%s); the runner's sweeper will take it", task_id, exc)

        task = asyncio.get_running_loop().create_task(push())
        self._dispatches.add(task)
        task.add_done_callback(self._dispatches.discard)


_context: IngressContext | None = None


def set_context(ctx: IngressContext) -> None:
    global _context
    _context = ctx


def current_context() -> IngressContext | None:
    return _context


def get_ctx() -> IngressContext:
    if _context is None:
        raise RuntimeError("the ingress is not initialised")
    return _context
