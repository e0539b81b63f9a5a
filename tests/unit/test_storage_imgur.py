"""Imgur stores images anonymously and publicly (unlisted: anyone holding the link sees the image),
so it is refused with API keys on; the reproducibility records never leave this node; every image's
deletehash is kept in the ledger so retention deletes what was stored, which also refuses the
store beside a cluster's shared task store. Everything runs against the Imgur stub, which speaks
Imgur's API 3 envelope, Client-ID auth and i.imgur.com's redirect for removed images (the storage
contract suite in test_storage.py runs this store too)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_app.config import AppArgs
from serve_app.errors import ConfigurationError, NotFound, StorageError
from serve_app.settings import Settings
from serve_app.storage import build_store, make_key
from serve_app.storage.config import ImgurStorageConfig
from serve_app.storage.imgur import ImgurImageStore
from testbed.stubs.imgur_stub import CLIENT_ID, ImgurStub
from testbed.stubs.provider_base import make_jpeg, make_png
from tests.support.storage import imgur_store

PNG = make_png(16, 16)


@pytest.fixture
def stub() -> Iterator[ImgurStub]:
    with ImgurStub() as running:
        yield running


async def test_an_anonymous_upload_whose_link_is_public_and_whose_record_stays_here(
    stub: ImgurStub, tmp_path: Path
) -> None:
    store = imgur_store(stub, tmp_path / "imgur.db")
    key = make_key("u")
    url = await store.put(key, PNG, metadata={"prompt": "secret plans"})
    (upload,) = [r for r in stub.requests if r.path.startswith("/3/")]
    assert upload.method == "POST" and upload.path == "/3/image"
    assert upload.headers["authorization"] == f"Client-ID {CLIENT_ID}"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    (image,) = stub.images.values()
    assert url == image["link"] and image["_bytes"] == PNG
    assert b"secret plans" not in upload.body, "the record never goes to Imgur"
    assert httpx.get(url).content == PNG, "public: no credentials needed, which is why keys on refuse it"
    assert await store.get_metadata(key) == {"prompt": "secret plans"}
    row = store._row(key)
    assert row is not None and row["deletehash"] == image["deletehash"] and row["image_id"] == image["id"]
    await store.close()


async def test_deletes_use_the_deletehash_and_a_removed_image_is_not_found(stub: ImgurStub, tmp_path: Path) -> None:
    store = imgur_store(stub, tmp_path / "imgur.db")
    kept, gone, replaced = make_key("u"), make_key("u"), make_key("u")
    for key in (kept, gone, replaced):
        await store.put(key, PNG)
    deletehash = store._row(gone)["deletehash"]  # type: ignore[index]
    link = store.url_for(gone)
    assert await store.delete([gone]) == 1
    assert [r.path for r in stub.requests if r.method == "DELETE"] == [f"/3/image/{deletehash}"]
    assert httpx.get(link).status_code == 302  # i.imgur.com sends a removed image to removed.png
    with pytest.raises(NotFound):
        await store.get(gone)
    old_link = store.url_for(replaced)
    await store.put(replaced, make_jpeg(8, 8), content_type="image/jpeg")  # a new image; the old one is deleted
    assert store.url_for(replaced) != old_link and httpx.get(old_link).status_code == 302
    assert len(stub.images) == 2
    stub.images.clear()  # deleted on imgur.com by whoever holds the deletehash
    with pytest.raises(NotFound):
        await store.get(kept)
    assert await store.delete([kept]) == 1  # already gone there: forgotten here
    assert store._row(kept) is None
    await store.close()


async def test_retention_after_a_restart_reaches_what_an_earlier_replica_stored(
    stub: ImgurStub, tmp_path: Path
) -> None:
    first = imgur_store(stub, tmp_path / "imgur.db")
    await first.put(make_key("u"), PNG, metadata={"a": 1})
    await first.close()
    second = imgur_store(stub, tmp_path / "imgur.db")
    assert await second.delete_older_than(time.time() + 5) == 2  # the image and its record
    assert not stub.images and len([r for r in stub.requests if r.method == "DELETE"]) == 1
    await second.close()


async def test_imgur_errors_keep_the_contracts_codes_with_the_client_id_redacted(
    stub: ImgurStub, tmp_path: Path
) -> None:
    wrong = imgur_store(stub, tmp_path / "imgur.db", client_id="fedcba9876543210")
    with pytest.raises(StorageError) as caught:
        await wrong.put(make_key("u"), PNG)
    assert caught.value.error_code == "S3_UPLOAD_FAILED" and "Invalid client_id" in caught.value.message
    assert "fedcba9876543210" not in caught.value.message
    with pytest.raises(StorageError) as caught:
        await wrong.check()
    assert caught.value.error_code == "S3_UNAVAILABLE"
    await wrong.close()

    store = imgur_store(stub, tmp_path / "imgur.db")
    await store.check()
    with pytest.raises(StorageError) as caught:
        await store.put(make_key("u", "webp"), b"not an image", content_type="image/webp")
    assert caught.value.error_code == "S3_UPLOAD_FAILED" and "File type invalid" in caught.value.message
    stub.add_rule("rate_limit", times=1)
    with pytest.raises(StorageError) as caught:
        await store.put(make_key("u"), PNG)
    assert "HTTP 429" in caught.value.message and "Too Many Requests" in caught.value.message
    key = make_key("u")
    await store.put(key, PNG)
    stub.add_rule("server_error", times=1)
    with pytest.raises(StorageError) as caught:
        await store.delete([key])
    assert caught.value.error_code == "STORAGE_DELETE_FAILED"
    assert store._row(key) is not None, "a failed delete keeps the deletehash for the next sweep"
    await store.close()
    stub.stop()
    with pytest.raises(StorageError) as caught:
        await store.get(key)  # a new connection: refused
    assert caught.value.error_code == "S3_DOWNLOAD_FAILED"
    await store.close()


def test_imgur_is_refused_where_its_public_links_or_local_ledger_are_unsafe(tmp_path: Path) -> None:
    imgur = {"kind": "imgur"}
    with pytest.raises(ValueError, match="Imgur images are public"):
        AppArgs.model_validate({"auth": {"enabled": True}, "storage": imgur})
    with pytest.raises(ValueError, match="ledger on one node"):
        AppArgs.model_validate({"tasks": {"store": "postgres"}, "storage": imgur})
    args = AppArgs.model_validate({"data_dir": str(tmp_path / "var"), "storage": imgur}).resolved()
    assert isinstance(args.storage, ImgurStorageConfig)
    assert args.storage.ledger_path == str((tmp_path / "var" / "imgur.db").resolve())
    with pytest.raises(ConfigurationError, match=r"\$IMGUR_CLIENT_ID"):
        build_store(args.storage, Settings(imgur_client_id=None))
    store = build_store(args.storage, Settings(imgur_client_id=CLIENT_ID))
    assert isinstance(store, ImgurImageStore) and not store.ingress_serves


def test_the_client_id_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGUR_CLIENT_ID", CLIENT_ID)
    assert Settings().imgur_client_id is not None
    assert Settings().imgur_client_id.get_secret_value() == CLIENT_ID  # type: ignore[union-attr]
