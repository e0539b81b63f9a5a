"""The peer: Ray's documented Stable Diffusion example (doc/source/serve/doc_code/stable_diffusion.py),
with the tiny SD model this app's `tiny` preset builds instead of stabilityai/stable-diffusion-2.

Kept to the example's shape: an `APIIngress` with `GET /imagine?prompt=&img_size=` that awaits a
handle call to one model deployment, whose synchronous `generate` runs the pipeline for one image
per call (no batching, no multiplexing, no task store) and returns a PIL image the ingress encodes
as PNG. Serve's defaults otherwise (max_ongoing_requests 5). Only the model source, the step count
(a query parameter, so both apps run the same work) and the CPU-sized resources differ; on a GPU
(`device="cuda"`) it loads float16 weights onto it and runs under `torch.autocast`, as the doc does.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

app = FastAPI()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(app)
class APIIngress:
    def __init__(self, diffusion_model_handle: DeploymentHandle) -> None:
        self.handle = diffusion_model_handle

    @app.get("/imagine", responses={200: {"content": {"image/png": {}}}}, response_class=Response)
    async def generate(self, prompt: str, img_size: int = 64, steps: int = 8, seed: int = 0) -> Response:
        assert len(prompt), "prompt parameter cannot be empty"
        image = await self.handle.generate.remote(prompt, img_size=img_size, steps=steps, seed=seed)
        file_stream = BytesIO()
        image.save(file_stream, "PNG")
        return Response(content=file_stream.getvalue(), media_type="image/png")

    @app.get("/healthcheck")
    async def healthcheck(self) -> dict[str, str]:
        return {"status": "ok"}


@serve.deployment(ray_actor_options={"num_cpus": 1})
class StableDiffusion:
    def __init__(self, model_cache_dir: str, threads: int, model_dir: str = "", device: str = "cpu") -> None:
        import torch
        from diffusers import AutoPipelineForText2Image

        from serve_app.models.tiny import ensure_tiny_sd

        torch.set_num_threads(threads)
        source = model_dir or str(ensure_tiny_sd(Path(model_cache_dir)))
        if device == "cuda":  # as the doc example: float16 weights on the GPU
            self.pipe = AutoPipelineForText2Image.from_pretrained(source, torch_dtype=torch.float16).to("cuda")
        else:
            self.pipe = AutoPipelineForText2Image.from_pretrained(source)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = device

    def generate(self, prompt: str, img_size: int = 64, steps: int = 8, seed: int = 0) -> Any:
        import torch

        assert len(prompt), "prompt parameter cannot be empty"
        generator = torch.Generator(self.device).manual_seed(seed)
        with torch.autocast(self.device, enabled=self.device == "cuda"):  # the doc example's autocast
            return self.pipe(
                prompt, height=img_size, width=img_size, num_inference_steps=steps, generator=generator
            ).images[0]


def build(model_cache_dir: str, threads: int, model_dir: str = "", device: str = "cpu") -> Any:
    return APIIngress.bind(StableDiffusion.bind(model_cache_dir, threads, model_dir, device))
