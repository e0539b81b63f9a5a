"""Scene images, article images, textures and instruction edits over HTTP against the real Serve
app, with the real cloud clients talking to their providers' stub servers (KLING for scenes,
Hugging Face for articles on the S3 app, OpenAI's edits API for cloud edits).
"""

from __future__ import annotations

import io

import httpx
from PIL import Image

from tests.integration.conftest import ServeApp, wait_for_task
from tests.support.bodies import scene_body

SCENE = scene_body(501)
FAST = {"num_inference_steps": 2}


def _png(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.content))


def test_external_scene_is_made_by_kling_and_answers_the_source_specs_shape(serve_app: ServeApp) -> None:
    kling = serve_app.providers["kling"]
    before = len(kling.requests)
    with serve_app.client(timeout=90) as client:
        response = client.post("/api/v1/images/generations/external", json={**SCENE, **FAST})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= {"scene_id", "image_prompt", "image_s3url", "task_id", "backend", "cost_usd"}
        assert body["scene_id"] == 1 and body["backend"] == "kling" and body["cost_usd"] == 0.0035
        assert "a woman (long hair woman student)" in body["image_prompt"]
        assert _png(client, body["image_s3url"]).format == "PNG"
    created = [r for r in kling.requests[before:] if r.method == "POST"]
    assert created and created[0].json()["prompt"] == body["image_prompt"]
    assert created[0].headers["authorization"].startswith("Bearer ey")  # a JWT signed with the secret key


def test_external_scene_falls_back_to_the_generator_when_kling_fails(serve_app: ServeApp) -> None:
    kling = serve_app.providers["kling"]
    kling.add_rule("server_error", times=None)
    try:
        with serve_app.client(timeout=90) as client:
            response = client.post("/api/v1/images/generations/external", json={**SCENE, "scene_id": 2, **FAST})
    finally:
        kling.reset()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "local"
    assert body["backends_failed"][0]["backend"] == "kling"
    assert body["backends_failed"][0]["error_code"] == "UPSTREAM_ERROR"


def test_internal_scenes_of_one_script_share_their_seed(serve_app: ServeApp) -> None:
    seeds = []
    with serve_app.client(timeout=90) as client:
        for scene_id in (3, 4):
            response = client.post("/api/v1/images/generations/internal", json={**SCENE, "scene_id": scene_id, **FAST})
            assert response.status_code == 200, response.text
            assert response.json()["backend"] == "local"
            result = client.get(f"/v1/result/{response.json()['task_id']}").json()
            seeds.append(result["images"][0]["seed"])
    assert seeds[0] == seeds[1]


def test_article_images_come_from_hugging_face_onto_s3_in_order(serve_app: ServeApp) -> None:
    body = {
        "placeholders": [
            {"index": 2, "alt": "[이미지 설명: 미래적인 AI 로봇]"},
            {"index": 0, "alt": "쿼카"},
            {"index": 1, "alt": "a cozy cafe in the morning sun"},
        ],
        **FAST,
    }
    with httpx.Client(base_url=serve_app.s3_url, timeout=90) as client:
        response = client.post("/v1/articles/images", json=body)
        assert response.status_code == 202, response.text
        result = wait_for_task(client, response.json()["task_id"])
        assert result["status"] == "done", result
        entries = result["placeholders"]
        assert [entry["index"] for entry in entries] == [2, 0, 1]
        # 쿼카 is not in the glossary: the Translator deployment (tiny random-weight Marian) writes
        # its English, so it gets an image too, marked and timed as machine-translated.
        assert "error_code" not in entries[1], entries[1]
        assert entries[1]["machine_translated"] is True and entries[1]["writer"] == "translator:tiny"
        assert entries[1]["timings"]["translate"] > 0 and result["timings"]["translate"] > 0
        assert "untranslated" not in entries[1]
        for entry in entries:
            assert entry["backend"] == "huggingface" and entry["url"].startswith(serve_app.seaweed.endpoint_url)
            assert _png(client, entry["url"]).format == "PNG"
        assert "futuristic AI robot" in entries[0]["prompt"]
        assert "machine_translated" not in entries[0]  # the glossary knew every word
    hf = serve_app.providers["huggingface"]
    assert any("futuristic AI robot" in r.body.decode(errors="replace") for r in hf.requests)


