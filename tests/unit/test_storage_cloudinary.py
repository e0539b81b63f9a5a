"""Cloudinary keeps nothing public: images, users' photos and reproducibility records are
`authenticated` resources, read back through the download API; their URLs are signed download URLs
that expire (or, with API keys off and `url_mode: cdn`, signed CDN URLs); keys on refuse `cdn`.
Everything runs against the Cloudinary stub, which checks signatures, types and expiry as
Cloudinary does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from serve_app.config import AppArgs
from serve_app.storage import make_key
from serve_app.storage.cloudinary import CloudinaryImageStore, signature, url_signature
from serve_app.storage.config import CloudinaryStorageConfig
from testbed.stubs.cloudinary_stub import API_KEY, API_SECRET, CLOUD, CloudinaryStub
from testbed.stubs.provider_base import make_png

PNG = make_png(16, 16)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudinaryStub]:
    monkeypatch.setenv("CLOUDINARY_API_KEY", API_KEY)
    monkeypatch.setenv("CLOUDINARY_API_SECRET", API_SECRET)
    with CloudinaryStub() as running:
        yield running


def _store(stub: CloudinaryStub, **overrides: object) -> CloudinaryImageStore:
    clock = overrides.pop("clock", time.time)
    cfg = CloudinaryStorageConfig.model_validate(
        {"cloud_name": CLOUD, "api_base_url": stub.base_url, "delivery_base_url": stub.base_url, **overrides}
    )
    return CloudinaryImageStore(cfg, clock=clock)  # type: ignore[arg-type]


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_photos_and_records_are_authenticated_resources_that_no_public_path_serves(stub: CloudinaryStub) -> None:
    store = _store(stub, folder="private")
    photo, image = make_key("u"), make_key("u")
    await store.put(photo, PNG)  # an original upload: no record
    await store.put(image, PNG, metadata={"seed": 7, "prompt": "desk"})
    assert {(kind, kind_type) for kind, kind_type, _ in stub.files} == {
        ("image", "authenticated"),
        ("raw", "authenticated"),
    }
    record_id, photo_id = store.public_id(image + ".json"), store.public_id(photo)
    for path in (f"raw/upload/{record_id}", f"image/upload/{photo_id}.png", f"image/upload/v1/{photo_id}.png"):
        assert httpx.get(f"{stub.base_url}/{CLOUD}/{path}").status_code == 404  # not a public resource
    for path in (f"raw/authenticated/{record_id}", f"image/authenticated/v1/{photo_id}.png"):
        assert httpx.get(f"{stub.base_url}/{CLOUD}/{path}").status_code == 401  # not without a signature
    assert await store.get(photo) == PNG and await store.get_metadata(image) == {"seed": 7, "prompt": "desk"}
    await store.close()


async def test_urls_are_signed_download_urls_that_expire(stub: CloudinaryStub) -> None:
    store = _store(stub, url_expiry_s=600)
    key = make_key("u")
    before = int(time.time())
    url = await store.put(key, PNG)
    assert url.startswith(f"{stub.base_url}/v1_1/{CLOUD}/image/download?")
    query = _query(url)
    assert before + 600 <= int(query["expires_at"]) <= int(time.time()) + 600
    assert query["type"] == "authenticated" and query["format"] == "png" and query["api_key"] == API_KEY
    assert httpx.get(url).content == PNG
    stretched = url.replace(f"expires_at={query['expires_at']}", f"expires_at={int(query['expires_at']) + 10**6}")
    assert httpx.get(stretched).status_code == 401, "the expiry is signed"
    late = _store(stub, url_expiry_s=600, clock=lambda: time.time() - 700).url_for(key)  # expired 100 s ago
    assert httpx.get(late).status_code == 401
    await store.close()


async def test_cdn_mode_gives_signed_delivery_urls(stub: CloudinaryStub) -> None:
    store = _store(stub, folder="cdn", url_mode="cdn")
    key = make_key("u")
    url = await store.put(key, PNG, metadata={"a": 1})
    source = f"{store.public_id(key)}.png"
    assert url == f"{stub.base_url}/{CLOUD}/image/authenticated/{url_signature(source, API_SECRET)}/v1/{source}"
    assert httpx.get(url).content == PNG
    assert httpx.get(url.replace("/s--", "/s--x")).status_code == 401
    await store.close()


def test_the_url_signature_is_cloudinarys() -> None:
    # Known answers of pycloudinary's tests (test_utils.py, api_secret "b"): sample.jpg and image.jpg.
    assert url_signature("sample.jpg", "b") == "s--v2fTPYTu--"
    assert url_signature("image.jpg", "b") == "s----SjmNDA--"


def test_keys_on_refuse_urls_that_never_expire() -> None:
    cdn = {"kind": "cloudinary", "cloud_name": "c", "url_mode": "cdn"}
    with pytest.raises(ValueError, match="url_mode 'expiring'"):
        AppArgs.model_validate({"auth": {"enabled": True}, "storage": cdn})
    AppArgs.model_validate({"storage": cdn})  # keys off: the operator's choice
    AppArgs.model_validate({"auth": {"enabled": True}, "storage": {**cdn, "url_mode": "expiring"}})


async def test_deletes_and_sweeps_reach_resources_stored_public_before(stub: CloudinaryStub) -> None:
    store = _store(stub, folder="legacy")
    legacy, fresh = make_key("u"), make_key("u")
    # What this store wrote before it went private: a signed upload without `type` (a public one).
    form = {"public_id": store.public_id(legacy), "overwrite": "true", "timestamp": str(int(time.time()))}
    form |= {"api_key": API_KEY, "signature": signature(form, API_SECRET)}
    upload = httpx.post(f"{stub.base_url}/v1_1/{CLOUD}/image/upload", data=form, files={"file": ("x.png", PNG)})
    assert upload.json()["type"] == "upload"
    await store.put(fresh, PNG)
    assert await store.get(legacy) == PNG  # still read
    assert await store.delete([legacy]) == 1
    assert not any(pid == store.public_id(legacy) for _, _, pid in stub.files)
    destroys = [parse_qs(r.body.decode()) for r in stub.requests if r.path.endswith("/destroy")]
    assert [d["type"] for d in destroys] == [["authenticated"], ["upload"]]  # tried private first
    httpx.post(f"{stub.base_url}/v1_1/{CLOUD}/image/upload", data=form, files={"file": ("x.png", PNG)})
    assert await store.delete_older_than(time.time() + 5) == 2  # the fresh one and the public one
    assert not stub.files
    await store.close()
