"""Task lifecycle on the SQLite store: claims, leases, the reaper, idempotency, cancel, webhooks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from serve_app.errors import Conflict, NotFound, QueueFull
from serve_app.protocol import Stage, TaskStatus
from serve_app.tasks import SqliteTaskStore, request_fingerprint


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SqliteTaskStore:
    return SqliteTaskStore(tmp_path / "tasks.db", clock=clock)


def _create(store: SqliteTaskStore, task_id: str = "t1", **kw) -> None:
    store.create(task_id, kind="desk", request={"prompt": "desk"}, **kw)


def test_submit_claim_complete(store: SqliteTaskStore) -> None:
    _create(store)
    record = store.require("t1")
    assert record.status == TaskStatus.queued
    assert record.to_response().progress is not None and record.to_response().progress.stage == Stage.queued

    claimed = store.claim("t1", "w1", lease_s=30)
    assert claimed is not None and claimed.status == TaskStatus.processing and claimed.attempts == 1
    assert store.claim("t1", "w2", lease_s=30) is None, "a processing task is claimed once"

    store.set_progress("t1", "generating", 3, 10)
    progress = store.require("t1").to_response().progress
    assert progress is not None and (progress.stage, progress.step, progress.total_steps) == ("generating", 3, 10)

    assert not store.complete("t1", "w2", {"caption": "x"}), "only the lease owner completes"
    assert store.complete("t1", "w1", {"caption": "a desk"})
    done = store.require("t1").to_response()
    assert done.status == TaskStatus.done and done.caption == "a desk" and done.progress is None


def test_state_survives_a_new_connection(tmp_path: Path, clock: Clock) -> None:
    first = SqliteTaskStore(tmp_path / "tasks.db", clock=clock)
    _create(first)
    first.close()
    second = SqliteTaskStore(tmp_path / "tasks.db", clock=clock)
    assert second.require("t1").status == TaskStatus.queued


def test_unknown_task_is_404(store: SqliteTaskStore) -> None:
    assert store.get("nope") is None
    with pytest.raises(NotFound):
        store.require("nope")


def test_concurrent_claims_across_connections_give_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    stores = [SqliteTaskStore(path) for _ in range(4)]
    for i in range(20):
        _create(stores[0], f"t{i}")
    wins: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(20):
            if stores[n].claim(f"t{i}", f"w{n}", 30) is not None:
                with lock:
                    wins.append((n, f"t{i}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(task for _, task in wins) == sorted(f"t{i}" for i in range(20))


def test_expired_lease_is_requeued_then_failed(store: SqliteTaskStore, clock: Clock) -> None:
    _create(store)
    assert store.claim("t1", "w1", lease_s=10)
    clock.now += 5
    store.heartbeat(["t1"], "w1", lease_s=10)
    clock.now += 8
    assert store.reap_expired(max_attempts=2) == ([], []), "a renewed lease is not reaped"

    clock.now += 20
    assert store.reap_expired(max_attempts=2) == (["t1"], [])
    record = store.require("t1")
    assert record.status == TaskStatus.queued and record.lease_owner is None
    assert not store.complete("t1", "w1", {}), "the old worker cannot complete a requeued task"

    assert [r.task_id for r in store.claim_due("w2", lease_s=10)] == ["t1"]
    clock.now += 60
    assert store.reap_expired(max_attempts=2) == ([], ["t1"])
    failed = store.require("t1")
    assert failed.status == TaskStatus.failed and failed.error_code == "WORKER_LOST" and failed.attempts == 2


def test_undispatched_task_becomes_due_after_grace(store: SqliteTaskStore, clock: Clock) -> None:
    _create(store, dispatch_grace_s=10)
    assert store.claim_due("sweeper", 30) == []
    clock.now += 11
    assert [r.task_id for r in store.claim_due("sweeper", 30)] == ["t1"]


def test_queue_full_sheds_with_retry_after(store: SqliteTaskStore) -> None:
    _create(store, "a", max_active=2)
    _create(store, "b", max_active=2)
    with pytest.raises(QueueFull) as info:
        _create(store, "c", max_active=2, retry_after_s=7)
    assert info.value.status_code == 503 and info.value.headers["Retry-After"] == "7"
    assert store.get("c") is None, "a refused submit changes nothing"
    assert store.claim("a", "w", 30) and store.complete("a", "w", {})
    _create(store, "c", max_active=2)


def test_idempotency_key(store: SqliteTaskStore) -> None:
    h1 = request_fingerprint({"prompt": "a"})
    h2 = request_fingerprint({"prompt": "b"})
    first, created = store.create("t1", kind="desk", request={}, idempotency_key="k", request_hash=h1)
    assert created
    again, created_again = store.create("t2", kind="desk", request={}, idempotency_key="k", request_hash=h1)
    assert not created_again and again.task_id == "t1"
    assert store.find_idempotent("k", h1) is not None
    with pytest.raises(Conflict):
        store.create("t3", kind="desk", request={}, idempotency_key="k", request_hash=h2)
    with pytest.raises(Conflict):
        store.find_idempotent("k", h2)
    assert request_fingerprint({"a": 1, "b": 2}) == request_fingerprint({"b": 2, "a": 1})
    assert request_fingerprint({"a": 1}, b"img1") != request_fingerprint({"a": 1}, b"img2")


def test_cancel(store: SqliteTaskStore) -> None:
    _create(store, "queued")
    assert store.request_cancel("queued").error_code == "CANCELLED"

    _create(store, "running")
    store.claim("running", "w", 30)
    assert store.request_cancel("running").cancel_requested
    assert store.is_cancel_requested("running")
    assert store.fail("running", "CANCELLED", "The task was cancelled.", owner="w")
    with pytest.raises(Conflict):
        store.request_cancel("running")


def test_webhook_claims_are_exclusive(store: SqliteTaskStore, clock: Clock) -> None:
    _create(store, webhook_url="https://example.com/hook")
    assert store.due_webhooks() == [], "not due before the task ends"
    store.claim("t1", "w", 30)
    store.complete("t1", "w", {})
    assert store.due_webhooks() == ["t1"]
    assert store.claim_webhook("t1", lease_s=60) is not None
    assert store.claim_webhook("t1", lease_s=60) is None
    assert store.due_webhooks() == []
    clock.now += 61
    assert store.due_webhooks() == ["t1"], "a deliverer that died is replaced after its lease"
    store.finish_webhook("t1", delivered=True, attempts=2)
    record = store.require("t1")
    assert record.webhook_status == "delivered" and record.webhook_attempts == 2
    assert store.due_webhooks() == []


def test_purge_keeps_active_and_pending_webhooks(store: SqliteTaskStore, clock: Clock) -> None:
    _create(store, "done")
    store.claim("done", "w", 30)
    store.complete("done", "w", {})
    _create(store, "active")
    clock.now += 100
    assert store.purge_finished(older_than_s=50) == 1
    assert store.get("done") is None and store.get("active") is not None
