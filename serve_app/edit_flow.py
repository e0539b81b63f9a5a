"""Instruction edits (task kind `edit`; seed enhancement-api-options.md).

The uploaded image (the task's input) and an instruction ("make the lighting warmer", Korean or
English). The instruction becomes the edit prompt: in English through the prompt writer's
translation, or rewritten by it into a better edit instruction when the request asks. Then the
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
import time
from typing import Any

from PIL import Image

from serve_app.backends import BackendImage, BackendRegistry, ChainFailed, variant_chain
from serve_app.backends.restoration import FaceRestorer
from serve_app.errors import AppError, GenerationFailed, TaskCancelled
from serve_app.flow import CancelledFn, Flow, FlowOutcome, ProgressFn
from serve_app.products.edits.payload import EditPayload
from serve_app.requests import ResolvedGenerate
from serve_app.scene_flow import backend_fields
from serve_app.stages import StageRetry
from serve_app.tasks import TaskRecord
from serve_app.tasks.records import Stage

KIND = "edit"


class EditFlow(Flow):
    def __init__(
        self, *args: Any, backends: BackendRegistry, restorer: FaceRestorer | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.backends = backends
        self.restorer = restorer

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
        assert isinstance(payload, EditPayload), "an edit task carries its instruction"
        if not record.input_key:
            raise GenerationFailed("The edit task has no source image.")
        photo = await self.images.get(record.input_key)
        timings: dict[str, float] = {}
        stored: list[str] = []
        if payload.variant is not None:
            result["variant"] = payload.variant.name

        # 1. The edit prompt: rewritten by the prompt writer, or the instruction in English.
        await progress(Stage.writing)
        started = time.perf_counter()
        if payload.rewrite:
            written = await self.writer.edit_prompt(payload.instruction)
            result.update(edit_prompt=written.text, **written.record())
        else:
            result["edit_prompt"] = await self._english(payload.instruction, "instruction", result)
        timings["write"] = time.perf_counter() - started
        negative = await self._english(request.negative_prompt, "negative_prompt", result) or ""
        result.update(
            instruction=payload.instruction,
            prompt=result["edit_prompt"],
            negative_prompt=negative,
            image_guidance_scale=payload.image_guidance_scale,
        )
        if await cancelled():
            raise TaskCancelled()

        # 2. The edit, through the chain.
        await progress(Stage.generating)
        spec = request.generation_spec(result["edit_prompt"], negative, photo, record.task_id)
        spec = spec.model_copy(update={"image_guidance_scale": payload.image_guidance_scale})
        chain = self.backends.chain(KIND, self._local_generate(journal), payload.chain or variant_chain(payload))
        started = time.perf_counter()
        try:
            made = await chain.generate(spec, self.step_reporter(progress))
        except ChainFailed as exc:
            result["backends_failed"] = [attempt.model_dump() for attempt in exc.attempts]
            raise GenerationFailed(exc.message) from exc
        timings["edit"] = time.perf_counter() - started
        result.update(backend_fields(made.image), backends_failed=[a.model_dump() for a in made.failed] or None)
        if await cancelled():
            raise TaskCancelled()

        # 3. Face restoration, when asked for: a failure keeps the edit and says why.
        final = made.image
        if payload.restore_faces:
            await progress(Stage.restoring)
            started = time.perf_counter()
            final = await self._restore(made.image, result)
            timings["restore"] = time.perf_counter() - started
            if await cancelled():
                raise TaskCancelled()

        # 4. Store it.
        await progress(Stage.storing)
        started = time.perf_counter()
        images = await self._store_images(
            request, [final], lambda image: self._metadata(record, request, result, made.image), stored
        )
        timings["store"] = time.perf_counter() - started
        with Image.open(io.BytesIO(final.image_png)) as stored_image:
            result["width"], result["height"] = stored_image.size
        result.update(
            processed_image_url=images[0].url,
            images=[image.model_dump() for image in images],
            output_format=request.output_format,
            model_id=made.image.model,
            timings={name: round(seconds, 4) for name, seconds in timings.items()},
        )
        return FlowOutcome(result=result, object_keys=stored)

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
        result["face_restoration"] = {"restored": True, **backend_fields(restored)}
        result["cost_usd"] = round((result.get("cost_usd") or 0.0) + restored.cost_usd, 6)
        return restored.model_copy(update={"seed": edited.seed})

    @staticmethod
    def _metadata(
        record: TaskRecord, request: ResolvedGenerate, result: dict[str, Any], image: BackendImage
    ) -> dict[str, Any]:
        return {
            "task_id": record.task_id,
            "kind": KIND,
            "source_key": record.input_key,
            "instruction": result["instruction"],
            "edit_prompt": result["edit_prompt"],
            "seed": image.seed,
            "backend": image.backend,
            "model_id": image.model,
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "image_guidance_scale": result["image_guidance_scale"],
            "height": request.height,
            "width": request.width,
            "output_format": request.output_format,
        }
