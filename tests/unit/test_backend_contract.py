"""One contract for every cloud image backend, each run against its provider's local stub server.

Each provider module in testbed/stubs/ exposes `CASE = BackendCase(...)`: its stub, its backend
class and the environment its key lives in. What must hold for all of them: a PNG with who made
it, how long and what it cost; a missing key is BACKEND_NOT_CONFIGURED before any request; a
rejected key is BACKEND_AUTH_FAILED and not retried; 429 and 503 are retried with backoff that
honours Retry-After, a bounded number of times; a refusal is UPSTREAM_REJECTED with the
provider's own words; a body that is not the API's is UPSTREAM_BAD_RESPONSE. A backend
registered as an editor (`edits=True`, the edit chain) sends the image it edits and answers the
edited one; any other refuses an edit with EDIT_NOT_SUPPORTED before any request. Likewise a
composer (`composes=True`, the compose chain) sends every image, and any other refuses with
COMPOSE_NOT_SUPPORTED before any request. Sleeps and the
rate limiter run on a fake clock, so nothing here waits.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from serve_app.backends.base import (
    BackendAuthFailed,
    BackendImage,
    BackendNotConfigured,
    ComposeNotSupported,
    EditNotSupported,
)
from serve_app.backends.cloud import CloudBackend
from serve_app.backends.config import BackendsConfig  # noqa: F401 - imports (registers) every backend
from serve_app.backends.registry import REGISTERED
from serve_app.errors import AppError, UpstreamError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.provider_base import BackendCase, backend_case, make_png


def test_every_registered_backend_has_a_stub_that_speaks_its_wire_format() -> None:
    assert len(REGISTERED) >= 6
    for name in REGISTERED:
        assert backend_case(name).name == name


@pytest.fixture(params=sorted(REGISTERED))
def case(request: pytest.FixtureRequest) -> BackendCase:
    return backend_case(request.param)


@pytest.fixture
def stub(case: BackendCase) -> Iterator:
    with case.stub() as running:
        yield running


def _backend(case: BackendCase, stub, clock: FakeClock, **overrides) -> CloudBackend:
    return case.client(stub, clock, **{"max_retries": 3, **overrides})


def _spec(**kw) -> GenerationSpec:
    base = {"prompt": "a cozy wooden desk, morning light", "negative_prompt": "blurry, text"}
    base |= {"num_inference_steps": 20, "guidance_scale": 7.0}
    return GenerationSpec(**{**base, "height": 512, "width": 512, "seed": 7, **kw})


async def _raised(backend: CloudBackend, error: type[AppError], error_code: str) -> AppError:
    """What generating with `backend` raised, checked to be an `error` with `error_code`."""
    with pytest.raises(error) as caught:
        await backend.generate(_spec())
    assert caught.value.error_code == error_code
    return caught.value


@pytest.fixture
def keyed(case: BackendCase, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)


async def test_makes_a_png_and_says_who_made_it_and_what_it_cost(case, stub, clock, keyed) -> None:
    backend = _backend(case, stub, clock)
    image = await backend.generate(_spec())
    await backend.aclose()
    with Image.open(io.BytesIO(image.image_png)) as decoded:
        assert decoded.format == "PNG" and decoded.width > 0
    assert image.backend == case.name and image.model == backend.cfg.model
    assert image.cost_usd == pytest.approx(backend.cfg.price_usd_per_image)
    assert image.seconds >= 0 and image.attempts >= 1
    assert stub.requests, "the stub saw no request"
    case.check_request(stub, _spec())


async def test_missing_key_is_a_configuration_error_before_any_request(case, stub, clock, monkeypatch) -> None:
    for name in case.env:
        monkeypatch.delenv(name, raising=False)
    backend = _backend(case, stub, clock)
    status = backend.status()
    assert not status.configured and case.key_var in (status.reason or "")
    assert case.key_var in (await _raised(backend, BackendNotConfigured, "BACKEND_NOT_CONFIGURED")).message
    assert stub.requests == []


async def test_status_is_configured_with_the_key(case, stub, clock, keyed) -> None:
    status = _backend(case, stub, clock).status()
    assert status.configured and status.reason is None and status.kind == "cloud"


@pytest.mark.parametrize("mode", ["unauthorized", "forbidden"])
async def test_rejected_key_is_not_retried(case, stub, clock, keyed, mode: str) -> None:
    stub.add_rule(mode, times=None)
    error = await _raised(_backend(case, stub, clock), BackendAuthFailed, "BACKEND_AUTH_FAILED")
    assert case.key_var in error.message
    assert len(stub.requests) == 1


@pytest.mark.parametrize("mode", ["rate_limit", "loading"])
async def test_429_and_503_are_retried_honouring_retry_after(case, stub, clock, keyed, mode: str) -> None:
    stub.add_rule(mode, times=2, retry_after="7")
    backend = _backend(case, stub, clock)
    image = await backend.generate(_spec())
    assert image.attempts >= 3
    waits = [s for s in clock.sleeps if s >= 7]
    assert len(waits) >= 2, clock.sleeps  # both retries waited at least what Retry-After asked


async def test_retries_are_bounded(case, stub, clock, keyed) -> None:
    stub.add_rule("rate_limit", times=None, retry_after="1")
    await _raised(_backend(case, stub, clock, max_retries=2), UpstreamError, "RATE_LIMITED")
    assert len(stub.requests) == 3  # the try and two retries


async def test_a_refusal_carries_the_providers_words_and_is_not_retried(case, stub, clock, keyed) -> None:
    stub.add_rule("bad_request", times=None)
    error = await _raised(_backend(case, stub, clock), UpstreamError, "UPSTREAM_REJECTED")
    assert case.refusal_words in error.message
    assert len(stub.requests) == 1


async def test_a_server_error_is_an_upstream_error(case, stub, clock, keyed) -> None:
    stub.add_rule("server_error", times=None)
    await _raised(_backend(case, stub, clock), UpstreamError, "UPSTREAM_ERROR")


async def test_a_body_that_is_not_the_apis_is_a_bad_response(case, stub, clock, keyed) -> None:
    stub.add_rule("malformed", times=None)
    await _raised(_backend(case, stub, clock), UpstreamError, "UPSTREAM_BAD_RESPONSE")


async def test_the_rate_limiter_spaces_calls(case, stub, clock, keyed) -> None:
    backend = _backend(case, stub, clock, rate_limit_per_minute=6)  # one call per 10 s
    for _ in range(3):
        await backend.generate(_spec())
    assert sum(s for s in clock.sleeps if s > 0) >= 20 - 1e-6


# -- edits: what the edit chain may name ------------------------------------------------------------


def _edit_spec() -> GenerationSpec:
    return _spec(prompt="make the lighting warmer", init_image_png=make_png(64, 48), image_guidance_scale=1.5)


def _image_backend(case: BackendCase, stub, clock: FakeClock) -> CloudBackend:
    """The backend with the model that takes images (the case's edit_model, where its default does not)."""
    return _backend(case, stub, clock, **({"model": case.edit_model} if case.edit_model else {}))


async def _made_png(backend: CloudBackend, spec: GenerationSpec) -> BackendImage:
    """What the backend made for `spec`, checked to be a PNG it says it made."""
    image = await backend.generate(spec)
    with Image.open(io.BytesIO(image.image_png)) as decoded:
        assert decoded.format == "PNG" and decoded.width > 0
    assert image.backend == backend.name
    return image


def _sent(stub, data: bytes) -> bool:
    """Whether some request the stub received carries `data`, raw (a multipart file) or base64."""
    import base64

    encoded = base64.b64encode(data)
    return any(data in request.body or encoded in request.body for request in stub.requests)


async def test_an_editor_sends_the_image_and_answers_the_edit(case, stub, clock, keyed) -> None:
    if not REGISTERED[case.name].edits:
        pytest.skip(f"{case.name} does not edit (the next test holds it to that)")
    spec = _edit_spec()
    image = await _made_png(_image_backend(case, stub, clock), spec)
    assert "init_image" not in image.ignored
    assert _sent(stub, spec.init_image_png or b""), "the image to edit never reached the provider"
    if case.check_edit is not None:
        case.check_edit(stub, spec)


# -- compositions: what the compose chain may name ------------------------------------------------


def _compose_spec() -> GenerationSpec:
    garment = make_png(32, 32, (20, 40, 200))
    return _edit_spec().model_copy(update={"reference_images_png": [garment], "image_guidance_scale": None})


async def test_a_composer_sends_every_image_and_answers_one(case, stub, clock, keyed) -> None:
    if not REGISTERED[case.name].composes:
        pytest.skip(f"{case.name} does not compose (the next test holds it to that)")
    spec = _compose_spec()
    await _made_png(_image_backend(case, stub, clock), spec)
    assert len(stub.requests) == 1
    for sent in (spec.init_image_png or b"", *spec.reference_images_png):
        assert _sent(stub, sent), "an image of the composition never reached the provider"


@pytest.mark.parametrize(("can", "error"), [("edits", EditNotSupported), ("composes", ComposeNotSupported)])
async def test_a_backend_refuses_what_it_cannot_do_before_any_request(case, stub, clock, keyed, can, error) -> None:
    """An edit asked of a backend that cannot edit, a composition of one that cannot compose."""
    if getattr(REGISTERED[case.name], can):
        pytest.skip(f"{case.name} {can} (the tests above hold it to that)")
    with pytest.raises(error) as caught:
        await _image_backend(case, stub, clock).generate(_edit_spec() if can == "edits" else _compose_spec())
    assert type(caught.value) is error and stub.requests == []