def test_info_and_openapi_describe_the_products_and_backends(serve_app: ServeApp) -> None:
    with serve_app.client() as client:
        info = client.get("/info").json()
        backends = {b["name"]: b for b in info["backends"]["image"]}
        assert backends["kling"]["configured"] is True and backends["local"]["configured"] is True
        assert backends["openai"]["configured"] is True  # its stub's key: cloud edits
        assert backends["stability"]["configured"] is False and "STABILITY_API_KEY" in backends["stability"]["reason"]
        assert info["backends"]["chains"]["scene_external"] == ["kling", "local"]
        paths = client.get("/openapi.json").json()["paths"]
    products = ("/api/v1/images/generations/external", "/api/v1/images/generations/internal", "/v1/articles/images")
    for path in (*products, "/v1/textures", "/v1/edits"):
        assert "post" in paths[path]


def test_textures_are_generated_tileable_then_answered_from_the_cache(serve_app: ServeApp) -> None:
    body = {
        "textures": [{"product_type": "down jacket", "material": "nylon", "colour": "navy blue", "pattern": "quilted"}],
        "tileable": True,
        **FAST,
    }
    with serve_app.client(timeout=90) as client:
        first = client.post("/v1/textures", json=body)
        assert first.status_code == 200, first.text
        made = first.json()["textures"][0]
        assert made["cache_hit"] is False and made["backend"] == "local"
        assert "seamless tileable texture" in made["prompt"]
        assert _png(client, made["url"]).format == "PNG"
        hit = client.post("/v1/textures", json=body)
        assert hit.status_code == 200 and hit.headers.get("x-cache") == "hit"
        assert hit.json()["textures"][0]["cache_hit"] is True and hit.json()["textures"][0]["url"] == made["url"]
        assert "task_id" not in hit.json()


def _photo(width: int = 96, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (180, 120, 60)).save(out, format="PNG")
    return out.getvalue()


def test_an_instruction_edit_runs_on_the_editor_deployment(serve_app: ServeApp) -> None:
    """The real Editor replica (tiny InstructPix2Pix) edits the upload; the Korean instruction
    reaches it in English; the answer's image has the size it says (the photo's 3:2 kept)."""
    with serve_app.client(timeout=120) as client:
        response = client.post(
            "/v1/edits",
            data={"instruction": "조명을 따뜻하게", "num_inference_steps": "2", "seed": "11"},
            files={"image": ("desk.png", _photo(), "image/png")},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["backend"] == "local" and body["backend_model"] == "tiny" and body["seed"] == 11
        assert "warm" in body["edit_prompt"] and body["instruction"] == "조명을 따뜻하게"
        image = _png(client, body["url"])
        assert image.size == (body["width"], body["height"]) and body["width"] > body["height"]
        result = client.get(f"/v1/result/{body['task_id']}").json()
        assert result["status"] == "done" and result["image_guidance_scale"] == 1.5
        info = client.get("/info").json()
        assert "POST /v1/edits" in " ".join(info["endpoints"])


def test_a_cloud_edit_sends_the_image_to_openais_edits_api(serve_app: ServeApp) -> None:
    openai = serve_app.providers["openai"]
    before = len(openai.requests)
    source = _photo(64, 64)
    with serve_app.client(timeout=120) as client:
        response = client.post(
            "/v1/edits",
            data={"instruction": "make the desk white", "backend": "cloud", "num_inference_steps": "2"},
            files={"image": ("desk.png", source, "image/png")},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["backend"] == "openai" and body["backend_model"] == "gpt-image-1" and body["cost_usd"] == 0.04
        assert _png(client, body["url"]).format == "PNG"
    sent = [r for r in openai.requests[before:] if r.path == "/v1/images/edits"]
    assert len(sent) == 1
    from testbed.stubs.provider_base import multipart

    fields, files = multipart(sent[0])
    assert fields["prompt"] == "make the desk white" and fields["model"] == "gpt-image-1"
    assert files["image"] == source  # the upload as the caller sent it
