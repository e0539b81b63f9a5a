"""Scene images (task kind `scene`; seed scene-image-service-readme.md).

A script's scene -> the prompt writer's English description -> the scene templates of
configs/prompts.yaml with the style LoRA's trigger words -> one image from the product's backend
chain (`/external`: a cloud API first, KLING by default; `/internal`: the in-cluster Generator)
-> stored -> `{scene_id, image_prompt, image_s3url}` plus which backend made it, its time and cost.

Every scene of a script keeps one style: the same LoRA (`scenes.lora`), the same templates and the
seed derived from the script id (`Scene.style_seed`).
"""

from __future__ import annotations

import time
from typing import Any

from serve_app.backends import BackendImage, BackendRegistry, ChainFailed, variant_chain
from serve_app.errors import GenerationFailed, TaskCancelled
from serve_app.flow import CancelledFn, Flow, FlowOutcome, ProgressFn
from serve_app.products.scenes.payload import ScenePayload
from serve_app.prompts import build_prompt, load_prompt_templates
from serve_app.requests import ResolvedGenerate
from serve_app.stages import StageRetry
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import Stage

KIND = "scene"


class SceneFlow(Flow):
    def __init__(self, *args: Any, backends: BackendRegistry, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backends = backends

    async def _run(
        self,
        record: TaskRecord,
        request: ResolvedGenerate,
        progress: ProgressFn,
        cancelled: CancelledFn,
        journal: list[StageRetry],
        result: dict[str, Any],
    ) -> FlowOutcome:
        payload = request.product
        assert isinstance(payload, ScenePayload), "a scene task carries its scene"
        scene = payload.scene
        timings: dict[str, float] = {}
        stored: list[str] = []
        result["scene_id"] = scene.scene_id
        if payload.variant is not None:
            result["variant"] = payload.variant.name

        await progress(Stage.writing)
        started = time.perf_counter()
        written = await self.writer.scene_prompt(scene)
        timings["write"] = time.perf_counter() - started
        lora = request.lora
        built = build_prompt(
            written.text,
            [],
            "",
            lora.trigger_words if lora else [],
            templates=load_prompt_templates(section="scene"),
            user_negative=request.negative_prompt,
        )
        result.update(
            image_prompt=built.prompt,
            prompt=built.prompt,
            negative_prompt=built.negative_prompt,
            scene_description=written.text,
            lora={"name": lora.name, "scale": lora.scale} if lora else None,
            **written.record(),
        )
        if await cancelled():
            raise TaskCancelled()

        await progress(Stage.generating)
        spec = request.generation_spec(built.prompt, built.negative_prompt, None, record.task_id, seed=scene.style_seed)
        chain = self.backends.chain(payload.chain, self._local_generate(journal), variant_chain(payload))
        started = time.perf_counter()
        try:
            made = await chain.generate(spec, self.step_reporter(progress))
        except ChainFailed as exc:
            result["backends_failed"] = [attempt.model_dump() for attempt in exc.attempts]
            raise GenerationFailed(exc.message) from exc
        timings["generate"] = time.perf_counter() - started
        result.update(backend_fields(made.image), backends_failed=[a.model_dump() for a in made.failed] or None)
        if await cancelled():
            raise TaskCancelled()

        await progress(Stage.storing)
        started = time.perf_counter()
        images = await self._store_images(
            request, [made.image], lambda image: self._metadata(record, request, result, image), stored
        )
        timings["store"] = time.perf_counter() - started
        result.update(
            image_s3url=images[0].url,
            processed_image_url=images[0].url,
            images=[image.model_dump() for image in images],
            output_format=request.output_format,
            model_id=made.image.model,
            timings={name: round(seconds, 4) for name, seconds in timings.items()},
        )
        return FlowOutcome(result=result, object_keys=stored)

    @staticmethod
    def _metadata(
        record: TaskRecord, request: ResolvedGenerate, result: dict[str, Any], image: BackendImage
    ) -> dict[str, Any]:
        payload = request.product
        assert isinstance(payload, ScenePayload)
        return {
            "task_id": record.task_id,
            "kind": KIND,
            "script_id": payload.scene.script_metadata.script_id,
            "scene_id": payload.scene.scene_id,
            "prompt": result["prompt"],
            "negative_prompt": result["negative_prompt"],
            "seed": image.seed,
            "backend": image.backend,
            "model_id": image.model,
            "lora": result["lora"],
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "height": request.height,
            "width": request.width,
            "output_format": request.output_format,
        }


def backend_fields(image: BackendImage) -> dict[str, Any]:
    """What a result says of the backend that made an image."""
    return {
        "backend": image.backend,
        "backend_model": image.model,
        "backend_seconds": image.seconds,
        "cost_usd": image.cost_usd,
        "provider_request_id": image.provider_request_id,
        "backend_ignored": image.ignored or None,
        "safety_checker": image.safety_checker,
    }
