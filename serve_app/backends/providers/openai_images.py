"""OpenAI Images (https://platform.openai.com/docs/api-reference/images/create).

`POST {base_url}/images/generations` with `{model, prompt, n: 1, size}` and `Authorization:
Bearer`; dall-e models are asked for `response_format: b64_json`, gpt-image models always answer
base64 and refuse that field. The answer is `{created, data: [{b64_json, revised_prompt}]}`.
OpenAI takes a fixed set of sizes per model: the one nearest the spec's aspect ratio is sent.
An edit (a spec with an init image: the edit chain) is `POST {base_url}/images/edits` as
multipart/form-data: the `image` file part, `prompt`, `model`, `n`, `size` (gpt-image models and
dall-e-2 edit; dall-e-3 cannot, EDIT_NOT_SUPPORTED), with the same answer. A composition (the
compose chain: reference images after the init image) sends every image as an `image[]` part,
init image first (gpt-image models take up to 16; dall-e models one, COMPOSE_NOT_SUPPORTED).
Errors are `{"error": {message, type, param, code}}`: a content-policy refusal is a 400 with
code `content_policy_violation` (UPSTREAM_REJECTED), a bad key 401, quota and rate limits 429.
"""

from __future__ import annotations

from typing import Any

from serve_app.backends.base import ComposeNotSupported, EditNotSupported, image_mime
from serve_app.backends.cloud import CloudBackend, Made, nearest_aspect_ratio
from serve_app.backends.http import b64_image
from serve_app.backends.provider import cloud_config
from serve_app.backends.registry import register_backend
from serve_app.stages import GenerationSpec

SIZES: dict[str, list[str]] = {
    "dall-e-3": ["1024x1024", "1792x1024", "1024x1792"],
    "dall-e-2": ["1024x1024", "512x512", "256x256"],
    "gpt-image": ["1024x1024", "1536x1024", "1024x1536"],
}


def openai_size(model: str, width: int, height: int) -> str:
    """The size `model` takes that is nearest width:height in shape (then in area, for dall-e-2's squares)."""
    family = "gpt-image" if model.startswith("gpt-image") else model if model in SIZES else "dall-e-3"
    choices = SIZES[family]
    shapes = {size: int(size.split("x")[0]) / int(size.split("x")[1]) for size in choices}
    best_shape = shapes[nearest_aspect_ratio(width, height, shapes)]
    same_shape = [size for size in choices if shapes[size] == best_shape]
    return min(same_shape, key=lambda size: abs(int(size.split("x")[0]) * int(size.split("x")[1]) - width * height))


DEFAULTS = cloud_config("https://api.openai.com/v1", "dall-e-3", "OPENAI_API_KEY", 5, 0.04)


@register_backend("openai", defaults=DEFAULTS, edits=True, composes=True)
class OpenAIImagesBackend(CloudBackend):
    label = "OpenAI"
    honoured: frozenset[str] = frozenset({"init_image"})  # no negative prompt, seed, steps or guidance

    async def _make(self, spec: GenerationSpec) -> Made:
        if spec.init_image_png is not None:
            return await self._edit(spec, spec.init_image_png)
        model = self.cfg.model
        body: dict[str, Any] = {
            "model": model,
            "prompt": spec.prompt[:4000],
            "n": 1,
            "size": openai_size(model, spec.width, spec.height),
            **self.cfg.options,
        }
        if model.startswith("dall-e"):
            body["response_format"] = "b64_json"
        answer = await self.http.json("POST", "/images/generations", json=body)
        return self._made(answer)

    async def _edit(self, spec: GenerationSpec, image_png: bytes) -> Made:
        model = self.cfg.model
        if not (model.startswith("gpt-image") or model == "dall-e-2"):
            raise EditNotSupported(f"OpenAI's {model} cannot edit images; use gpt-image-1 or dall-e-2.")
        fields: dict[str, Any] = {
            "model": model,
            "prompt": spec.prompt[: 32000 if model.startswith("gpt-image") else 1000],
            "n": "1",
            "size": openai_size(model, spec.width, spec.height),
            **{key: str(value) for key, value in self.cfg.options.items()},
        }
        if model == "dall-e-2":
            fields["response_format"] = "b64_json"
        parts: list[tuple[str, Any]] = [(key, (None, value)) for key, value in fields.items()]
        if spec.reference_images_png:
            if not model.startswith("gpt-image"):
                raise ComposeNotSupported(f"OpenAI's {model} takes one image; compositions need gpt-image-1.")
            images = [image_png, *spec.reference_images_png][:16]
            parts += [("image[]", _file(f"image{i}", image)) for i, image in enumerate(images)]
        else:
            parts.append(("image", _file("image", image_png)))
        answer = await self.http.json("POST", "/images/edits", files=parts)
        return self._made(answer)

    def _made(self, answer: Any) -> Made:
        data = b64_image(answer, self.label)
        return Made(data, provider_request_id=str(answer.get("created", "")) or None)


def _file(name: str, image: bytes) -> tuple[str, bytes, str]:
    """A multipart file part of an input image, named and typed as what it is (PNG, JPEG, WEBP)."""
    mime = image_mime(image)
    return f"{name}.{mime.split('/')[1].replace('jpeg', 'jpg')}", image, mime
