"""TaskRunner deployment: a thin shell over `serve_app.tasks.worker.TaskWorker`.

It opens the replica's task store and image store, builds every registered product's flow over
the other deployments' handles (cloud clients and the prompt writer shared by all of this
replica's tasks: one rate limiter per provider per replica), and starts the worker.
"""

from __future__ import annotations

import asyncio

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.args import CoreArgs
from serve_app.backends import BackendRegistry
from serve_app.flows.handles import HandleStages
from serve_app.flows.kit import FlowDeps
from serve_app.metrics import TaskMetrics
from serve_app.presets import load_preset
from serve_app.products.registry import PRODUCTS
from serve_app.settings import get_settings
from serve_app.storage import start_store
from serve_app.tasks import open_task_store
from serve_app.tasks.worker import TaskWorker
from serve_app.webhook_secret import load_webhook_secret
from serve_app.webhooks import WebhookSender
from serve_app.writing import build_writer


@serve.deployment
class TaskRunner:
    async def __init__(self, args: CoreArgs, stages: dict[str, DeploymentHandle]) -> None:
        """`stages`: the model deployments' handles by HandleStages field (captioner, classifier,
        generator, shopping, editor, translator)."""
        settings = get_settings()
        tasks = await asyncio.to_thread(open_task_store, args.tasks, settings)
        images = await start_store(args.storage, settings)
        metrics = TaskMetrics()
        images.on_error = metrics.storage_failed
        preset = load_preset(args.preset)
        handles = HandleStages(**stages)
        deps = FlowDeps(
            stages=handles,
            images=images,
            backends=BackendRegistry(args.backends, preset.generator.model_id, preset.editor.model_id, args.fetch),
            writer=build_writer(args.prompt_writer, handles.translate, preset.translator.model_id, args.retries),
            retries=args.retries,
            task_store=tasks,
        )
        secret = (await asyncio.to_thread(load_webhook_secret, settings, args)).value
        self.worker = TaskWorker(
            tasks=tasks,
            images=images,
            flows={product.kind: product.build_flow(deps, args) for product in PRODUCTS},
            cfg=args.tasks,
            webhooks=args.webhooks,
            sender=WebhookSender(args.webhooks, secret, args.fetch) if secret else None,
            retention=args.retention,
            metrics=metrics,
        )
        self.worker.start()

    async def run(self, task_id: str) -> str:
        """Claim and run a pushed task; returns its final status (or 'skipped' if not claimable)."""
        return await self.worker.run(task_id)

    async def check_health(self) -> None:
        await self.worker.check_health()
