"""CORS for browser clients: off by default, on for the configured origins only, on error answers too.

The ingress's real FastAPI app under TestClient, with a real context (tests/unit/test_api.py's
`make_context`), so the middleware reads its settings the way a replica does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serve_app.api.config import CorsConfig
from serve_app.api.deps import IngressContext, set_context
from serve_app.ingress import app
from tests.support.ingress import ingress_context, make_context

APP_ORIGIN = "https://app.example.com"
TASKS = {"max_active": 1, "retry_after_s": 7}


def preflight(client: TestClient, origin: str, method: str = "POST", headers: str = "") -> dict[str, str]:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    response = client.options("/v1/generate", headers=request_headers)
    return {"status": str(response.status_code), **{k.lower(): v for k, v in response.headers.items()}}


@pytest.fixture
def cors_on(tmp_path: Path) -> Iterator[IngressContext]:
    with ingress_context(tmp_path, TASKS, cors={"allow_origins": [APP_ORIGIN]}) as context:
        yield context


@pytest.fixture
def cors_off(tmp_path: Path) -> Iterator[IngressContext]:
    with ingress_context(tmp_path, TASKS) as context:
        yield context


def test_cors_is_off_by_default(cors_off: IngressContext) -> None:
    client = TestClient(app)
    answer = preflight(client, APP_ORIGIN)
    assert answer["status"] == "405" and "access-control-allow-origin" not in answer
    response = client.get("/info", headers={"Origin": APP_ORIGIN})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    assert response.json()["cors"]["enabled"] is False and response.json()["cors"]["allow_origins"] == []


def test_a_preflight_from_an_allowed_origin_gets_the_cors_headers(cors_on: IngressContext) -> None:
    answer = preflight(TestClient(app), APP_ORIGIN, headers="authorization, idempotency-key, content-type")
    assert answer["status"] == "200"
    assert answer["access-control-allow-origin"] == APP_ORIGIN
    assert {"GET", "POST", "DELETE"} <= set(answer["access-control-allow-methods"].split(", "))
    allowed = {h.lower() for h in answer["access-control-allow-headers"].split(", ")}
    assert {"authorization", "x-api-key", "idempotency-key", "last-event-id", "content-type"} <= allowed
    assert answer["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in answer, "keys are headers, never cookies"


def test_answers_to_an_allowed_origin_expose_location_and_retry_after(cors_on: IngressContext) -> None:
    client = TestClient(app)
    accepted = client.post("/v1/generate", json={"prompt": "a desk"}, headers={"Origin": APP_ORIGIN})
    assert accepted.status_code == 202 and accepted.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = {h.strip().lower() for h in accepted.headers["access-control-expose-headers"].split(",")}
    assert {"location", "retry-after"} <= exposed
    shed = client.post("/v1/generate", json={"prompt": "a desk"}, headers={"Origin": APP_ORIGIN})
    assert shed.status_code == 503 and shed.headers["retry-after"] == "7"
    assert shed.headers["access-control-allow-origin"] == APP_ORIGIN, "a browser must be able to read the 503"


def test_another_origin_gets_no_cors_headers(cors_on: IngressContext) -> None:
    client = TestClient(app)
    answer = preflight(client, "https://evil.example.com")
    assert answer["status"] == "400" and "access-control-allow-origin" not in answer
    response = client.get("/info", headers={"Origin": "https://evil.example.com"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight(client, APP_ORIGIN + ":8443")  # another port, another origin


def test_with_api_keys_a_preflight_needs_no_key_and_a_401_is_readable(tmp_path: Path) -> None:
    with ingress_context(tmp_path, TASKS, cors={"allow_origins": [APP_ORIGIN]}, auth={"enabled": True}):
        client = TestClient(app)
        assert preflight(client, APP_ORIGIN, headers="authorization")["status"] == "200"
        refused = client.post("/v1/generate", json={"prompt": "a desk"}, headers={"Origin": APP_ORIGIN})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == APP_ORIGIN


def test_the_middleware_follows_the_current_context(tmp_path: Path) -> None:
    """One app, one middleware, successive contexts (replicas, tests): each one's settings apply."""
    client = TestClient(app)
    try:
        make_context(tmp_path / "a", TASKS, cors={"allow_origins": [APP_ORIGIN]})
        assert preflight(client, APP_ORIGIN)["access-control-allow-origin"] == APP_ORIGIN
        make_context(tmp_path / "b", TASKS, cors={"allow_origins": ["http://localhost:5173"]})
        assert "access-control-allow-origin" not in preflight(client, APP_ORIGIN)
        assert preflight(client, "http://localhost:5173")["access-control-allow-origin"] == "http://localhost:5173"
        make_context(tmp_path / "c", TASKS)
        assert "access-control-allow-origin" not in preflight(client, "http://localhost:5173")
    finally:
        set_context(None)  # type: ignore[arg-type]


def test_any_origin_and_the_info_page(tmp_path: Path) -> None:
    with ingress_context(tmp_path, TASKS, cors={"allow_origins": ["*"], "allow_methods": ["get", "post"]}):
        client = TestClient(app)
        assert preflight(client, "https://anywhere.example")["access-control-allow-origin"] == "*"
        cors = client.get("/info").json()["cors"]
        assert cors["enabled"] is True and cors["allow_origins"] == ["*"] and cors["allow_methods"] == ["GET", "POST"]
        assert cors["expose_headers"] == ["Location", "Retry-After"]


@pytest.mark.parametrize(
    "origins",
    [
        ["https://app.example.com/"],  # a trailing slash never matches what a browser sends
        ["https://app.example.com/path"],
        ["https://App.Example.com"],
        ["https://app.example.com:443"],
        ["app.example.com"],
        ["ftp://app.example.com"],
        ["*", APP_ORIGIN],
    ],
)
def test_origins_a_browser_never_sends_are_refused(origins: list[str]) -> None:
    with pytest.raises(ValidationError, match="cors.allow_origins"):
        CorsConfig(allow_origins=origins)


def test_real_origins_validate() -> None:
    config = CorsConfig(allow_origins=[APP_ORIGIN, "http://localhost:5173", "http://127.0.0.1:8080"])
    assert config.enabled and not CorsConfig().enabled
