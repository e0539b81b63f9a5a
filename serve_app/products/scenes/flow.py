"""Scene images (task kind `scene`; source spec scene-image-service-readme.md).

A script's scene -> the prompt writer's English description -> this product's prompts.yaml with the
style LoRA's trigger words -> one image from the product's backend chain (`/external`: a cloud API
first, KLING by default; `/internal`: the in-cluster Generator) -> stored ->
`{scene_id, image_prompt, image_s3url}` plus which backend made it, its time and cost.

Every scene of a script keeps one style: the same LoRA (`scenes.lora`), the same templates and the
seed derived from the script id (`Scene.style_seed`).
"""

from __future__ import annotations

from pathlib import Path

from serve_app.backends import variant_chain
from serve_app.flows.kit import Flow, FlowOutcome, Run, prompt_fields
from serve_app.products.scenes.payload import ScenePayload
from serve_app.prompts import build_prompt, load_prompt_templates
from serve_app.tasks.records import Stage

KIND = "scene"
PROMPTS = Path(__file__).with_name("prompts.yaml")


class SceneFlow(Flow[ScenePayload]):
    payload = ScenePayload

    async def steps(self, run: Run[ScenePayload]) -> FlowOutcome:
        request, result, scene = run.request, run.result, run.payload.scene
        result["scene_id"] = scene.scene_id
        if run.payload.variant is not None:
            result["variant"] = run.payload.variant.name

        async with run.stage(Stage.writing, "write"):
            written = await self.deps.writer.scene_prompt(scene)
        run.time_translation(written)
        built = build_prompt(
            written.text,
            [],
            "",
            request.lora.trigger_words if request.lora else [],
            templates=load_prompt_templates(PROMPTS),
            user_negative=request.negative_prompt,
        )
        result.update(image_prompt=built.prompt, **prompt_fields(built, request.lora))
        result.update(scene_description=written.text, **written.record())

        async with run.stage(Stage.generating, "generate"):
            spec = request.generation_spec(
                built.prompt, built.negative_prompt, None, run.record.task_id, seed=scene.style_seed
            )
            image = await run.generate_with(run.chain(run.payload.chain, variant_chain(run.payload)), spec)

        async with run.stage(Stage.storing, "store"):
            made = await run.store(
                image,
                {
                    "task_id": run.record.task_id,
                    "kind": KIND,
                    "script_id": scene.script_metadata.script_id,
                    "scene_id": scene.scene_id,
                    "prompt": result["prompt"],
                    "negative_prompt": result["negative_prompt"],
                    "seed": image.seed,
                    "backend": image.backend,
                    "model_id": image.model,
                    "lora": result["lora"],
                    **run.settings_record(),
                },
            )
        result.update(image_s3url=made.url, **run.image_fields([made]), model_id=image.model)
        return run.outcome()
