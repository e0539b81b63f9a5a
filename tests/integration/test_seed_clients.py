"""A Spring/Jackson client of the scene and article seeds, against the running app: its bodies (every
unset field as null, fields of its own at every level) are taken as the seed's, an article
placeholder's `tag` comes back, v1 stays strict, and /info and /openapi.json say so."""

from __future__ import annotations

import httpx

from tests.integration.conftest import ServeApp, wait_for_task
from tests.support.bodies import jackson_article, jackson_scene

FAST = {"num_inference_steps": 2}


def test_a_jackson_scene_is_made_on_both_seed_paths(serve_app: ServeApp) -> None:
    with serve_app.client(timeout=90) as client:
        for path, backend in (("internal", "local"), ("external", "kling")):
            body = {**jackson_scene(601), **FAST, "scene_id": 11}
            response = client.post(f"/api/v1/images/generations/{path}", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["scene_id"] == 11 and answer["backend"] == backend
            assert "a woman (long hair woman student)" in answer["image_prompt"]
            assert client.get(answer["image_s3url"]).status_code == 200
        missing = client.post("/api/v1/images/generations/internal", json={**jackson_scene(601), "scene_id": None})
        assert missing.status_code == 422 and "scene_id" in missing.json()["message"], "null is left out: required"


def test_a_jackson_article_keeps_its_tags_through_hugging_face(serve_app: ServeApp) -> None:
    with httpx.Client(base_url=serve_app.s3_url, timeout=90) as client:
        response = client.post("/v1/articles/images", json={**jackson_article(), **FAST})
        assert response.status_code == 202, response.text
        result = wait_for_task(client, response.json()["task_id"])
    assert result["status"] == "done", result
    entries = result["placeholders"]
    assert [(entry["index"], entry.get("tag")) for entry in entries] == [(0, "hero"), (1, None)]
    assert all(entry["backend"] == "huggingface" and entry["url"] for entry in entries)
    assert "position" not in entries[0]


def test_v1_stays_strict_and_the_documents_say_which_routes_are_lenient(serve_app: ServeApp) -> None:
    with serve_app.client() as client:
        strict = client.post(
            "/v1/textures",
            json={"textures": [{"product_type": "sofa", "material": "velvet", "colour": "beige"}], "extra": 1},
        )
        assert strict.status_code == 422 and "extra" in strict.json()["message"]
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        for lenient in ("SceneRequest", "Character", "Audio", "ArticleImagesRequest", "Placeholder"):
            assert schemas[lenient]["additionalProperties"] is True, lenient
            assert schemas[lenient]["description"].startswith("Read leniently"), lenient
        assert schemas["TexturesRequest"]["additionalProperties"] is False
        environment = client.get("/info").json()["environment"]
    assert environment["hf_token"]["variable"] == "HF_TOKEN" and "HUGGINGFACE_TOKEN" in environment["hf_token"]["names"]
    assert set(environment) == {"hf_token", "s3_bucket", "s3_region", "cloudinary_cloud_name"}
