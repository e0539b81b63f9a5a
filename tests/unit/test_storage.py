"""Image stores: key naming and validation, local files, and S3 against a real SeaweedFS server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from serve_app import net
from serve_app.errors import ConfigurationError, InvalidInput, NotFound, PayloadTooLarge, StorageError
from serve_app.net import FetchPolicy
from serve_app.settings import Settings
from serve_app.storage import (
    LocalImageStore,
    S3ImageStore,
    build_store,
    make_key,
    parse_s3_url,
    sanitize_user_id,
    validate_key,
)
from serve_app.storage.base import ImageStore
from serve_app.storage.cloudinary import CloudinaryImageStore, signature
from serve_app.storage.config import CloudinaryStorageConfig, LocalStorageConfig, S3StorageConfig
from testbed.seaweed import SeaweedServer
from testbed.stubs.cloudinary_stub import API_KEY as CLOUDINARY_KEY
from testbed.stubs.cloudinary_stub import API_SECRET as CLOUDINARY_SECRET
from testbed.stubs.cloudinary_stub import CLOUD, CloudinaryStub
from testbed.stubs.google_drive_stub import GoogleDriveStub
from testbed.stubs.imgur_stub import ImgurStub
from testbed.stubs.provider_base import make_png
from tests.support.storage import drive_store, imgur_store

PNG_BYTES = make_png(16, 16)

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}/\d{8}/[0-9a-f]{32}\.[a-z0-9]+$")
BAD_KEYS = ["", "/abs/x.png", "../x.png", "a/../../x.png", "a/./x.png", "a//x.png", "a\\x.png", "a/\0.png", "a/"]


# --- keys --------------------------------------------------------------------------------------


def test_make_key_format() -> None:
    now = datetime(2024, 3, 9, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 2024-03-10 in UTC
    key = make_key("user_1", now=now)
    assert KEY_RE.match(key) and key.startswith("user_1/20240310/") and key.endswith(".png")
    assert make_key("u", "JPG").endswith(".jpg")
    assert make_key("u") != make_key("u")
    with pytest.raises(ValueError):
        make_key("u", "p/ng")


@pytest.mark.parametrize(
    ("user", "clean"),
    [
        ("alice", "alice"),
        ("../../etc", "______etc"),
        ("a/b\\c", "a_b_c"),
        ("", "anonymous"),
        (None, "anonymous"),
        ("  ", "anonymous"),
        ("김철수", "___"),
        ("x" * 100, "x" * 64),
    ],
)
def test_user_id_sanitised(user: str | None, clean: str) -> None:
    assert sanitize_user_id(user) == clean
    key = make_key(user, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert key.split("/")[0] == clean and KEY_RE.match(key)
    validate_key(key)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_refused(key: str) -> None:
    with pytest.raises(InvalidInput):
        validate_key(key)


# --- local -------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(LocalStorageConfig(root=str(tmp_path / "images"), public_base_url="http://api.test/"))


async def test_local_put_get_url_sidecar(local: LocalImageStore) -> None:
    await local.start()
    await local.check()
    key = make_key("bob")
    url = await local.put(key, b"\x89PNG fake", metadata={"seed": 42, "prompt": "따뜻한 조명"})
    assert url == f"http://api.test/files/{key}"
    assert await local.get(key) == b"\x89PNG fake"
    assert await local.get_metadata(key) == {"seed": 42, "prompt": "따뜻한 조명"}
    assert local.path_for(key).read_bytes() == b"\x89PNG fake"
    assert (local.root / (key + ".json")).is_file()
    assert [p.name for p in local.path_for(key).parent.iterdir() if p.name.startswith(".tmp-")] == []
    await local.put(key, b"v2")  # overwrite is atomic and complete
    assert await local.get(key) == b"v2"


async def test_local_missing_and_traversal(local: LocalImageStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await local.get("bob/20240101/missing.png")
    for key in BAD_KEYS:
        with pytest.raises(InvalidInput):
            await local.put(key, b"x")
        with pytest.raises(InvalidInput):
            local.path_for(key)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"s")
    local.root.mkdir(parents=True, exist_ok=True)
    (local.root / "link").symlink_to(outside)
    with pytest.raises(InvalidInput):
        local.path_for("link/secret.png")
    with pytest.raises(InvalidInput):
        await local.get("link/secret.png")


async def test_local_write_failure_is_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    store = LocalImageStore(LocalStorageConfig(root=str(blocker)))  # root is a file: nothing can be written
    assert store.url_for("a/b.png") == "/files/a/b.png"  # no base URL: relative
    with pytest.raises(StorageError) as info:
        await store.put("a/b.png", b"x")
    assert info.value.error_code == "STORAGE_WRITE_FAILED"
    with pytest.raises(StorageError):
        await store.check()


def test_build_store_and_parse_s3_url(tmp_path: Path) -> None:
    assert isinstance(build_store(LocalStorageConfig(root=str(tmp_path)), Settings()), LocalImageStore)
    s3 = build_store(S3StorageConfig(bucket="bkt", endpoint_url="http://127.0.0.1:9"), Settings())
    assert isinstance(s3, S3ImageStore)
    assert parse_s3_url("s3://my-bucket/desk/photo 1.jpg") == ("my-bucket", "desk/photo 1.jpg")
    for bad in ("s3://", "s3://bucket", "s3://bucket/", "http://bucket/key", "s3://Bad_Bucket/k", "s3://b/../k"):
        with pytest.raises(InvalidInput):
            parse_s3_url(bad)


# --- S3 against SeaweedFS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedServer]:
    with SeaweedServer() as server:
        yield server


def s3_store(server: SeaweedServer, **overrides: object) -> S3ImageStore:
    cfg = S3StorageConfig(
        bucket="imagegen-test",
        endpoint_url=server.endpoint_url,
        create_bucket=True,
        timeout_s=2.0,
        max_attempts=1,
        **overrides,  # type: ignore[arg-type]
    )
    settings = Settings(aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
    return S3ImageStore(cfg, settings)


async def test_s3_put_get_presigned(seaweed: SeaweedServer) -> None:
    store = s3_store(seaweed)
    await store.start()  # creates the bucket
    await store.start()  # idempotent
    await store.check()
    key = make_key("carol")
    data = b"\x89PNG" + bytes(range(256)) * 4
    url = await store.put(key, data, metadata={"seed": 7})
    assert url.startswith(seaweed.endpoint_url) and "X-Amz-Signature" in url
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url)
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "image/png"
    # the same URL through the SSRF-guarded fetcher, with the local server allow-listed
    assert await net.fetch_bytes(url, FetchPolicy(allow_hosts=["127.0.0.1"])) == data
    assert await store.get(key) == data
    assert await store.get_metadata(key) == {"seed": 7}
    upload = "uploads/carol/desk.png"  # s3:// inputs: only under storage.input_prefixes (uploads/)
    await store.put(upload, data)
    assert await store.get_s3_url(f"s3://imagegen-test/{upload}") == data
    with pytest.raises(PayloadTooLarge):
        await store.get_s3_url(f"s3://imagegen-test/{upload}", max_bytes=10)
    with pytest.raises(InvalidInput):
        await store.get_s3_url(f"s3://other-bucket/{upload}")
    for elsewhere in (key, key + ".json"):  # another user's image, its reproducibility record
        with pytest.raises(InvalidInput, match="only under s3://imagegen-test/uploads/"):
            await store.get_s3_url(f"s3://imagegen-test/{elsewhere}")
    # With API keys on, the caller's own folder of the input prefixes only.
    assert await store.get_s3_url(f"s3://imagegen-test/{upload}", owner="carol") == data
    with pytest.raises(InvalidInput, match="only under s3://imagegen-test/uploads/dave/"):
        await store.get_s3_url(f"s3://imagegen-test/{upload}", owner="dave")
    with pytest.raises(NotFound):
        await store.get("carol/20240101/missing.png")
    await store.close()


async def test_s3_prefix_and_public_urls(seaweed: SeaweedServer) -> None:
    store = s3_store(seaweed, prefix="/gen/", url_mode="public", public_base_url="https://cdn.test/")
    await store.start()
    key = make_key("dave")
    assert await store.put(key, b"img") == f"https://cdn.test/gen/{key}"
    raw = seaweed.client().get_object(Bucket="imagegen-test", Key=f"gen/{key}")["Body"].read()
    assert raw == b"img" and await store.get(key) == b"img"


async def test_s3_wrong_credentials(seaweed: SeaweedServer) -> None:
    await s3_store(seaweed).start()
    cfg = S3StorageConfig(bucket="imagegen-test", endpoint_url=seaweed.endpoint_url, timeout_s=2.0, max_attempts=1)
    store = S3ImageStore(cfg, Settings(aws_access_key_id=seaweed.access_key, aws_secret_access_key="wrong"))
    with pytest.raises(StorageError) as info:
        await store.put(make_key("eve"), b"x")
    assert info.value.error_code == "S3_UPLOAD_FAILED" and info.value.message == "Failed to upload image to S3."
    assert info.value.status_code == 500
    with pytest.raises(StorageError) as info:
        await store.get("eve/20240101/x.png")
    assert info.value.error_code == "S3_DOWNLOAD_FAILED"
    with pytest.raises(StorageError):
        await store.check()


async def test_s3_outage_and_recovery(seaweed: SeaweedServer) -> None:
    store = s3_store(seaweed)
    await store.start()
    before = make_key("frank")
    await store.put(before, b"before")
    seaweed.stop()
    try:
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(store.put(make_key("frank"), b"during"), timeout=15)
        assert info.value.error_code == "S3_UPLOAD_FAILED"
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(store.get(before), timeout=15)
        assert info.value.error_code == "S3_DOWNLOAD_FAILED"
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(store.check(), timeout=15)
        assert info.value.error_code == "S3_UNAVAILABLE"
    finally:
        seaweed.start()
    after = make_key("frank")
    await store.put(after, b"after")
    assert await store.get(after) == b"after"
    assert await store.get(before) == b"before"  # same data dir: the old object survived


# --- one contract for every store: local files, S3 (SeaweedFS), Cloudinary, Google Drive and Imgur
# (each on its stub) ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloudinary() -> Iterator[CloudinaryStub]:
    with CloudinaryStub() as stub:
        yield stub


def cloudinary_store(stub: CloudinaryStub, monkeypatch: pytest.MonkeyPatch, **overrides: object) -> ImageStore:
    monkeypatch.setenv("CLOUDINARY_API_KEY", CLOUDINARY_KEY)
    monkeypatch.setenv("CLOUDINARY_API_SECRET", CLOUDINARY_SECRET)
    cfg = CloudinaryStorageConfig(
        cloud_name=CLOUD,
        api_base_url=stub.base_url,
        delivery_base_url=stub.base_url,
        **overrides,  # type: ignore[arg-type]
    )
    return CloudinaryImageStore(cfg)


@pytest.fixture(scope="module")
def google_drive() -> Iterator[GoogleDriveStub]:
    with GoogleDriveStub() as stub:
        yield stub


@pytest.fixture(scope="module")
def imgur() -> Iterator[ImgurStub]:
    with ImgurStub() as stub:
        yield stub


@pytest.fixture(params=["local", "s3", "cloudinary", "google_drive", "imgur"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    if request.param == "local":
        store: ImageStore = LocalImageStore(
            LocalStorageConfig(root=str(tmp_path / "images"), public_base_url="http://t")
        )
    elif request.param == "s3":
        store = s3_store(request.getfixturevalue("seaweed"), prefix=f"contract-{tmp_path.name}")
    elif request.param == "cloudinary":
        store = cloudinary_store(request.getfixturevalue("cloudinary"), monkeypatch, folder=f"contract-{tmp_path.name}")
    elif request.param == "google_drive":
        store = drive_store(request.getfixturevalue("google_drive"))  # a folder of its own
    else:
        store = imgur_store(request.getfixturevalue("imgur"), tmp_path / "imgur.db")
    await store.start()
    return store


async def test_store_contract_put_get_sidecar_delete(any_store: ImageStore) -> None:
    key = make_key("contract-user")
    png = PNG_BYTES
    url = await any_store.put(key, png, content_type="image/png", metadata={"seed": 7, "prompt": "나무 책상"})
    assert url == any_store.url_for(key)
    assert await any_store.get(key) == png
    assert await any_store.get_metadata(key) == {"seed": 7, "prompt": "나무 책상"}
    with pytest.raises(NotFound):
        await any_store.get(make_key("contract-user"))
    assert await any_store.delete([key, key + ".json", make_key("contract-user")]) == 3  # a missing one is fine
    with pytest.raises(NotFound):
        await any_store.get(key)
    with pytest.raises(InvalidInput):
        await any_store.put("../escape.png", png)
    await any_store.check()
    await any_store.close()


async def test_store_contract_sweeps_only_its_own_old_objects(any_store: ImageStore) -> None:
    own = make_key("sweeper")
    foreign = "not-ours/notes.png"
    await any_store.put(own, PNG_BYTES, metadata={"a": 1})
    await any_store.put(foreign, PNG_BYTES)
    assert await any_store.delete_older_than(datetime.now(UTC).timestamp() - 3600) == 0, "nothing is that old"
    assert await any_store.delete_older_than(datetime.now(UTC).timestamp() + 5) == 2  # the image and its record
    with pytest.raises(NotFound):
        await any_store.get(own)
    assert await any_store.get(foreign) == PNG_BYTES
    await any_store.close()


# --- Cloudinary specifics ------------------------------------------------------------------------------


async def test_cloudinary_signs_uploads_and_a_wrong_secret_is_refused(
    cloudinary: CloudinaryStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cloudinary_store(cloudinary, monkeypatch, folder="signed")
    key = make_key("u")
    assert (await store.put(key, PNG_BYTES)).startswith(f"{cloudinary.base_url}/v1_1/{CLOUD}/image/download?")
    monkeypatch.setenv("CLOUDINARY_API_SECRET", "wrong")
    bad = cloudinary_store_with_env(cloudinary, folder="signed")
    with pytest.raises(StorageError) as caught:
        await bad.put(make_key("u"), PNG_BYTES)
    assert caught.value.error_code == "S3_UPLOAD_FAILED" and "Invalid Signature" in caught.value.message
    await store.close()
    await bad.close()


def cloudinary_store_with_env(stub: CloudinaryStub, **overrides: object) -> ImageStore:
    cfg = CloudinaryStorageConfig(
        cloud_name=CLOUD,
        api_base_url=stub.base_url,
        delivery_base_url=stub.base_url,
        **overrides,  # type: ignore[arg-type]
    )
    return CloudinaryImageStore(cfg)


async def test_cloudinary_sidecars_are_raw_resources_and_an_outage_is_an_upload_error(
    cloudinary: CloudinaryStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cloudinary_store(cloudinary, monkeypatch, folder="raw")
    key = make_key("u", ext="webp")
    await store.put(key, PNG_BYTES, content_type="image/webp", metadata={"x": 1})
    kinds = {(kind, pid) for kind, _, pid in cloudinary.files if pid.startswith("raw/")}
    assert ("image", "raw/" + key.rsplit(".", 1)[0]) in kinds and ("raw", "raw/" + key + ".json") in kinds
    assert "format=webp" in store.url_for(key)
    cloudinary.fail_uploads = 1
    with pytest.raises(StorageError) as caught:
        await store.put(make_key("u"), PNG_BYTES)
    assert caught.value.error_code == "S3_UPLOAD_FAILED" and caught.value.message.startswith("Failed to upload image")
    await store.close()


def test_cloudinary_without_keys_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDINARY_API_KEY", raising=False)
    monkeypatch.setenv("CLOUDINARY_API_SECRET", "s")
    with pytest.raises(ConfigurationError, match="CLOUDINARY_API_KEY"):
        CloudinaryImageStore(CloudinaryStorageConfig(cloud_name="c"))


def test_the_signature_is_cloudinarys() -> None:
    # The example of Cloudinary's "Generating authentication signatures" documentation.
    params = {"eager": "w_400,h_300,c_pad|w_260,h_200,c_crop", "public_id": "sample_image", "timestamp": "1315060510"}
    assert signature(params, "abcd") == "bfd09f95f331f558cbd1320e67aa8d488770583e"
