"""Instruction edits (task kind `edit`; source spec enhancement-api-options.md).

The uploaded image (the task's input) and an instruction ("make the lighting warmer", Korean or
English). The instruction becomes the edit prompt: in English through the prompt writer's
translation, or rewritten into a better edit instruction when the request asks (`rewrite`): by
Gemini from the image and the instruction together when it is configured (serve_app.writing.
analysis: `{edits, preserve, improved_prompt}`, all three in the result), else, or when that
fails (the result says why), by the prompt writer from the instruction's text. Then the
`edit` backend chain makes the edit: the in-cluster Editor (InstructPix2Pix, batched with other
edits) first and a cloud edit API (OpenAI image edits, Replicate) when it fails, or the
reverse, or only one side when the request asks (`backend=local|cloud`). With `restore_faces`,
a separate stage restores the faces of the edit (GFPGAN through Replicate: see
serve_app.backends.restoration); when it fails the edit is still delivered, and the result says
the faces were not restored and why. The result says which backend made the edit, what each
stage cost, and which backends failed before it.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from serve_app.backends import BackendImage, variant_chain
from serve_app.backends.restoration import FaceRestorer
from serve_app.errors import AppError, GenerationFailed
from serve_app.flows.kit import Flow, FlowDeps, FlowOutcome, Run
from serve_app.products.edits.payload import EditPayload
from serve_app.tasks.records import Stage
from serve_app.writing.analysis import GeminiEditAnalyst

KIND = "edit"


class EditFlow(Flow[EditPayload]):
    payload = EditPayload

    def __init__(
        self, deps: FlowDeps, restorer: FaceRestorer | None = None, analyst: GeminiEditAnalyst | None = None
    ) -> None:
        super().__init__(deps)
        self.restorer = restorer
        self.analyst = analyst

    async def steps(self, run: Run[EditPayload]) -> FlowOutcome:
        payload, result, request = run.payload, run.result, run.request
        photo = await run.input_image()
        if photo is None:
            raise GenerationFailed("The edit task has no source image.")
        if payload.variant is not None:
            result["variant"] = payload.variant.name

        # 1. The edit prompt: rewritten (from the image and the instruction when an analyst is
        #    configured, else from the instruction), or the instruction in English.
        async with run.stage(Stage.writing, "write"):
            analysed_by = await self._analyse(photo, payload.instruction, result) if payload.rewrite else None
            if analysed_by:
                result["writer"] = analysed_by
            elif payload.rewrite:
                written = await self.deps.writer.edit_prompt(payload.instruction)
                result.update(edit_prompt=written.text, **written.record())
                run.time_translation(written)
            else:
                result["edit_prompt"] = await run.english(payload.instruction, "instruction")
        negative = await run.english(request.negative_prompt, "negative_prompt") or ""
        result.update(
            instruction=payload.instruction,
            prompt=result["edit_prompt"],
            negative_prompt=negative,
            image_guidance_scale=payload.image_guidance_scale,
        )

        # 2. The edit, through the chain.
        async with run.stage(Stage.generating, "edit"):
            spec = request.generation_spec(result["edit_prompt"], negative, photo, run.record.task_id)
            spec = spec.model_copy(update={"image_guidance_scale": payload.image_guidance_scale})
            edited = await run.generate_with(run.chain(KIND, payload.chain or variant_chain(payload)), spec)

        # 3. Face restoration, when asked for: a failure keeps the edit and says why.
        final = edited
        if payload.restore_faces:
            async with run.stage(Stage.restoring, "restore"):
                final = await self._restore(edited, result)

        # 4. Store it.
        async with run.stage(Stage.storing, "store"):
            made = await run.store(final, self._metadata(run, edited))
        with Image.open(io.BytesIO(final.image_png)) as stored_image:
            result["width"], result["height"] = stored_image.size
        result.update(run.image_fields([made]), model_id=edited.model)
        return run.outcome()

    async def _analyse(self, photo: bytes, instruction: str, result: dict[str, Any]) -> str | None:
        """The edit prompt from Gemini's analysis of the image and the instruction, in `result`, and
        who wrote it; None (and why, in `analysis_fallback`) when there is no analyst or it failed."""
        if self.analyst is None:
            return None
        try:
            analysis, call = await self.analyst.analyse(photo, instruction)
        except AppError as exc:
            result["analysis_fallback"] = f"{exc.error_code}: {exc.message}"[:300]
            return None
        result.update(edit_prompt=analysis.improved_prompt, analysis={**analysis.model_dump(), **call})
        return self.analyst.name

    async def _restore(self, edited: BackendImage, result: dict[str, Any]) -> BackendImage:
        """The edit with restored faces, or the edit itself when restoration fails (recorded)."""
        if self.restorer is None:
            result["face_restoration"] = {"restored": False, "error_code": "NOT_CONFIGURED"}
            return edited
        try:
            restored = await self.restorer.restore(edited.image_png)
        except AppError as exc:
            result["face_restoration"] = {"restored": False, "error_code": exc.error_code, "message": exc.message}
            return edited
        result["face_restoration"] = {"restored": True, **restored.result_fields()}
        result["cost_usd"] = round((result.get("cost_usd") or 0.0) + restored.cost_usd, 6)
        return restored.model_copy(update={"seed": edited.seed})

    @staticmethod
    def _metadata(run: Run[EditPayload], image: BackendImage) -> dict[str, Any]:
        result = run.result
        return {
            "task_id": run.record.task_id,
            "kind": KIND,
            "source_key": run.record.input_key,
            "instruction": result["instruction"],
            "edit_prompt": result["edit_prompt"],
            "seed": image.seed,
            "backend": image.backend,
            "model_id": image.model,
            "image_guidance_scale": result["image_guidance_scale"],
            **run.settings_record(),
        }
