"""The flow's stages as calls to the other deployments, through their `DeploymentHandle`s."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ray.serve.handle import DeploymentHandle

from serve_app.errors import AppError
from serve_app.flows.kit import OnStep
from serve_app.stages import (
    Classification,
    DeskItem,
    GenerationOutput,
    GenerationProgress,
    GenerationSpec,
    ItemSearchResult,
)


@dataclass(frozen=True)
class HandleStages:
    """The flow's stages as calls to the other deployments (the handles the builder binds)."""

    captioner: DeploymentHandle
    classifier: DeploymentHandle
    generator: DeploymentHandle
    shopping: DeploymentHandle
    editor: DeploymentHandle
    translator: DeploymentHandle

    async def caption(self, image_png: bytes) -> str:
        return await self.captioner.caption.remote(image_png)

    async def classify(self, image_png: bytes) -> Classification:
        return await self.classifier.classify.remote(image_png)

    async def generate(self, spec: GenerationSpec, on_step: OnStep) -> GenerationOutput:
        """Stream the Generator's progress into `on_step` (the Editor's, for an instruction edit);
        cancelling this coroutine cancels the call."""
        if spec.is_edit:
            handle = self.editor.options(stream=True)
        else:
            # The LoRA name is the multiplexed model id: Serve routes to replicas that have it resident.
            handle = self.generator.options(stream=True, multiplexed_model_id=spec.multiplexed_model_id)
        stream = handle.generate_stream.remote(spec)
        output: GenerationOutput | None = None
        try:
            async for event in stream:
                if isinstance(event, GenerationProgress):
                    await on_step(event.step, event.total)
                else:
                    output = event
        except asyncio.CancelledError:
            stream.cancel()
            raise
        if output is None:
            raise AppError("The generator ended its stream without an image.", error_code="GENERATION_FAILED")
        return output

    async def search(self, items: list[DeskItem]) -> dict[str, ItemSearchResult]:
        return await self.shopping.search.remote(items)

    async def translate(self, text: str) -> str:
        return await self.translator.translate.remote(text)
