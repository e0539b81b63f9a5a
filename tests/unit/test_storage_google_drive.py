"""Google Drive keeps everything private: files in one folder, no sharing, read back through the API
and served by the ingress under /files/{key} with the local store's access rules. Access tokens
come from a refresh token or a service account's signed JWT, and are renewed when refused or about
to expire. Everything runs against the Drive stub, which checks tokens, assertions and the upload
wire format as Google does (the storage contract suite in test_storage.py runs this store too)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_app.config import AppArgs
from serve_app.errors import ConfigurationError, NotFound, StorageError
from serve_app.ingress import app
from serve_app.settings import Settings
from serve_app.storage import build_store, make_key
from serve_app.storage.config import GoogleDriveStorageConfig
from serve_app.storage.google_drive import GoogleDriveImageStore
from testbed.stubs.google_drive_stub import JWT_BEARER, REFRESH_TOKEN, SERVICE_EMAIL, GoogleDriveStub
from testbed.stubs.provider_base import StubRequest, make_png
from tests.support.ingress import ingress_context
from tests.support.storage import drive_oauth_settings, drive_service_account_settings, drive_store

PNG = make_png(16, 16)


@pytest.fixture
def stub() -> Iterator[GoogleDriveStub]:
    with GoogleDriveStub() as running:
        yield running


def _api_calls(stub: GoogleDriveStub) -> list[StubRequest]:
    return [r for r in stub.requests if r.path != "/token"]


def _claims(assertion: str) -> tuple[dict[str, object], dict[str, object]]:
    head, body, _ = assertion.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(head), decode(body)


async def test_a_multipart_upload_of_a_private_file_served_by_the_ingress(stub: GoogleDriveStub) -> None:
    store = drive_store(stub)
    key = make_key("u")
    url = await store.put(key, PNG, metadata={"seed": 7})
    assert url == f"http://api.test/files/{key}", "Drive files are never shared: the app serves them"
    upload = next(r for r in stub.requests if r.path == "/upload/drive/v3/files")
    assert upload.method == "POST" and upload.query["uploadType"] == ["multipart"]
    assert upload.headers["authorization"].startswith("Bearer ya29.")
    assert upload.headers["content-type"].startswith("multipart/related; boundary=")
    head = f"Content-Type: {upload.headers['content-type']}\r\n\r\n".encode()
    metadata, media = BytesParser(policy=default).parsebytes(head + upload.body).iter_parts()
    assert json.loads(metadata.get_payload(decode=True)) == {
        "name": key,
        "mimeType": "image/png",
        "parents": [store.config.folder_id],
    }
    assert media.get_content_type() == "image/png" and media.get_payload(decode=True) == PNG
    assert not any("permissions" in r.path for r in stub.requests), "nothing is shared"
    assert {f["name"] for f in stub.files.values() if f["parents"] == [store.config.folder_id]} == {key, key + ".json"}
    await store.close()


async def test_large_files_go_up_resumable_and_a_key_written_again_is_updated_in_place(stub: GoogleDriveStub) -> None:
    store = drive_store(stub, resumable_above_bytes=len(PNG) - 1)
    key = make_key("u")
    await store.put(key, PNG)
    opened = [r for r in stub.requests if r.query.get("uploadType") == ["resumable"] and r.method == "POST"]
    assert len(opened) == 1 and opened[0].headers["x-upload-content-length"] == str(len(PNG))
    assert [r.method for r in stub.requests if r.query.get("upload_id")] == ["PUT"]
    bigger = make_png(32, 32)
    await store.put(key, bigger)  # resumable again, through files.update
    assert [r.method for r in stub.requests if r.query.get("uploadType") == ["resumable"]][-2:] == ["PATCH", "PUT"]
    assert [f["name"] for f in stub.files.values()].count(key) == 1
    assert await store.get(key) == bigger
    small = drive_store(stub, folder_id=store.config.folder_id)  # another replica: finds the file by name
    await small.put(key, PNG)
    assert any(r.method == "PATCH" and r.query.get("uploadType") == ["multipart"] for r in stub.requests)
    assert await store.get(key) == PNG and [f["name"] for f in stub.files.values()].count(key) == 1
    await store.close()
    await small.close()


async def test_the_access_token_is_kept_and_renewed_when_refused_or_about_to_expire(stub: GoogleDriveStub) -> None:
    now = [1_000_000.0]
    store = drive_store(stub, clock=lambda: now[0])
    keys = [make_key("u") for _ in range(3)]
    for key in keys:
        await store.put(key, PNG)
    assert stub.grants == ["refresh_token"], "one token for every call"
    token_request = next(r for r in stub.requests if r.path == "/token")
    assert f"refresh_token={REFRESH_TOKEN.replace('/', '%2F')}" in token_request.body.decode()
    stub.expire_tokens()  # Google refuses the token before this replica thinks it expired
    assert await store.get(keys[0]) == PNG
    assert stub.grants == ["refresh_token"] * 2
    assert [r.path for r in stub.requests][-3:] == [
        "/drive/v3/files/" + store._ids[keys[0]],
        "/token",
        "/drive/v3/files/" + store._ids[keys[0]],
    ]
    now[0] += 3599 - 30  # inside the last minute: renewed before use, no 401
    before = len(stub.requests)
    assert await store.get(keys[1]) == PNG
    assert stub.grants == ["refresh_token"] * 3 and [r.path for r in stub.requests[before:]][0] == "/token"
    await store.close()


async def test_a_service_account_signs_a_jwt_assertion(stub: GoogleDriveStub) -> None:
    store = drive_store(stub, settings=drive_service_account_settings(stub), auth="service_account")
    key = make_key("u")
    await store.put(key, PNG)
    assert await store.get(key) == PNG and stub.grants == [JWT_BEARER]
    form = dict(
        pair.split("=", 1) for pair in next(r for r in stub.requests if r.path == "/token").body.decode().split("&")
    )
    header, claims = _claims(form["assertion"])
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "0123456789abcdef"}
    assert claims["iss"] == SERVICE_EMAIL and claims["aud"] == f"{stub.base_url}/token"
    assert claims["scope"] == "https://www.googleapis.com/auth/drive.file"
    assert int(claims["exp"]) - int(claims["iat"]) == 3600  # type: ignore[call-overload]
    await store.close()
    # A key Google does not know (another service account's, or a rotated one) is refused.
    with GoogleDriveStub() as other:
        stranger = drive_store(stub, settings=drive_service_account_settings(other), auth="service_account")
        with pytest.raises(StorageError) as caught:
            await stranger.put(make_key("u"), PNG)
        await stranger.close()
    assert caught.value.error_code == "S3_UPLOAD_FAILED" and "Invalid JWT Signature" in caught.value.message


async def test_refused_credentials_and_drive_errors_keep_the_contracts_codes(stub: GoogleDriveStub) -> None:
    revoked = drive_store(stub, settings=drive_oauth_settings(google_drive_refresh_token="1//0revoked-token-xyz"))
    with pytest.raises(StorageError) as caught:
        await revoked.put(make_key("u"), PNG)
    assert caught.value.error_code == "S3_UPLOAD_FAILED"
    assert "invalid_grant" in caught.value.message and "revoked-token" not in caught.value.message
    with pytest.raises(StorageError) as caught:
        await revoked.check()
    assert caught.value.error_code == "S3_UNAVAILABLE"
    await revoked.close()

    store = drive_store(stub)
    key = make_key("u")
    await store.put(key, PNG)
    stub.quota_full = True
    with pytest.raises(StorageError) as caught:
        await store.put(make_key("u"), PNG)
    assert caught.value.error_code == "S3_UPLOAD_FAILED" and "storageQuotaExceeded" in caught.value.message
    assert caught.value.message.startswith("Failed to upload image to S3")
    stub.add_rule("rate_limit", times=1)
    with pytest.raises(StorageError) as caught:
        await store.get(key)
    assert caught.value.error_code == "S3_DOWNLOAD_FAILED" and "rateLimitExceeded" in caught.value.message
    stub.add_rule("server_error", times=1)
    with pytest.raises(StorageError) as caught:
        await store.delete([key])
    assert caught.value.error_code == "STORAGE_DELETE_FAILED"
    file_id = store._ids[key]
    del stub.files[file_id]  # deleted in Drive's own UI
    with pytest.raises(NotFound):
        await store.get(key)
    stub.quota_full = False
    store._ids[key] = file_id  # another replica still remembers the old id: writing the key again creates it
    await store.put(key, PNG)
    assert store._ids[key] != file_id and await store.get(key) == PNG
    missing = drive_store(stub, folder_id="no-such-folder")
    with pytest.raises(StorageError) as caught:
        await missing.check()
    assert caught.value.error_code == "S3_UNAVAILABLE" and "File not found: no-such-folder" in caught.value.message
    await store.close()
    await missing.close()
    stub.stop()
    with pytest.raises(StorageError) as caught:
        await store.put(make_key("u"), PNG)  # a new connection: refused
    assert caught.value.error_code == "S3_UPLOAD_FAILED"


def test_missing_credentials_are_configuration_errors(stub: GoogleDriveStub, tmp_path: Path) -> None:
    oauth = GoogleDriveStorageConfig()
    with pytest.raises(ConfigurationError, match=r"\$GOOGLE_DRIVE_CLIENT_SECRET and \$GOOGLE_DRIVE_REFRESH_TOKEN"):
        GoogleDriveImageStore(oauth, Settings(google_drive_client_id="x"))
    with pytest.raises(ValueError, match="no Drive storage of its own"):
        GoogleDriveStorageConfig(auth="service_account")  # folder_id root
    account = GoogleDriveStorageConfig(auth="service_account", folder_id="sharedfolder")
    with pytest.raises(ConfigurationError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        GoogleDriveImageStore(account, Settings())
    bad = tmp_path / "key.json"
    bad.write_text(json.dumps({"client_email": "a@b", "private_key": "not a key"}))
    with pytest.raises(ConfigurationError, match="does not load"):
        GoogleDriveImageStore(account, Settings(google_application_credentials=str(bad)))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(stub.service_account_info()))
    assert isinstance(
        GoogleDriveImageStore(account, Settings(google_application_credentials=str(good))), GoogleDriveImageStore
    )


def test_the_environment_names_the_secrets_and_the_app_serves_the_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_DRIVE_CLIENT_ID", "id")
    monkeypatch.setenv("GOOGLE_DRIVE_CLIENT_SECRET", "secret")
    monkeypatch.setenv("GOOGLE_DRIVE_REFRESH_TOKEN", "refresh")
    args = AppArgs.model_validate(
        {"public_base_url": "https://img.example/", "storage": {"kind": "google_drive", "folder_id": "abc"}}
    ).resolved()
    store = build_store(args.storage, Settings())
    assert isinstance(store, GoogleDriveImageStore) and store.ingress_serves
    assert store.url_for("u/20260101/a.png") == "https://img.example/files/u/20260101/a.png"
    AppArgs.model_validate({"auth": {"enabled": True}, "storage": {"kind": "google_drive"}})  # private: allowed


def test_with_keys_on_the_ingress_serves_a_drive_image_only_to_its_owner(stub: GoogleDriveStub, tmp_path: Path) -> None:
    auth = {"enabled": True, "default_limits": {"requests_per_minute": 100, "max_in_flight": 20}}
    with ingress_context(tmp_path, {"max_active": 5}, auth=auth) as ctx:
        alice, alice_token = ctx.tasks.keys.create("alice")
        _, bob_token = ctx.tasks.keys.create("bob")
        writer = drive_store(stub)
        key = make_key(alice.user_id)

        async def write() -> None:
            await writer.put(key, PNG, metadata={"prompt": "secret plans"})
            await writer.close()

        asyncio.run(write())
        ctx.images = drive_store(stub, folder_id=writer.config.folder_id)  # the ingress's own store
        with TestClient(app) as client:  # one event loop for every request, as the ingress has
            as_alice = {"Authorization": f"Bearer {alice_token}"}
            response = client.get(f"/files/{key}", headers=as_alice)
            assert response.status_code == 200 and response.content == PNG
            assert response.headers["content-type"] == "image/png" and response.headers["cache-control"].startswith(
                "private"
            )
            assert client.get(f"/files/{key}", headers={"Authorization": f"Bearer {bob_token}"}).status_code == 404
            assert client.get(f"/files/{key}").status_code == 401
            record = client.get(f"/files/{key}.json", headers=as_alice)
            assert record.status_code == 404 and "secret" not in record.text
            assert client.get(f"/files/{make_key(alice.user_id)}", headers=as_alice).status_code == 404
            stub.add_rule("server_error")
            failing = client.get(f"/files/{key}", headers=as_alice)
            assert failing.status_code == 500 and failing.json()["error_code"] == "S3_DOWNLOAD_FAILED"
