"""`s3://` initial images over HTTP: the ingress in-process (TestClient) over a real SeaweedFS.

With API keys on, a key names only objects under its own folder of the input prefixes
(`uploads/<its user id>/...`), never another key's uploads; with keys off, any object under the
input prefixes, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_app.api.deps import IngressContext
from serve_app.ingress import app
from serve_app.settings import Settings
from serve_app.storage import S3ImageStore
from serve_app.storage.config import S3StorageConfig
from testbed.seaweed import SeaweedServer
from tests.support.ingress import ingress_context, png

BUCKET = "imagegen-inputs"
UPLOADS = ("uploads/alice/desk.png", "uploads/bob/desk.png", "uploads/desk.png", "uploads/alice-2/desk.png")


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedServer]:
    with SeaweedServer() as server:
        yield server


def _on_s3(ctx: IngressContext, server: SeaweedServer) -> S3ImageStore:
    """The context's image store swapped for the bucket, with every upload of UPLOADS in it."""
    cfg = S3StorageConfig.model_validate(server.storage_config(BUCKET))
    store = S3ImageStore(cfg, Settings(aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key))
    asyncio.run(store.start())
    for key in UPLOADS:
        store.client.put_object(Bucket=BUCKET, Key=key, Body=png(), ContentType="image/png")
    ctx.images = store
    ctx.args = ctx.args.model_copy(update={"storage": cfg})
    return store


@pytest.fixture
def keyed(tmp_path: Path, seaweed: SeaweedServer) -> Iterator[IngressContext]:
    with ingress_context(tmp_path, {"max_active": 50}, auth={"enabled": True}) as ctx:
        _on_s3(ctx, seaweed)
        yield ctx


def _submit(client: TestClient, key: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    response = client.post(
        "/v1/generate", json={"prompt": "a desk", "initial_image_url": f"s3://{BUCKET}/{key}"}, headers=headers
    )
    return response.status_code, response.json()


def test_with_keys_on_a_key_names_only_its_own_uploads(keyed: IngressContext) -> None:
    client = TestClient(app)
    _, token = keyed.tasks.keys.create("alice", user_id="alice")
    alice = {"Authorization": f"Bearer {token}"}

    status, body = _submit(client, "uploads/alice/desk.png", alice)
    assert status == 202, body
    record = keyed.tasks.require(body["task_id"])
    assert record.initial_image_url == f"s3://{BUCKET}/uploads/alice/desk.png"
    assert record.input_key and record.input_key.startswith("alice/"), "the copy is stored under the key's user"

    for elsewhere, code in (
        ("uploads/bob/desk.png", "INVALID_URL"),  # another key's upload
        ("uploads/desk.png", "INVALID_URL"),  # the shared prefix itself
        ("uploads/alice-2/desk.png", "INVALID_URL"),  # a folder whose name only starts like the key's
        (record.input_key, "INVALID_URL"),  # an image the service stored (not under an input prefix)
        ("uploads/alice/../bob/desk.png", "INVALID_KEY"),  # a way out of the folder
    ):
        status, body = _submit(client, elsewhere, alice)
        assert (status, body.get("error_code")) == (422, code), (elsewhere, body)
        assert "bob" not in body["message"]
    assert "s3://imagegen-inputs/uploads/alice/" in _submit(client, "uploads/bob/desk.png", alice)[1]["message"]
    assert keyed.tasks.count_active() == 1, "a refused URL makes no task"


def test_with_keys_off_any_upload_under_the_input_prefixes_is_taken(tmp_path: Path, seaweed: SeaweedServer) -> None:
    with ingress_context(tmp_path, {"max_active": 50}) as ctx:
        _on_s3(ctx, seaweed)
        client = TestClient(app)
        for key in ("uploads/alice/desk.png", "uploads/bob/desk.png", "uploads/desk.png"):
            assert _submit(client, key)[0] == 202, key
        status, body = _submit(client, "alice/20260101/x.png")
        assert status == 422 and body["error_code"] == "INVALID_URL"
