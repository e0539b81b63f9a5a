"""Composing a person and a garment (task kind `compose`; source spec enhancement-api-options.md).

The task's input photo is the person, its second input image the garment (both taken in at the
edge: uploaded, or fetched SSRF-safe). One composition through the `compose` backend chain: Gemini
(`gemini-2.5-flash-image`, both images as inlineData parts of one generateContent) first, and
OpenAI's multi-image edit (gpt-image-1, both as `image[]` parts) when it fails, as configured.
Only backends registered with `composes=True` may be in that chain (serve_app.config checks it).
The result says which backend made the image, what it cost and which failed before it.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from serve_app.errors import GenerationFailed
from serve_app.flows.kit import Flow, FlowDeps, FlowOutcome, Run
from serve_app.products.compose.config import ComposeConfig
from serve_app.products.compose.payload import ComposePayload
from serve_app.stages import GenerationSpec
from serve_app.tasks.records import Stage

KIND = "compose"


def instruction(cfg: ComposeConfig, prompt: str | None) -> str:
    """What the backends are told: the configured instruction, then the caller's own words."""
    return f"{cfg.instruction}\nAlso: {prompt.strip()}" if prompt and prompt.strip() else cfg.instruction


class ComposeFlow(Flow[ComposePayload]):
    payload = ComposePayload

    def __init__(self, deps: FlowDeps, cfg: ComposeConfig | None = None) -> None:
        super().__init__(deps)
        self.cfg = cfg or ComposeConfig()

    async def steps(self, run: Run[ComposePayload]) -> FlowOutcome:
        request, result = run.request, run.result
        person = await run.input_image()
        garments = await run.more_input_images()
        if person is None or len(garments) != 1:
            raise GenerationFailed("The compose task lacks its person or garment image.")
        with Image.open(io.BytesIO(person)) as opened:  # the header only: the output's shape
            width, height = opened.size
        told = instruction(self.cfg, run.payload.prompt)
        result.update(prompt=run.payload.prompt, instruction=told)

        async with run.stage(Stage.generating, "compose"):
            spec = GenerationSpec(
                task_id=run.record.task_id,
                prompt=told,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                height=height,
                width=width,
                seed=request.seed,
                init_image_png=person,
                reference_images_png=garments,
            )
            made = await run.generate_with(run.chain(KIND), spec)

        async with run.stage(Stage.storing, "store"):
            stored = await run.store(made, self._metadata(run, told, made.backend, made.model))
        with Image.open(io.BytesIO(made.image_png)) as image:
            result["width"], result["height"] = image.size
        result.update(run.image_fields([stored]), model_id=made.model)
        return run.outcome()

    @staticmethod
    def _metadata(run: Run[ComposePayload], told: str, backend: str, model: str) -> dict[str, Any]:
        return {
            "task_id": run.record.task_id,
            "kind": KIND,
            "person_key": run.record.input_key,
            "garment_key": run.request.more_input_keys[0],
            "prompt": run.payload.prompt,
            "instruction": told,
            "backend": backend,
            "model_id": model,
            "output_format": run.request.output_format,
        }
