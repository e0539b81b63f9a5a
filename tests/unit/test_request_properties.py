"""Property tests (hypothesis) of request parsing and validation: whatever a caller sends, the
answer is a 2xx or a 4xx in the error shape, never a 500; and whatever `resolve` accepts is inside
the preset's limits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.errors import AppError
from serve_app.ingress import app
from serve_app.presets import load_preset
from serve_app.requests import HARD_MAX_SIDE, GenerateRequest
from tests.support.ingress import ingress_context, multipart

PRESET = load_preset("tiny")
FIELDS = [
    "prompt",
    "negative_prompt",
    "num_inference_steps",
    "guidance_scale",
    "height",
    "width",
    "seed",
    "lora",
    "strength",
    "user_id",
    "webhook_url",
    "initial_image_url",
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
field_values = st.one_of(
    json_values,
    st.integers(min_value=-10, max_value=10_000),
    st.sampled_from([0, 1, 7, 8, 64, 512, 513, 8192, 1e-9, 0.5, 1.0, 1.5, -0.0]),
    st.fixed_dictionaries({"name": st.sampled_from(["cozy-wood", "nope", ""])}, optional={"scale": json_scalars}),
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), field_values, max_size=8)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with ingress_context(tmp_path_factory.mktemp("props"), {"max_active": 100_000}):
        yield TestClient(app, raise_server_exceptions=False)


def _check_answer(status: int, body: Any) -> None:
    assert status < 500, body
    if status >= 400:
        assert ("error_code" in body and body["message"]) or body == {"detail": "Prompt must not be empty."}, body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_json_body_is_answered_without_a_500(client: TestClient, body: dict[str, Any]) -> None:
    raw = json.dumps(body, allow_nan=True).encode()  # NaN and Infinity included, as JavaScript sends them
    response = client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
    _check_answer(response.status_code, response.json())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=30) | st.from_regex(r"-?\d{1,6}(\.\d+)?")))
def test_any_multipart_form_is_answered_without_a_500(client: TestClient, fields: dict[str, str]) -> None:
    parts = [(name, None, value.encode("utf-8", "surrogatepass")) for name, value in fields.items()]
    body, headers = multipart(parts)
    response = client.post("/v1/generate", content=body, headers=headers)
    _check_answer(response.status_code, response.json())


@settings(max_examples=400, deadline=None)
@given(body=bodies, has_image=st.booleans())
def test_resolve_accepts_only_what_the_preset_allows(body: dict[str, Any], has_image: bool) -> None:
    try:
        request = GenerateRequest.model_validate(body)
        resolved = request.resolve(PRESET, PRESET.limits, has_image=has_image)
    except AppError as exc:
        assert 400 <= exc.status_code < 500
        return
    except ValueError:  # pydantic's ValidationError: the ingress turns it into a 422
        return
    limits = PRESET.limits
    assert resolved.prompt.strip() and len(resolved.prompt) <= limits.max_prompt_chars
    assert 1 <= resolved.num_inference_steps <= limits.max_steps
    assert 0 <= resolved.guidance_scale <= limits.max_guidance_scale
    for side in (resolved.height, resolved.width):
        assert limits.min_side <= side <= limits.max_side < HARD_MAX_SIDE and side % 8 == 0
    assert 0 < resolved.strength <= 1 and 0 <= resolved.seed < 2**63
    if has_image:
        assert int(resolved.num_inference_steps * resolved.strength) >= 1
    if resolved.lora is not None:
        spec = PRESET.lora(resolved.lora.name)
        assert spec is not None and -4 <= resolved.lora.scale <= 4
        assert resolved.lora.trigger_words == spec.trigger_words
    json.dumps(resolved.model_dump(mode="json"), allow_nan=False)  # storable as strict JSON
