"""Hugging Face beyond the contract: the `estimated_time` of a loading model, a server that is not
there, each selectable Inference Provider on its real route (against the stub router and Hub), and
the seeds' names for the token."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.backends.base import BackendAuthFailed, BackendNotConfigured
from serve_app.backends.config import BackendsConfig
from serve_app.backends.providers.huggingface import HuggingFaceBackend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.huggingface_stub import CASE, FLUX, MAPPING, SDXL, TOKEN, HuggingFaceStub
from testbed.stubs.provider_base import StubRequest

SPEC = GenerationSpec(prompt="navy nylon", num_inference_steps=4, guidance_scale=7.0, height=64, width=64, seed=1)


async def test_a_loading_model_is_waited_for_as_long_as_it_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    clock = FakeClock()
    with HuggingFaceStub() as stub:
        stub.add_rule("loading", times=1)  # no Retry-After: only the body's estimated_time (20 s)
        backend = HuggingFaceBackend(CASE.config(stub.base_url), clock=clock, sleep=clock.sleep)
        image = await backend.generate(SPEC)
    assert image.attempts == 2 and any(seconds >= 20 for seconds in clock.sleeps)


async def test_a_server_that_is_not_there_is_retried_then_an_upstream_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HuggingFaceStub() as stub:
        url = stub.base_url
    clock = FakeClock()
    cfg = CASE.config(url).model_copy(update={"max_retries": 2})
    backend = HuggingFaceBackend(cfg, clock=clock, sleep=clock.sleep)
    with pytest.raises(UpstreamError) as caught:
        await backend.generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_ERROR" and backend.http.attempts == 3


# -- Inference Providers: each selectable provider on its real route, through the router ----------------

PROVIDER_CASES = [
    ("hf-inference", FLUX, f"/hf-inference/models/{FLUX}"),
    ("fal-ai", FLUX, "/fal-ai/fal-ai/flux/dev"),
    ("together", FLUX, "/together/v1/images/generations"),
    ("nscale", SDXL, "/nscale/v1/images/generations"),
    ("replicate", FLUX, "/replicate/v1/models/black-forest-labs/flux-dev/predictions"),
    ("replicate", SDXL, "/replicate/v1/predictions"),  # an owner/name:version id
]


def provider_backend(stub: HuggingFaceStub, provider: str, model: str = FLUX) -> HuggingFaceBackend:
    """The backend routed through `provider`, its client-side rate limit out of the way (the Hub
    lookup and the download take a token each too)."""
    update = {"provider": provider, "model": model, "hub_url": stub.base_url, "rate_limit_per_minute": 6000}
    return CASE.backend(CASE.config(stub.base_url).model_copy(update=update))  # type: ignore[no-any-return]


def _payload_as_huggingface_hub_sends_it(provider: str, model: str, sent: StubRequest) -> None:
    body = sent.json()
    if provider == "hf-inference":
        assert body["inputs"] == SPEC.prompt and body["parameters"]["num_inference_steps"] == 4
    elif provider == "fal-ai":
        assert body["prompt"] == SPEC.prompt and body["image_size"] == {"width": 64, "height": 64}
        assert body["num_inference_steps"] == 4 and body["seed"] == 1 and "width" not in body
    elif provider == "together":
        assert body["model"] == MAPPING[model]["together"] and body["response_format"] == "base64"
        assert body["steps"] == 4 and "num_inference_steps" not in body and body["width"] == 64
    elif provider == "nscale":
        assert body["model"] == MAPPING[model]["nscale"] and body["response_format"] == "b64_json"
        assert body["size"] == "64x64" and "num_inference_steps" not in body and body["guidance_scale"] == 7.0
    else:
        assert sent.headers["prefer"] == "wait" and body["input"]["prompt"] == SPEC.prompt
        assert body["input"]["num_inference_steps"] == 4 and body["input"]["seed"] == 1
        assert ("version" in body) == (":" in MAPPING[model]["replicate"])


@pytest.mark.parametrize(("provider", "model", "route"), PROVIDER_CASES)
async def test_each_provider_is_called_on_its_route_with_its_payload(
    monkeypatch: pytest.MonkeyPatch, provider: str, model: str, route: str
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HuggingFaceStub() as stub:
        backend = provider_backend(stub, provider, model)
        first = await backend.generate(SPEC)
        second = await backend.generate(SPEC)
        await backend.aclose()
    posts = [r for r in stub.requests if r.method == "POST"]
    assert [r.path for r in posts] == [route, route]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in posts)
    _payload_as_huggingface_hub_sends_it(provider, model, posts[0])
    lookups = [r for r in stub.requests if r.path.startswith("/api/models/")]
    if provider == "hf-inference":
        assert lookups == [], "hf-inference knows the model by its Hub id"
    else:
        assert [r.path for r in lookups] == [f"/api/models/{model}"], "the Hub is asked once per model"
        assert lookups[0].query["expand"] == ["inferenceProviderMapping"]
    downloads = [r for r in stub.requests if r.path.startswith(("/fal-files/", "/replicate-files/"))]
    assert len(downloads) == (2 if provider in ("fal-ai", "replicate") else 0)
    for image in (first, second):
        assert image.backend == "huggingface" and image.image_png.startswith(b"\x89PNG") and image.model == model
    assert ("num_inference_steps" in first.ignored) == (provider == "nscale")
    assert backend.status().provider == provider


async def test_a_model_the_provider_does_not_serve_is_not_configured_and_nothing_is_generated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HuggingFaceStub() as stub:
        backend = provider_backend(stub, "nscale", FLUX)  # the stub's nscale serves SDXL only
        with pytest.raises(BackendNotConfigured, match="nscale does not serve black-forest-labs/FLUX.1-dev"):
            await backend.generate(SPEC)
    assert [r.method for r in stub.requests] == ["GET"]


async def test_a_providers_errors_are_classified_and_retried_like_every_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    clock = FakeClock()
    with HuggingFaceStub() as stub:
        cfg = CASE.config(stub.base_url).model_copy(
            update={"provider": "together", "model": FLUX, "hub_url": stub.base_url}
        )
        backend = CASE.backend(cfg, clock=clock, sleep=clock.sleep)
        await backend.generate(SPEC)  # the Hub's mapping, before any rule applies
        stub.add_rule("rate_limit", times=1)
        image = await backend.generate(SPEC)
        assert image.attempts == 2
        stub.add_rule("unauthorized", times=1)
        with pytest.raises(BackendAuthFailed, match=r"\$HF_TOKEN \(or \$HUGGING_FACE_API_TOKEN"):
            await backend.generate(SPEC)
        stub.add_rule("malformed", times=1)
        with pytest.raises(UpstreamError) as caught:
            await backend.generate(SPEC)
    assert caught.value.error_code == "UPSTREAM_BAD_RESPONSE"


def test_an_unknown_provider_is_refused_when_the_config_is_read() -> None:
    with pytest.raises(ValidationError, match="provider"):
        BackendsConfig.model_validate({"huggingface": {"provider": "my-gpu-cloud"}})
    assert (
        BackendsConfig.model_validate({"huggingface": {"provider": "fal-ai"}}).cloud("huggingface").provider == "fal-ai"
    )


def test_the_old_hf_inference_base_url_still_reaches_the_router() -> None:
    cfg = CASE.config("https://router.huggingface.co").model_copy(
        update={"base_url": "https://router.huggingface.co/hf-inference"}
    )
    assert HuggingFaceBackend(cfg).endpoint == f"https://router.huggingface.co/hf-inference/models/{SDXL}"


@pytest.mark.parametrize("name", ["HUGGING_FACE_API_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_KEY"])
async def test_the_seeds_token_names_are_read(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv(name, TOKEN)
    with HuggingFaceStub() as stub:
        backend = provider_backend(stub, "fal-ai")
        assert backend.status().configured
        await backend.generate(SPEC)
    assert stub.requests[-2].headers["authorization"] == f"Bearer {TOKEN}"
