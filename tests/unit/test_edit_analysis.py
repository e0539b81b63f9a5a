"""Image-aware edit analysis (serve_app.writing.analysis): Gemini reads the edit's image and its
instruction together and answers `{edits, preserve, improved_prompt}`; the improved prompt feeds
the Editor, and any failure falls back to the text-only rewrite, saying why.

The analyst talks to the Gemini stub (testbed/stubs/gemini_stub.py, the generateContent wire
format); the flow runs under TestClient over the painting Editor stand-in, as in test_edits.py.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.api.deps import IngressContext
from serve_app.backends import BackendRegistry
from serve_app.backends.config import BackendsConfig
from serve_app.errors import UpstreamError
from serve_app.flows.kit import FlowDeps
from serve_app.ingress import app
from serve_app.products.edits.config import EditsConfig
from serve_app.products.edits.flow import EditFlow
from serve_app.writing.analysis import (
    RESPONSE_SCHEMA,
    EditAnalysisConfig,
    GeminiEditAnalyst,
    build_analyst,
    parse_analysis,
)
from testbed.harness import PaintingStages, WorkerRunner
from testbed.stubs.gemini_stub import KEY, GeminiStub
from tests.support.ingress import ingress_context


def _png(width: int = 96, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(out, format="PNG")
    return out.getvalue()


def _answer(text: str, **candidate: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, **candidate}]}


GOOD = {"edits": ["warmer light"], "preserve": ["face"], "improved_prompt": "  make the lighting   warmer "}


# -- parsing -------------------------------------------------------------------------------------


def test_the_candidates_json_text_is_the_analysis() -> None:
    analysis = parse_analysis(_answer(json.dumps(GOOD)))
    assert analysis.edits == ["warmer light"] and analysis.preserve == ["face"]
    assert analysis.improved_prompt == "make the lighting warmer"


def test_thought_parts_are_not_the_answer() -> None:
    answer = _answer(json.dumps(GOOD))
    answer["candidates"][0]["content"]["parts"].insert(0, {"text": "thinking...", "thought": True})
    assert parse_analysis(answer).improved_prompt == "make the lighting warmer"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (_answer("not json"), "ANALYSIS_INVALID_OUTPUT"),
        (_answer(json.dumps({**GOOD, "improved_prompt": "조명을 따뜻하게"})), "ANALYSIS_INVALID_OUTPUT"),
        (_answer(json.dumps({**GOOD, "improved_prompt": "   "})), "ANALYSIS_INVALID_OUTPUT"),
        (_answer(json.dumps({"edits": [], "preserve": []})), "ANALYSIS_INVALID_OUTPUT"),
        (_answer(json.dumps({**GOOD, "edits": "warmer"})), "ANALYSIS_INVALID_OUTPUT"),
        (_answer("", finishReason="SAFETY"), "UPSTREAM_REJECTED"),
        ({"promptFeedback": {"blockReason": "SAFETY"}}, "UPSTREAM_REJECTED"),
        ({"candidates": "none"}, "UPSTREAM_BAD_RESPONSE"),
        ([], "UPSTREAM_BAD_RESPONSE"),
    ],
)
def test_an_answer_that_is_not_the_schemas_is_an_error(answer: Any, code: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        parse_analysis(answer)
    assert caught.value.error_code == code


# -- the analyst against the stub ------------------------------------------------------------------


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[GeminiStub]:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with GeminiStub() as stub:
        yield stub  # type: ignore[misc]


def _analyst(stub: GeminiStub, **update: Any) -> GeminiEditAnalyst:
    backends = BackendsConfig.model_validate({"gemini": {"base_url": stub.base_url, "max_retries": 0, **update}})
    analyst = build_analyst(EditAnalysisConfig(), backends)
    assert analyst is not None
    return analyst


def test_the_image_and_the_instruction_go_to_gemini_together(gemini: GeminiStub) -> None:
    image = _png(96, 64)
    analysis, call = asyncio.run(_analyst(gemini).analyse(image, "조명을 따뜻하게"))
    assert analysis.improved_prompt.endswith("(96x64 image)")  # the stub saw the image
    assert analysis.edits and analysis.preserve == ["the person's face", "the background"]
    assert call["model"] == "gemini-2.5-flash" and call["attempts"] == 1
    (sent,) = gemini.requests
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent" and sent.headers["x-goog-api-key"] == KEY
    body = sent.json()
    image_part, text_part = body["contents"][0]["parts"]
    assert body["contents"][0]["role"] == "user"
    assert image_part["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(image_part["inlineData"]["data"]) == image
    assert "조명을 따뜻하게" in text_part["text"]
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseSchema"] == RESPONSE_SCHEMA


def test_a_jpeg_goes_as_image_jpeg(gemini: GeminiStub) -> None:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(out, format="JPEG")
    analysis, _ = asyncio.run(_analyst(gemini).analyse(out.getvalue(), "make it blue"))
    assert gemini.requests[0].json()["contents"][0]["parts"][0]["inlineData"]["mimeType"] == "image/jpeg"
    assert "(40x30 image)" in analysis.improved_prompt


def test_the_analyst_is_off_when_configured_off() -> None:
    assert build_analyst(EditAnalysisConfig(provider="off"), BackendsConfig()) is None
    assert EditsConfig().analysis.provider == "gemini"


# -- the edit flow: the analysis feeds the Editor, or the text-only rewrite does -------------------


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[IngressContext]:
    openai = {"max_wait_s": 20, "poll_s": 0.02}
    with ingress_context(tmp_path, {"max_active": 8}, openai=openai, backends={"chains": {"edit": ["local"]}}) as c:
        yield c


@pytest.fixture
def client(ctx: IngressContext, stages: PaintingStages, gemini: GeminiStub) -> Iterator[TestClient]:
    deps = FlowDeps(stages, ctx.images, backends=BackendRegistry(ctx.args.backends, "painter", "tiny-ip2p"))  # type: ignore[arg-type]
    flow = EditFlow(deps, analyst=_analyst(gemini))
    ctx.runner = WorkerRunner(ctx, {"edit": flow})  # type: ignore[assignment]
    with TestClient(app) as running:
        yield running


def _edit(client: TestClient, **fields: Any) -> Any:
    data = {"instruction": "make the desk brighter.", **{k: str(v) for k, v in fields.items()}}
    return client.post("/v1/edits", data=data, files={"image": ("desk.png", _png(), "image/png")})


def test_a_rewrite_asks_gemini_and_its_prompt_feeds_the_editor(
    client: TestClient, stages: PaintingStages, gemini: GeminiStub
) -> None:
    response = _edit(client, rewrite="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        body["edit_prompt"]
        == stages.specs[0].prompt
        == "make the lighting warmer, keep the face unchanged (96x64 image)"
    )
    analysis = body["analysis"]
    assert analysis["edits"] == ["warmer lighting"] and analysis["preserve"] == ["the person's face", "the background"]
    assert analysis["improved_prompt"] == body["edit_prompt"] and analysis["model"] == "gemini-2.5-flash"
    assert "analysis_fallback" not in body and len(gemini.requests) == 1


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda stub, mp: stub.add_rule("server_error", times=None), "UPSTREAM_ERROR"),
        (lambda stub, mp: setattr(stub, "analysis", '{"edits": []}'), "ANALYSIS_INVALID_OUTPUT"),
        (lambda stub, mp: mp.delenv("GEMINI_API_KEY"), "BACKEND_NOT_CONFIGURED"),
    ],
)
def test_when_gemini_fails_the_text_only_rewrite_writes_the_prompt_and_says_why(
    client: TestClient,
    stages: PaintingStages,
    gemini: GeminiStub,
    monkeypatch: pytest.MonkeyPatch,
    setup: Any,
    code: str,
) -> None:
    setup(gemini, monkeypatch)
    response = _edit(client, rewrite="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["edit_prompt"] == stages.specs[0].prompt == "make the desk brighter"  # the template writer's
    assert body["analysis_fallback"].startswith(code) and "analysis" not in body


def test_without_rewrite_gemini_is_not_asked(client: TestClient, stages: PaintingStages, gemini: GeminiStub) -> None:
    body = _edit(client).json()
    assert body["edit_prompt"] == "make the desk brighter." and gemini.requests == []
