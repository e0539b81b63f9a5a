"""What a provider hands back is as untrusted as what a user sends: image URLs (KLING's, Replicate's
outputs) are fetched through the SSRF guard (no private target unless `fetch.allow_hosts` lists it,
a byte cap), no image is decoded past the pixel limit, and the provider's words lose anything that
looks like a secret before they reach a result or a log line. Every case runs against the
provider's stub on 127.0.0.1, which is exactly the kind of host the default policy refuses."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageFile

from serve_app.backends.cloud import CloudBackend
from serve_app.errors import UpstreamError
from serve_app.net import FetchPolicy
from serve_app.redact import MARK, redact
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.kling_stub import KlingStub
from testbed.stubs.provider_base import Reply, StubRequest, backend_case, stub_fetch

SPEC = GenerationSpec(prompt="a desk", num_inference_steps=4, guidance_scale=7.0, height=512, width=512, seed=3)
FILES = {"kling": "/kling-files/", "replicate": "/replicate-files/"}  # where each stub serves its outputs


@pytest.fixture(params=sorted(FILES))
def name(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    for var, value in backend_case(request.param).env.items():
        monkeypatch.setenv(var, value)
    return str(request.param)


@pytest.fixture
def stub(name: str) -> Iterator[Any]:
    with backend_case(name).stub() as running:
        yield running


def _backend(name: str, stub: Any, fetch: FetchPolicy | None, **update: object) -> CloudBackend:
    case = backend_case(name)
    cfg = case.config(stub.base_url).model_copy(update={"poll_interval_s": 0.01, **update})
    clock = FakeClock()
    return case.backend(cfg, clock=clock, sleep=clock.sleep, fetch=fetch)  # type: ignore[no-any-return]


def _serve_output(stub: Any, name: str, reply: Reply) -> None:
    """Make the stub answer `reply` where it serves the generated image."""
    handle = stub.handle

    def answer(request: StubRequest, mode: str) -> Reply:
        return reply if request.path.startswith(FILES[name]) else handle(request, mode)

    stub.handle = answer


def _downloads(stub: Any, name: str) -> list[StubRequest]:
    return [r for r in stub.requests if r.path.startswith(FILES[name])]


async def _failure(backend: CloudBackend) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        await backend.generate(SPEC)
    return caught.value


# --- the SSRF guard ---------------------------------------------------------------------------------


async def test_an_output_url_on_a_loopback_host_is_refused_by_default(name: str, stub: Any) -> None:
    error = await _failure(_backend(name, stub, fetch=None))  # production: no allow_hosts
    assert error.error_code == "UPSTREAM_BAD_RESPONSE" and "loopback" in error.message
    assert _downloads(stub, name) == [], "nothing was sent to the refused host"


async def test_allow_hosts_lets_tests_reach_the_stub_and_the_fetch_is_the_guarded_one(name: str, stub: Any) -> None:
    image = await _backend(name, stub, fetch=stub_fetch()).generate(SPEC)
    assert image.image_png.startswith(b"\x89PNG")
    (download,) = _downloads(stub, name)
    assert download.headers["user-agent"].startswith("imagegen-serve/")  # serve_app.net's pinned client
    assert download.headers["accept-encoding"] == "identity" and "authorization" not in download.headers


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/iam/", "http://10.0.0.7/x.png", "file:///etc/passwd", "ftp://h/x"],
)
async def test_kling_urls_to_metadata_private_hosts_or_other_schemes_are_refused(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = backend_case("kling")
    for var, value in case.env.items():
        monkeypatch.setenv(var, value)
    with KlingStub() as stub:
        task = stub._task

        def pointing_elsewhere(task_id: str, status: str, msg: str = "") -> dict[str, object]:
            data = task(task_id, status, msg)
            if status == "succeed":
                data["task_result"] = {"images": [{"index": 0, "url": url}]}
            return data

        monkeypatch.setattr(stub, "_task", pointing_elsewhere)
        error = await _failure(_backend("kling", stub, fetch=stub_fetch()))
    assert error.error_code == "UPSTREAM_BAD_RESPONSE" and "not fetched here" in error.message


async def test_an_output_past_the_byte_cap_is_refused(name: str, stub: Any) -> None:
    noise = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    out = io.BytesIO()
    noise.save(out, format="PNG")
    _serve_output(stub, name, Reply(200, out.getvalue(), {"Content-Type": "image/png"}))
    error = await _failure(_backend(name, stub, fetch=stub_fetch(), max_download_bytes=4096))
    assert error.error_code == "UPSTREAM_BAD_RESPONSE" and "4096 bytes" in error.message


# --- decompression bombs --------------------------------------------------------------------------------


def _bomb() -> bytes:
    """A 25-megapixel PNG of one colour: about 25 KB on the wire, 75 MB once decoded as RGB."""
    out = io.BytesIO()
    Image.new("L", (5000, 5000), 0).save(out, format="PNG")
    return out.getvalue()


async def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(
    name: str, stub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> Any:
        loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    _serve_output(stub, name, Reply(200, _bomb(), {"Content-Type": "image/png"}))
    error = await _failure(_backend(name, stub, fetch=stub_fetch()))
    assert error.error_code == "UPSTREAM_BAD_RESPONSE" and "5000x5000" in error.message
    assert (5000, 5000) not in loads, "the header was read, the pixels never"


async def test_inline_images_are_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    case = backend_case("stability")
    for var, value in case.env.items():
        monkeypatch.setenv(var, value)
    with case.stub() as stub:
        stub.handle = lambda request, mode: Reply(200, _bomb(), {"Content-Type": "image/png", "seed": "1"})
        error = await _failure(_backend("stability", stub, fetch=None))
    assert error.error_code == "UPSTREAM_BAD_RESPONSE" and "5000x5000" in error.message


# --- secrets in the provider's words ----------------------------------------------------------------------

LEAKY = (
    "failed for Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJhayJ9.c2lnbmF0dXJlLXRleHQ "
    "fetching https://cdn.example.com/o/x.png?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIA1234 "
    "with api_key=live-key-123 session 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)


def _clean(text: str, secret_values: list[str]) -> None:
    for leaked in ("eyJhbGciOiJIUzI1NiJ9", "X-Amz-Signature", "AKIA1234", "live-key-123", "9f86d0818", *secret_values):
        assert leaked not in text, f"{leaked!r} leaked into {text!r}"


async def test_a_failed_kling_task_says_why_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    case = backend_case("kling")
    for var, value in case.env.items():
        monkeypatch.setenv(var, value)
    with KlingStub() as stub:
        task = stub._task
        said = f"{LEAKY} (secret {case.env['KLING_SECRET_KEY']}, access {case.env['KLING_ACCESS_KEY']})"
        monkeypatch.setattr(stub, "_task", lambda task_id, status, msg="": task(task_id, status, said if msg else ""))
        stub.add_rule("fail_job", times=1)
        error = await _failure(_backend("kling", stub, fetch=stub_fetch()))
    assert error.error_code == "UPSTREAM_REJECTED" and "failed for Authorization" in error.message
    _clean(error.message, list(case.env.values()))


async def test_replicate_error_bodies_and_retry_logs_lose_the_token(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    case = backend_case("replicate")
    token = case.env["REPLICATE_API_TOKEN"]
    monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    with case.stub() as stub:
        busy = {"title": "Throttled", "detail": f"token {token} is over its limit; {LEAKY}", "status": 429}
        refused = {"title": "Input validation failed", "detail": f"echo of {token}: {LEAKY}", "status": 422}
        replies = [Reply(429, busy, {"Retry-After": "1"}), Reply(422, refused)]
        stub.handle = lambda request, mode: replies.pop(0)
        with caplog.at_level(logging.INFO, logger="serve_app.backends.http"):
            error = await _failure(_backend("replicate", stub, fetch=stub_fetch()))
    assert error.error_code == "UPSTREAM_REJECTED" and "echo of" in error.message and "retry 1" in caplog.text
    _clean(error.message, [token])
    _clean(caplog.text, [token])


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Invalid token provided", "Invalid token provided"),
        ("Basic plan required", "Basic plan required"),
        ("model stabilityai/stable-diffusion-xl-base-1.0 is loading", "stable-diffusion-xl-base-1.0"),
        ("black-forest-labs/flux-schnell: NSFW content detected", "flux-schnell: NSFW content detected"),
        ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Authorization:"),
        ("key sk-proj-abcdefghijklmnop123456 is revoked", "is revoked"),
        ("hf_AbCdEfGhIjKlMnOpQrStUv invalid", "invalid"),
        ("AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q bad", "bad"),
        ('{"secret": "s3cr3t", "password":"pw123"}', '"secret": "'),
        ("see http://user:pass@host/x", "@host/x"),
    ],
)
def test_redact_takes_out_what_looks_secret_and_keeps_the_words(text: str, kept: str) -> None:
    out = redact(text)
    assert kept in out
    for secret in ("sk-proj", "hf_AbC", "AIzaSy", "s3cr3t", "pw123", "user:pass", "YWxhZGRpbj"):
        assert secret not in out


def test_redact_removes_configured_values_before_anything_is_cut() -> None:
    secret = "Qx7-not-shaped-like-a-key"
    assert redact(f"bad key {secret}!", [secret, "", "abc"]) == f"bad key {MARK}!"
    assert redact("abc stays: too short to search for", ["abc"]) == "abc stays: too short to search for"
