"""Scene images and article images over HTTP against the real Serve app, with the real cloud clients
talking to their providers' stub servers (KLING for scenes, Hugging Face for articles on the S3 app).
"""

from __future__ import annotations

import io
from typing import Any

import httpx
from PIL import Image

from tests.integration.conftest import ServeApp, wait_for_task

SCENE: dict[str, Any] = {
    "script_metadata": {
        "title": "비 오는 날의 카페",
        "script_id": 501,
        "characters": [
            {"name": "민지", "gender": 1, "description": "긴 머리의 여자 학생"},
            {"name": "준호", "gender": 0, "description": "안경을 쓴 남자"},
        ],
    },
    "scene_id": 1,
    "audios": [
        {"type": "narration", "text": "비 오는 저녁, 따뜻한 카페 창가"},
        {"type": "dialogue", "character": "민지", "text": "오랜만이야!", "emotion": "기쁨"},
    ],
}
FAST = {"num_inference_steps": 2}


def _png(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.content))


def test_external_scene_is_made_by_kling_and_answers_the_seeds_shape(serve_app: ServeApp) -> None:
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
        assert entries[1]["error_code"] == "PROMPT_UNTRANSLATABLE"
        for entry in (entries[0], entries[2]):
            assert entry["backend"] == "huggingface" and entry["url"].startswith(serve_app.seaweed.endpoint_url)
            assert _png(client, entry["url"]).format == "PNG"
        assert "futuristic AI robot" in entries[0]["prompt"]
    hf = serve_app.providers["huggingface"]
    assert any("futuristic AI robot" in r.body.decode(errors="replace") for r in hf.requests)


def test_info_and_openapi_describe_the_products_and_backends(serve_app: ServeApp) -> None:
    with serve_app.client() as client:
        info = client.get("/info").json()
        backends = {b["name"]: b for b in info["backends"]["image"]}
        assert backends["kling"]["configured"] is True and backends["local"]["configured"] is True
        assert backends["openai"]["configured"] is False and "OPENAI_API_KEY" in backends["openai"]["reason"]
        assert info["backends"]["chains"]["scene_external"] == ["kling", "local"]
        paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/images/generations/external", "/api/v1/images/generations/internal", "/v1/articles/images"):
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
