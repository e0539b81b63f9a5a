"""Retention: expired tasks go with their photo, image and .json record; nothing else goes.

Runs on both task stores (SQLite, a real PostgreSQL) and both image stores (local files, S3 on a
real SeaweedFS), since a cluster runs PostgreSQL + S3 and a laptop SQLite + local files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app.errors import NotFound
from serve_app.settings import Settings
from serve_app.storage import LocalImageStore, S3ImageStore
from serve_app.storage.base import ImageStore
from serve_app.storage.config import LocalStorageConfig, S3StorageConfig
from serve_app.tasks import PostgresDatabase, SqliteDatabase, TaskStore
from serve_app.tasks.config import RetentionConfig
from serve_app.tasks.retention import RetentionSweeper
from testbed.postgres import PostgresServer
from testbed.seaweed import SeaweedServer

DAY = 24 * 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Counted:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def expired(self, tasks: int, objects: int) -> None:
        self.calls.append((tasks, objects))


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedServer]:
    with SeaweedServer() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
async def images(request: pytest.FixtureRequest, tmp_path: Path) -> ImageStore:
    if request.param == "local":
        store: ImageStore = LocalImageStore(
            LocalStorageConfig(root=str(tmp_path / "images"), public_base_url="http://h")
        )
    else:
        server: SeaweedServer = request.getfixturevalue("seaweed")
        cfg = S3StorageConfig(
            bucket="retention", prefix=tmp_path.name, endpoint_url=server.endpoint_url, create_bucket=True
        )
        store = S3ImageStore(
            cfg, Settings(aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
        )
    await store.start()
    return store


@pytest.fixture(params=["sqlite", "postgres"])
def tasks(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[TaskStore]:
    if request.param == "sqlite":
        store = TaskStore(SqliteDatabase(tmp_path / "tasks.db"), clock=clock)
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        server.truncate()
        store = TaskStore(PostgresDatabase(server.dsn), clock=clock)
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _finished_task(tasks: TaskStore, images: ImageStore, task_id: str, **kw: object) -> list[str]:
    photo, out = f"u/20260101/{task_id}-in.png", f"u/20260101/{task_id}-out.png"
    await images.put(photo, b"photo")
    await images.put(out, b"image", metadata={"task_id": task_id})
    tasks.create(task_id, kind="desk", request={}, input_key=photo, **kw)  # type: ignore[arg-type]
    record = tasks.queue.claim(task_id, "w", 30)
    assert record is not None and record.lease_owner
    tasks.queue.complete(task_id, record.lease_owner, {}, object_keys=[photo, out, out + ".json"])
    return [photo, out, out + ".json"]


async def _exists(images: ImageStore, key: str) -> bool:
    try:
        await images.get(key)
        return True
    except NotFound:
        return False


async def test_expired_tasks_go_with_their_objects(tasks: TaskStore, images: ImageStore, clock: Clock) -> None:
    old = await _finished_task(tasks, images, "old")
    hooked = await _finished_task(tasks, images, "hooked", webhook_url="https://example.com/hook")
    clock.now += 2 * DAY
    young = await _finished_task(tasks, images, "young")
    tasks.create("active", kind="desk", request={})
    metrics = Counted()
    cfg = RetentionConfig(ttl_s=DAY, batch_size=1, sweep_orphans=False)  # batch 1: the loop pages

    report = await RetentionSweeper(tasks, images, cfg, metrics, clock=clock).sweep()

    assert (report.tasks, report.objects) == (1, 3) and metrics.calls == [(1, 3)]
    assert tasks.get("old") is None
    assert [await _exists(images, key) for key in old] == [False, False, False]
    for kept in ("hooked", "young", "active"):
        assert tasks.get(kept) is not None, f"{kept} must stay"
    assert all([await _exists(images, key) for key in hooked + young]), "a pending webhook keeps its task"
    again = await RetentionSweeper(tasks, images, cfg, clock=clock).sweep()
    assert (again.tasks, again.objects) == (0, 0)


async def test_a_task_whose_webhook_keeps_failing_still_expires(
    tasks: TaskStore, images: ImageStore, clock: Clock
) -> None:
    keys = await _finished_task(tasks, images, "hooked", webhook_url="https://example.com/hook")
    cfg = RetentionConfig(ttl_s=DAY, webhook_grace_s=DAY / 2, sweep_orphans=False)
    sweeper = RetentionSweeper(tasks, images, cfg, clock=clock)
    for _ in range(3):  # the receiver is down: every attempt fails, and the client keeps replaying it
        assert tasks.outbox.claim("hooked", lease_s=60) is not None
        tasks.outbox.retry_later("hooked", attempts=1, delay_s=300)
        clock.now += DAY / 2 - 1
        tasks.outbox.replay("hooked")
    assert tasks.require("hooked").webhook_status == "pending"
    assert (await sweeper.sweep()).tasks == 0, "past ttl_s, still within webhook_grace_s: kept"
    clock.now += 4
    report = await sweeper.sweep()
    assert (report.tasks, report.objects) == (1, 3), "past ttl_s + webhook_grace_s: gone, delivery or not"
    assert tasks.get("hooked") is None and [await _exists(images, key) for key in keys] == [False] * 3


async def test_orphans_older_than_the_retention_go(tmp_path: Path, clock: Clock) -> None:
    images = LocalImageStore(LocalStorageConfig(root=str(tmp_path), public_base_url="http://h"))
    orphan, fresh = f"u/20260101/{'a' * 32}.png", f"u/20260102/{'b' * 32}.png"
    await images.put(orphan, b"x", metadata={})
    await images.put(fresh, b"y")
    await images.put("imports/customer-photo.jpg", b"z")  # not a key this app made: never swept
    old = clock.now - 3 * DAY
    for name in (orphan, orphan + ".json", "imports/customer-photo.jpg"):
        os.utime(tmp_path / name, (old, old))
    tasks = TaskStore(SqliteDatabase(tmp_path / "tasks.db"), clock=clock)
    report = await RetentionSweeper(tasks, images, RetentionConfig(ttl_s=DAY), clock=clock).sweep()
    assert report.orphans == 2
    assert not (tmp_path / "u/20260101").exists(), "the emptied day folder goes too"
    assert (tmp_path / fresh).exists() and (tmp_path / "imports/customer-photo.jpg").exists()


async def test_s3_orphan_sweep_uses_last_modified(seaweed: SeaweedServer, tmp_path: Path, clock: Clock) -> None:
    cfg = S3StorageConfig(bucket="retention", prefix="orphans", endpoint_url=seaweed.endpoint_url, create_bucket=True)
    images = S3ImageStore(cfg, Settings(aws_access_key_id=seaweed.access_key, aws_secret_access_key=seaweed.secret_key))
    await images.start()
    orphan = f"u/20260101/{'c' * 32}.png"
    await images.put(orphan, b"x")
    await images.put("imports/customer-photo.jpg", b"z")
    assert await images.delete_older_than(clock.now - DAY) == 0, "younger than the retention: kept"
    assert await images.delete_older_than(clock.now + 60) == 1
    assert not await _exists(images, orphan) and await _exists(images, "imports/customer-photo.jpg")
