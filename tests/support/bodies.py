"""Request bodies the tests send, built from the examples the app's routes publish (so a test's body
stays what the OpenAPI page shows)."""

from __future__ import annotations

import copy
from typing import Any

from serve_app.products.scenes.route import EXAMPLE as SCENE_EXAMPLE


def scene_body(script_id: int, **fields: Any) -> dict[str, Any]:
    """The scene route's example (two characters, a narration and a line of 민지's) as script
    `script_id`, with `fields` over it; a deep copy, so a test may change its lists."""
    body = copy.deepcopy(SCENE_EXAMPLE)
    body["script_metadata"]["script_id"] = script_id
    return body | fields


def jackson_scene(script_id: int) -> dict[str, Any]:
    """`scene_body(script_id)` as a Spring/Jackson client sends it: every optional field present as
    null (Jackson writes a DTO's unset fields), and fields of the client's own at every level."""
    body = scene_body(script_id)
    meta = body["script_metadata"]
    meta.update(genre=None, createdAt="2026-12-06T10:00:00")
    for position, character in enumerate(meta["characters"]):
        character.update(id=position + 11, profileImageUrl=None)
    meta["characters"][1]["description"] = None
    for audio in body["audios"]:
        audio.setdefault("character", None)
        audio.setdefault("emotion", None)
        audio.update(audioUrl=None, durationSeconds=2.5)
    return body | {
        "user_id": None,
        "webhook_url": None,
        "num_inference_steps": None,
        "height": None,
        "width": None,
        "requestedAt": "2026-12-06T10:00:01",
    }


def jackson_article() -> dict[str, Any]:
    """The storage guide's placeholders (`{index, alt, tag}`) as a Spring/Jackson client sends them:
    nulls for what it has no value of, and fields of its own."""
    return {
        "placeholders": [
            {"index": 0, "alt": "[이미지 설명: 미래적인 AI 로봇]", "tag": "hero", "position": "top"},
            {"index": 1, "alt": "햇살이 드는 아늑한 카페", "tag": None, "position": None},
        ],
        "style": None,
        "lora": None,
        "seed": 5,
        "num_inference_steps": None,
        "height": None,
        "width": None,
        "user_id": None,
        "webhook_url": None,
        "articleId": 42,
    }
