"""The OpenAI-compatible images API on the real Serve app, driven by the official `openai` package
exactly as a user's code would drive OpenAI: only the base URL changes."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.integration.conftest import ServeApp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> openai.OpenAI:
    # Auth is off on the test app; the package insists on a key, which is then ignored.
    return openai.OpenAI(base_url=f"{serve_app.base_url}/v1", api_key="sk-unused", max_retries=0, timeout=60)


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_generate_n_images_as_b64_json_in_the_asked_format(client: openai.OpenAI) -> None:
    response = client.images.generate(
        prompt="a minimal oak desk with a lamp",
        n=2,
        size="64x48",
        response_format="b64_json",
        output_format="webp",
        extra_body={"seed": 1234, "num_inference_steps": 4},
    )
    assert response.output_format == "webp" and response.size == "64x48"
    assert response.data is not None and len(response.data) == 2
    decoded = [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))) for item in response.data]
    assert all(image.format == "WEBP" and image.size == (64, 48) for image in decoded)
    assert decoded[0].tobytes() != decoded[1].tobytes(), "image i uses seed + i"
    assert all(item.revised_prompt and "oak desk" in item.revised_prompt for item in response.data)


def test_generate_with_urls_and_a_lora_as_the_model(client: openai.OpenAI, serve_app: ServeApp) -> None:
    info = httpx.get(f"{serve_app.base_url}/info", timeout=10).json()
    lora = info["loras"][0]["name"]
    raw = client.images.with_raw_response.generate(
        prompt="a cozy desk", model=lora, size="64x64", extra_body={"num_inference_steps": 4}
    )
    response = raw.parse()
    assert response.data is not None and len(response.data) == 1 and response.data[0].url
    fetched = httpx.get(response.data[0].url, timeout=10)
    assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).format == "PNG"
    task = httpx.get(f"{serve_app.base_url}/v1/result/{raw.headers['x-task-id']}", timeout=10).json()
    assert task["status"] == "done" and task["lora"]["name"] == lora
    assert task["images"][0]["url"] == response.data[0].url


def test_edit_an_uploaded_image(client: openai.OpenAI) -> None:
    response = client.images.edit(
        image=("desk.png", _png(96, 64), "image/png"),
        prompt="make the lighting warmer",
        response_format="b64_json",
        output_format="jpeg",
        extra_body={"num_inference_steps": 4, "strength": 0.5},
    )
    assert response.data is not None and len(response.data) == 1
    image = Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json or "")))
    assert image.format == "JPEG" and response.size == f"{image.width}x{image.height}"
    assert abs(image.width / image.height - 1.5) < 0.2, "an edit keeps the image's aspect ratio"


def test_errors_raise_the_packages_own_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.images.generate(prompt="a desk", size="1000x1000")
    assert bad_size.value.code == "INVALID_INPUT" and "1000" not in (bad_size.value.param or "")
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.images.generate(prompt="a desk", model="stable-diffusion-9")
    assert bad_model.value.code == "MODEL_NOT_FOUND" and bad_model.value.param == "model"
    with pytest.raises(openai.BadRequestError) as masked:
        client.images.edit(image=("a.png", _png(32, 32), "image/png"), mask=("m.png", _png(32, 32)), prompt="x")
    assert masked.value.param == "mask"
