"""One contract for every task store: the same tests run on SQLite and on a real PostgreSQL.

Claims, leases and the reaper, idempotency keys, the queue bound, cancellation, the webhook
outbox and expiry must behave the same on both, so a cluster behaves like a laptop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from serve_app.api.views import request_fingerprint
from serve_app.errors import Conflict, NotFound, QueueFull, TooManyRequests, Unauthorized
from serve_app.tasks import Database, PostgresDatabase, SqliteDatabase, TaskStore
from serve_app.tasks.api_keys import KeyLimits
from serve_app.tasks.notify import PostgresListener, TaskChanges
from serve_app.tasks.outbox import ReplayLimits
from serve_app.tasks.records import Stage, TaskStatus
from serve_app.tasks.store import Admission, QueueStats
from serve_app.tasks.views import task_view
from testbed.postgres import PostgresServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres"])
def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Database]]:
    """Opens connections to one fresh database of the parametrised kind (several may be open)."""
    opened: list[Database] = []
    if request.param == "sqlite":

        def make() -> Database:
            opened.append(SqliteDatabase(tmp_path / "tasks.db"))
            return opened[-1]

    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        server.truncate()

        def make() -> Database:
            opened.append(PostgresDatabase(server.dsn, max_size=4))
            return opened[-1]

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def store(open_db: Callable[[], Database], clock: Clock) -> TaskStore:
    return TaskStore(open_db(), clock=clock)


def _create(store: TaskStore, task_id: str = "t1", **kw) -> None:
    store.create(task_id, kind="desk", request={"prompt": "desk"}, **kw)


def _claim(store: TaskStore, task_id: str, worker: str = "w", lease_s: float = 30) -> str:
    """Claim `task_id` and return the new lease."""
    record = store.queue.claim(task_id, worker, lease_s)
    assert record is not None and record.lease_owner, f"{task_id} was not claimable"
    return record.lease_owner


def test_submit_claim_complete(store: TaskStore) -> None:
    _create(store, input_key="u/20260101/photo.png")
    record = store.require("t1")
    assert record.status == TaskStatus.queued and record.object_keys == ["u/20260101/photo.png"]
    view = task_view(record)
    assert view.progress is not None and view.progress.stage == Stage.queued

    claimed = store.queue.claim("t1", "w1", lease_s=30)
    assert claimed is not None and claimed.status == TaskStatus.processing and claimed.attempts == 1
    assert store.queue.claim("t1", "w2", lease_s=30) is None, "a processing task is claimed once"

    store.set_progress("t1", "generating", 3, 10)
    progress = task_view(store.require("t1")).progress
    assert progress is not None and (progress.stage, progress.step, progress.total_steps) == ("generating", 3, 10)

    lease = claimed.lease_owner or ""
    assert lease.startswith("w1/"), "a lease names its worker and is new for every claim"
    assert not store.queue.complete("t1", "w1/other", {"caption": "x"}), "only the lease holder completes"
    assert store.queue.complete("t1", lease, {"caption": "a desk"}, object_keys=["u/1.png", "u/1.png.json"])
    done = store.require("t1")
    view = task_view(done)
    assert view.status == TaskStatus.done and view.caption == "a desk" and view.progress is None
    assert done.object_keys == ["u/1.png", "u/1.png.json"]


def test_state_survives_a_new_connection(open_db: Callable[[], Database], clock: Clock) -> None:
    first = TaskStore(open_db(), clock=clock)
    _create(first)
    first.close()
    second = TaskStore(open_db(), clock=clock)
    assert second.require("t1").status == TaskStatus.queued


def test_unknown_task_is_404(store: TaskStore) -> None:
    assert store.get("nope") is None
    with pytest.raises(NotFound):
        store.require("nope")


def test_concurrent_claims_across_connections_give_one_winner(open_db: Callable[[], Database]) -> None:
    stores = [TaskStore(open_db()) for _ in range(4)]
    for i in range(20):
        _create(stores[0], f"t{i}")
    wins: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(20):
            if stores[n].queue.claim(f"t{i}", f"w{n}", 30) is not None:
                with lock:
                    wins.append((n, f"t{i}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(task for _, task in wins) == sorted(f"t{i}" for i in range(20))


def test_concurrent_claim_due_hands_out_disjoint_tasks(open_db: Callable[[], Database]) -> None:
    stores = [TaskStore(open_db()) for _ in range(4)]
    for i in range(40):
        _create(stores[0], f"t{i}", dispatch_grace_s=0.0)
    got: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        while batch := stores[n].queue.claim_due(f"w{n}", 30, limit=3):
            with lock:
                got.extend(record.task_id for record in batch)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"t{i}" for i in range(40)), "every task claimed exactly once"


def test_expired_lease_is_requeued_then_failed(store: TaskStore, clock: Clock) -> None:
    queue = store.queue
    _create(store)
    lease = _claim(store, "t1", "w1", lease_s=10)
    clock.now += 5
    assert queue.heartbeat({"t1": lease}, lease_s=10) == []
    clock.now += 8
    assert queue.reap_expired(max_attempts=2) == ([], []), "a renewed lease is not reaped"

    clock.now += 20
    assert queue.reap_expired(max_attempts=2) == (["t1"], [])
    record = store.require("t1")
    assert record.status == TaskStatus.queued and record.lease_owner is None
    assert not queue.complete("t1", lease, {}), "the old worker cannot complete a requeued task"

    assert [r.task_id for r in queue.claim_due("w2", lease_s=10)] == ["t1"]
    clock.now += 60
    assert queue.reap_expired(max_attempts=2) == ([], ["t1"])
    failed = store.require("t1")
    assert failed.status == TaskStatus.failed and failed.error_code == "WORKER_LOST" and failed.attempts == 2


def test_undispatched_task_becomes_due_after_grace(store: TaskStore, clock: Clock) -> None:
    _create(store, dispatch_grace_s=10)
    assert store.queue.claim_due("sweeper", 30) == []
    clock.now += 11
    assert [r.task_id for r in store.queue.claim_due("sweeper", 30)] == ["t1"]


def test_queue_full_sheds_with_retry_after(store: TaskStore) -> None:
    bound = Admission(max_active=2, retry_after_s=7)
    _create(store, "a", admission=bound)
    _create(store, "b", admission=bound)
    with pytest.raises(QueueFull) as info:
        _create(store, "c", admission=bound)
    assert info.value.status_code == 503 and info.value.headers["Retry-After"] == "7"
    assert store.get("c") is None, "a refused submit changes nothing"
    assert store.queue.complete("a", _claim(store, "a"), {})
    _create(store, "c", admission=bound)


def _submit_concurrently(stores: list[TaskStore], per_store: int, refused: type[Exception], **kw: object) -> list[str]:
    """Each store submits `per_store` tasks from its own thread at once; the ids accepted."""
    accepted: list[str] = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        for i in range(per_store):
            try:
                _create(stores[n], f"s{n}-{i}", **kw)
            except refused:
                continue
            with lock:
                accepted.append(f"s{n}-{i}")

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return accepted


def test_concurrent_submits_never_overshoot_the_queue_bound(open_db: Callable[[], Database]) -> None:
    stores = [TaskStore(open_db()) for _ in range(4)]
    accepted = _submit_concurrently(stores, 10, QueueFull, admission=Admission(max_active=13))
    assert len(accepted) == 13 and stores[0].count_active() == 13


def test_idempotency_key(store: TaskStore) -> None:
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


def test_cancel(store: TaskStore) -> None:
    _create(store, "queued")
    assert store.request_cancel("queued").error_code == "CANCELLED"

    _create(store, "running")
    _create(store, "other")
    lease = _claim(store, "running")
    _claim(store, "other")
    assert store.request_cancel("running").cancel_requested
    assert store.is_cancel_requested("running")
    assert store.queue.cancel_requested(["running", "other", "unknown"]) == ["running"]
    assert store.queue.cancel_requested([]) == []
    assert store.queue.fail("running", "CANCELLED", "The task was cancelled.", lease=lease)
    with pytest.raises(Conflict):
        store.request_cancel("running")


def test_a_cancelled_task_whose_worker_died_is_not_retried(store: TaskStore, clock: Clock) -> None:
    _create(store)
    _claim(store, "t1", lease_s=5)
    store.request_cancel("t1")
    clock.now += 10
    assert store.queue.reap_expired(max_attempts=3) == ([], ["t1"])
    assert store.require("t1").error_code == "CANCELLED"


def test_webhook_claims_are_exclusive(store: TaskStore, clock: Clock) -> None:
    outbox = store.outbox
    _create(store, webhook_url="https://example.com/hook")
    assert outbox.due() == [], "not due before the task ends"
    store.queue.complete("t1", _claim(store, "t1"), {})
    assert outbox.due() == ["t1"]
    assert outbox.claim("t1", lease_s=60) is not None
    assert outbox.claim("t1", lease_s=60) is None
    assert outbox.due() == []
    clock.now += 61
    assert outbox.due() == ["t1"], "a deliverer that died is replaced after its lease"
    outbox.finish("t1", delivered=True, attempts=2)
    record = store.require("t1")
    assert record.webhook_status == "delivered" and record.webhook_attempts == 2
    assert outbox.due() == []


def test_webhook_retries_are_scheduled_in_the_store(store: TaskStore, clock: Clock) -> None:
    outbox = store.outbox
    _create(store, webhook_url="https://example.com/hook")
    store.queue.complete("t1", _claim(store, "t1"), {})
    assert outbox.claim("t1", lease_s=60) is not None
    outbox.retry_later("t1", attempts=1, delay_s=300)  # the receiver was down
    assert outbox.due() == [] and outbox.claim("t1", lease_s=60) is None, "not before its time"
    assert store.expired(older_than_s=0) == [], "a task owing a webhook is never expired"
    clock.now += 301
    assert outbox.due() == ["t1"], "due once its delay has passed, on any runner"
    record = outbox.claim("t1", lease_s=60)
    assert record is not None and record.webhook_attempts == 1 and record.webhook_next_at is not None
    outbox.finish("t1", delivered=True, attempts=1)
    record = store.require("t1")
    assert record.webhook_status == "delivered" and record.webhook_attempts == 2
    outbox.retry_later("t1", attempts=1, delay_s=5)
    assert store.require("t1").webhook_attempts == 2, "a finished delivery is not rescheduled"


def test_webhook_replay_queues_a_finished_tasks_delivery_again(store: TaskStore, clock: Clock) -> None:
    outbox = store.outbox
    _create(store, "t1", webhook_url="https://example.com/hook", key_id="ka")
    _create(store, "plain")
    with pytest.raises(Conflict) as running:
        outbox.replay("t1")
    assert running.value.error_code == "TASK_NOT_FINISHED", "its webhook goes out when it ends"
    store.queue.complete("t1", _claim(store, "t1"), {})
    store.queue.fail("plain", "X", "x", lease=_claim(store, "plain"))
    with pytest.raises(Conflict) as plain:
        outbox.replay("plain")
    assert plain.value.error_code == "NO_WEBHOOK"
    for task_id, key_id in [("nope", None), ("t1", "kb"), ("t1", "")]:
        with pytest.raises(NotFound):
            outbox.replay(task_id, key_id)

    # Delivered, or failed every attempt: pending again, due now, a fresh retry schedule.
    for delivered in (True, False):
        assert outbox.claim("t1", lease_s=60) is not None
        outbox.finish("t1", delivered=delivered, attempts=4)
        assert outbox.due() == []
        record = outbox.replay("t1", "ka")
        assert (record.webhook_status, record.webhook_attempts, record.webhook_next_at) == ("pending", 0, None)
        assert outbox.due() == ["t1"]
    assert store.expired(older_than_s=0) == [], "a replay owed is never expired"

    # Waiting for a retry: due at once. Being delivered: left to that delivery.
    assert outbox.claim("t1", lease_s=60) is not None
    outbox.retry_later("t1", attempts=1, delay_s=300)
    outbox.replay("t1")
    assert outbox.due() == ["t1"]
    claimed = outbox.claim("t1", lease_s=60)
    assert claimed is not None
    outbox.replay("t1")
    assert outbox.due() == [] and outbox.claim("t1", lease_s=60) is None, "one deliverer at a time"
    clock.now += 61
    assert outbox.due() == ["t1"]


def test_a_replay_during_a_delivery_is_sent_after_it(store: TaskStore) -> None:
    """The delivery under way ends after the client's replay was accepted: its outcome must not
    overwrite the replay (the CI run of 2026-12-06 lost one so: delivered, replayed, then marked
    delivered by the first delivery's end)."""
    outbox = store.outbox
    _create(store, "t1", webhook_url="https://example.com/hook")
    store.queue.complete("t1", _claim(store, "t1"), {})
    for end in ("delivered", "failed", "retry"):
        claimed = outbox.claim("t1", lease_s=60)
        assert claimed is not None
        replayed = outbox.replay("t1")  # while that attempt is on the wire
        if end == "retry":
            outbox.retry_later("t1", attempts=1, delay_s=300, replays=claimed.webhook_replays)
        else:
            outbox.finish("t1", delivered=end == "delivered", attempts=1, replays=claimed.webhook_replays)
        record = store.require("t1")
        assert (record.webhook_status, record.webhook_attempts) == ("pending", 0), end
        assert record.webhook_replays == replayed.webhook_replays
        assert outbox.due() == ["t1"], f"{end}: the replay is due at once"
        again = outbox.claim("t1", lease_s=60)
        assert again is not None
        outbox.finish("t1", delivered=True, attempts=1, replays=again.webhook_replays)
        assert store.require("t1").webhook_status == "delivered" and outbox.due() == []
        outbox.replay("t1")  # pending again for the next case


def test_webhook_replays_are_bounded_per_caller_and_per_task(store: TaskStore, clock: Clock) -> None:
    outbox = store.outbox
    for task_id in ("a", "b", "c"):
        _create(store, task_id, webhook_url="https://example.com/hook", key_id="ka")
        store.queue.complete(task_id, _claim(store, task_id), {})
        assert outbox.claim(task_id, lease_s=60) is not None
        outbox.finish(task_id, delivered=True, attempts=1)
    limits = ReplayLimits(per_caller=3, window_s=60, max_per_task=2, task_kept_s=1000)

    def replay(task_id: str, caller: str = "key:ka") -> object:
        return outbox.replay(task_id, "ka", caller=caller, limits=limits)

    replay("a")
    clock.now += 10
    assert replay("a").webhook_replays == 2
    with pytest.raises(TooManyRequests) as per_task:
        replay("a")
    assert per_task.value.error_code == "REPLAY_LIMIT_REACHED"
    assert per_task.value.headers["Retry-After"] == "990", "until the task is surely gone"
    replay("b")  # the caller's third in the minute
    with pytest.raises(TooManyRequests) as per_caller:
        replay("c")
    assert per_caller.value.error_code == "REPLAY_RATE_LIMITED"
    assert per_caller.value.headers["Retry-After"] == "50", "until its first replay leaves the window"
    assert store.require("c").webhook_status == "delivered", "a refused replay changes nothing"
    assert replay("c", caller="addr:192.0.2.7").webhook_status == "pending", "another caller has its own count"
    clock.now += 50
    assert replay("c").webhook_replays == 2, "the window moved on"
    with pytest.raises(TooManyRequests):
        replay("a")  # a task's replays are counted for good
    assert outbox.replay("a").webhook_replays == 3, "no limits given: none applied (operators, tests)"


def test_queue_position_and_eta_from_recent_run_times(store: TaskStore, clock: Clock) -> None:
    for task_id in ("a", "b", "c"):
        _create(store, task_id)
        clock.now += 1
    assert [store.queue_stats(store.require(t)).position for t in ("a", "b", "c")] == [0, 1, 2]
    assert store.queue_stats(store.require("c")).eta_s is None, "no ETA before any task was timed"
    lease = _claim(store, "a")
    clock.now += 10
    store.queue.complete("a", lease, {})  # ran 10 s
    lease_b = _claim(store, "b")
    clock.now += 4
    assert store.queue_stats(store.require("b")) == QueueStats(position=None, eta_s=6.0), "10 s mean, 4 s in"
    assert store.queue_stats(store.require("c")) == QueueStats(position=0, eta_s=20.0), "b's round, then its own"
    store.queue.complete("b", lease_b, {})
    assert store.queue_stats(store.require("b")) == QueueStats()


def test_a_snapshot_reads_one_state_of_the_database(open_db: Callable[[], Database], clock: Clock) -> None:
    store, other = TaskStore(open_db(), clock=clock), TaskStore(open_db(), clock=clock)
    _create(store, "a")
    with store.db.snapshot() as tx:
        assert tx.rows("SELECT task_id FROM tasks") == [{"task_id": "a"}]
        _create(other, "b")  # committed by another connection while the snapshot is open
        assert tx.rows("SELECT task_id FROM tasks") == [{"task_id": "a"}], "one state for every query"
    assert store.count_active() == 2, "the next read sees the commit"


def test_sqlite_reads_answer_while_another_connection_holds_the_write_lock(tmp_path: Path, clock: Clock) -> None:
    """Polls, event streams, the readiness probe and admission's precheck only read: none of them
    may wait for (or hold up) a writer. With no busy timeout, a wait would be an error at once."""
    path = tmp_path / "tasks.db"
    store = TaskStore(SqliteDatabase(path, busy_timeout_s=0), clock=clock)
    for task_id in ("a", "b"):
        _create(store, task_id, idempotency_key=f"k-{task_id}", request_hash="h")
        clock.now += 1
    store.queue.complete("a", _claim(store, "a"), {})
    clock.now += 1
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process's transaction, holding the write lock
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.set_progress("b", "generating", 1, 2)  # a write does wait for it
        assert store.queue_stats(store.require("b")) == QueueStats(position=0, eta_s=0.0)
        assert store.active_counts() == {"queued": 1, "processing": 0} and store.count_active() == 1
        assert store.find_idempotent("k-b", "h") is not None and not store.is_cancel_requested("b")
        assert store.outbox.due() == [] and store.expired(older_than_s=0) != [] and store.keys.list() == []
        store.precheck(Admission(max_active=5), cost=1, key_id=None)
        store.ping()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.close()


def test_active_counts_by_status(store: TaskStore) -> None:
    assert store.active_counts() == {"queued": 0, "processing": 0}
    for task_id in ("a", "b", "c", "d"):
        _create(store, task_id)
    lease = _claim(store, "a")
    _claim(store, "b")
    store.queue.complete("a", lease, {})
    store.request_cancel("d")  # queued: failed at once
    assert store.active_counts() == {"queued": 1, "processing": 1}
    assert store.count_active() == 2


def test_expiry_lists_finished_tasks_with_their_objects(store: TaskStore, clock: Clock) -> None:
    _create(store, "done", input_key="u/in.png")
    store.queue.complete("done", _claim(store, "done"), {}, object_keys=["u/in.png", "u/out.png", "u/out.png.json"])
    _create(store, "hooked", webhook_url="https://example.com/hook")
    store.queue.fail("hooked", "GENERATION_FAILED", "x", lease=_claim(store, "hooked"))
    _create(store, "active")
    clock.now += 100
    expired = store.expired(older_than_s=50, webhook_grace_s=60)
    assert [(e.task_id, e.object_keys) for e in expired] == [("done", ["u/in.png", "u/out.png", "u/out.png.json"])]
    assert store.expired(older_than_s=500) == [], "younger than the retention"
    owing = store.expired(older_than_s=50, webhook_grace_s=40)  # a webhook owed keeps a task only so long
    assert sorted((e.task_id, e.webhook_pending) for e in owing) == [("done", False), ("hooked", True)]
    assert store.delete(["done", "active"]) == 1, "an active task is never deleted"
    assert store.get("done") is None and store.get("active") is not None and store.get("hooked") is not None


# --- races: a lease per claim, cancel against claim -----------------------------------------------


def test_a_stale_worker_can_change_nothing_and_is_told_to_stop(store: TaskStore, clock: Clock) -> None:
    queue = store.queue
    _create(store)
    first = _claim(store, "t1", "w1", lease_s=5)
    clock.now += 10
    assert queue.reap_expired(max_attempts=3) == (["t1"], [])
    second = _claim(store, "t1", "w1", lease_s=30)  # the same replica claims attempt 2
    assert first != second, "every claim has its own lease"
    assert queue.heartbeat({"t1": first}, lease_s=30) == ["t1"], "the stale attempt is told it lost the task"
    assert not queue.complete("t1", first, {"attempt": 1})
    assert not queue.fail("t1", "GENERATION_FAILED", "stale", lease=first)
    assert store.require("t1").status == TaskStatus.processing
    assert queue.heartbeat({"t1": second}, lease_s=30) == []
    assert queue.complete("t1", second, {"attempt": 2})
    assert store.require("t1").result == {"attempt": 2}
    assert queue.heartbeat({"t1": second}, lease_s=30) == ["t1"], "a finished task holds no lease"


def test_cancel_before_the_claim_means_no_claim(store: TaskStore) -> None:
    _create(store)
    assert store.request_cancel("t1").error_code == "CANCELLED"
    assert store.queue.claim("t1", "w", 30) is None
    assert store.queue.claim_due("w", 30, limit=5) == []
    with pytest.raises(Conflict):
        store.request_cancel("t1")


def test_cancel_after_the_claim_reaches_the_worker(store: TaskStore) -> None:
    _create(store)
    lease = _claim(store, "t1")
    record = store.request_cancel("t1")
    assert record.status == TaskStatus.processing and record.cancel_requested
    assert store.queue.cancel_requested(["t1"]) == ["t1"], "the worker's next check sees it"
    assert store.queue.fail("t1", "CANCELLED", "The task was cancelled.", lease=lease)


def test_concurrent_cancel_and_claim_always_stop_the_work(open_db: Callable[[], Database]) -> None:
    """Cancels and claims race on 30 tasks from separate connections. Whatever the interleaving,
    a claimed task is flagged for its worker, and an unclaimed one is failed CANCELLED."""
    claimer, canceller = TaskStore(open_db()), TaskStore(open_db())
    ids = [f"t{i}" for i in range(30)]
    for task_id in ids:
        _create(claimer, task_id)
    leases: dict[str, str] = {}
    start = threading.Barrier(2)

    def claim_all() -> None:
        start.wait()
        for task_id in ids:
            record = claimer.queue.claim(task_id, "w", 30)
            if record is not None:
                leases[task_id] = record.lease_owner or ""

    def cancel_all() -> None:
        start.wait()
        for task_id in reversed(ids):
            canceller.request_cancel(task_id)

    threads = [threading.Thread(target=claim_all), threading.Thread(target=cancel_all)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flagged = set(claimer.queue.cancel_requested(list(leases)))
    for task_id in ids:
        record = claimer.require(task_id)
        if task_id in leases:
            assert task_id in flagged and record.status == TaskStatus.processing, record
        else:
            assert record.status == TaskStatus.failed and record.error_code == "CANCELLED", record


# -- admission by cost and per API key ------------------------------------------------------------


def test_queue_cost_budget_sheds_the_task_that_would_pass_it(store: TaskStore) -> None:
    budget = Admission(max_active_cost=1000, retry_after_s=3)
    _create(store, "a", cost=600, admission=budget)
    with pytest.raises(QueueFull) as info:
        _create(store, "b", cost=500, admission=budget)
    assert info.value.error_code == "QUEUE_COST_FULL" and info.value.headers["Retry-After"] == "3"
    assert store.get("b") is None
    _create(store, "c", cost=400, admission=budget)  # fits exactly
    assert store.queue.complete("a", _claim(store, "a"), {})
    _create(store, "b", cost=500, admission=budget)  # finished work no longer counts


def _finish_overlapping(store: TaskStore, clock: Clock, ids: list[str], interval_s: float, cost: int = 0) -> None:
    """Run `ids` as one backlog: all claimed at once, then done one every `interval_s`."""
    for task_id in ids:
        _create(store, task_id, cost=cost)
    leases = {task_id: _claim(store, task_id) for task_id in ids}
    for task_id in ids:
        clock.now += interval_s
        assert store.queue.complete(task_id, leases[task_id], {})


def test_a_bound_in_time_sheds_what_the_recent_rate_cannot_finish_within_it(store: TaskStore, clock: Clock) -> None:
    bound = Admission(max_predicted_wait_s=3.0)
    for task_id in ("idle1", "idle2", "idle3", "idle4", "idle5", "idle6"):  # one at a time, idle between
        _create(store, task_id, admission=bound)
        assert store.queue.complete(task_id, _claim(store, task_id), {})
        clock.now += 5
    for task_id in ("q1", "q2", "q3", "q4", "q5"):  # no backlog seen yet: no prediction, no refusal
        _create(store, task_id, admission=bound)
    for task_id in ("q1", "q2", "q3", "q4", "q5"):
        store.request_cancel(task_id)
    _finish_overlapping(store, clock, ["b1", "b2", "b3", "b4", "b5", "b6"], interval_s=1.0)  # 5 busy gaps of 1 s
    for task_id in ("a", "b", "c"):  # done in 1, 2 and 3 s at that rate
        _create(store, task_id, admission=bound)
    with pytest.raises(QueueFull) as info:  # 4 s
        _create(store, "d", admission=bound)
    assert info.value.error_code == "QUEUE_WAIT_TOO_LONG" and info.value.headers["Retry-After"] == "1"
    assert store.get("d") is None
    with pytest.raises(QueueFull):
        store.precheck(bound, cost=0, key_id=None)
    store.request_cancel("a")
    _create(store, "d", admission=bound)  # one fewer ahead of it
    with pytest.raises(QueueFull) as info:
        _create(store, "e", admission=Admission(max_predicted_wait_s=1.5))  # 4 s: the excess, rounded up
    assert info.value.headers["Retry-After"] == "3"


def test_a_bound_in_time_weighs_tasks_by_their_pixel_steps(store: TaskStore, clock: Clock) -> None:
    bound = Admission(max_predicted_wait_s=3.0)
    _finish_overlapping(store, clock, [f"w{i}" for i in range(6)], interval_s=1.0, cost=100)  # 100 a second
    _create(store, "big", cost=250, admission=bound)  # done in 2.5 s
    _create(store, "small", cost=50, admission=bound)  # 3.0 s
    with pytest.raises(QueueFull) as info:  # one more task, however small, is past 3 s
        _create(store, "tiny", cost=1, admission=bound)
    assert info.value.error_code == "QUEUE_WAIT_TOO_LONG" and store.get("tiny") is None


def test_key_in_flight_and_cost_limits_are_429_per_key(store: TaskStore) -> None:
    limits = Admission(limits=KeyLimits(max_in_flight=2, max_cost_in_flight=100), retry_after_s=4)
    _create(store, "a1", key_id="ka", cost=10, admission=limits)
    _create(store, "a2", key_id="ka", cost=10, admission=limits)
    with pytest.raises(TooManyRequests) as info:
        _create(store, "a3", key_id="ka", cost=10, admission=limits)
    assert info.value.status_code == 429 and info.value.error_code == "TOO_MANY_TASKS"
    assert info.value.headers["Retry-After"] == "4"
    _create(store, "b1", key_id="kb", cost=90, admission=limits)  # another key is not held back
    with pytest.raises(TooManyRequests) as info:
        _create(store, "b2", key_id="kb", cost=20, admission=limits)
    assert info.value.error_code == "KEY_BUDGET_EXCEEDED"
    assert store.get("a3") is None and store.get("b2") is None
    store.request_cancel("a1", "ka")
    _create(store, "a3", key_id="ka", cost=10, admission=limits)


def test_key_rate_limit_counts_a_rolling_minute(store: TaskStore, clock: Clock) -> None:
    rate = Admission(limits=KeyLimits(requests_per_minute=2))
    _create(store, "r1", key_id="k", admission=rate)
    clock.now += 20
    _create(store, "r2", key_id="k", admission=rate)
    clock.now += 10
    with pytest.raises(TooManyRequests) as info:
        _create(store, "r3", key_id="k", admission=rate)
    assert info.value.error_code == "RATE_LIMITED"
    assert info.value.headers["Retry-After"] == "30", "until the oldest of the minute ages out"
    store.precheck(Admission(limits=KeyLimits(requests_per_minute=3)), 0, "k")  # a looser key passes
    clock.now += 31
    _create(store, "r3", key_id="k", admission=rate)


def test_concurrent_submits_never_overshoot_a_keys_limit(open_db: Callable[[], Database]) -> None:
    stores = [TaskStore(open_db()) for _ in range(4)]
    limits = Admission(limits=KeyLimits(max_in_flight=5))
    accepted = _submit_concurrently(stores, 6, TooManyRequests, key_id="k", admission=limits)
    assert len(accepted) == 5


def test_a_task_is_visible_and_cancellable_only_by_its_key(store: TaskStore) -> None:
    _create(store, "mine", key_id="ka")
    assert store.owned("mine", "ka").key_id == "ka"
    assert store.owned("mine", None).task_id == "mine", "auth off: every task"
    for other in ("kb", ""):
        with pytest.raises(NotFound):
            store.owned("mine", other)
        with pytest.raises(NotFound):
            store.request_cancel("mine", other)
    assert store.get("mine").status == TaskStatus.queued, "another key's cancel changed nothing"
    assert store.request_cancel("mine", "ka").status == TaskStatus.failed


# -- API keys ---------------------------------------------------------------------------------------


def test_api_keys_are_hashed_at_rest_and_authenticate(store: TaskStore) -> None:
    key, token = store.keys.create("ci", user_id="team a", limits=KeyLimits(max_in_flight=3))
    assert token.startswith(f"igs_{key.key_id}_") and key.user_id == "team_a"
    stored = store.db.read("SELECT * FROM api_keys")
    assert len(stored) == 1 and token.split("_", 2)[2] not in repr(stored), "only the hash is kept"
    found = store.keys.authenticate(token)
    assert found.key_id == key.key_id and found.limits.max_in_flight == 3
    assert store.keys.authenticate(f"  {token} ").key_id == key.key_id
    assert store.keys.create("second")[0].user_id.startswith("key-"), "its own user id by default"


@pytest.mark.parametrize(
    "token, code",
    [
        (None, "UNAUTHORIZED"),
        ("", "UNAUTHORIZED"),
        ("not-a-key", "INVALID_API_KEY"),
        ("igs_0123456789abcdef_" + "A" * 43, "INVALID_API_KEY"),
    ],
)
def test_missing_malformed_and_unknown_keys_are_401(store: TaskStore, token: str | None, code: str) -> None:
    with pytest.raises(Unauthorized) as info:
        store.keys.authenticate(token)
    assert info.value.status_code == 401 and info.value.error_code == code
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert token is None or token == "" or token not in info.value.message


def test_a_wrong_secret_and_a_revoked_key_are_401(store: TaskStore) -> None:
    key, token = store.keys.create("ci")
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(Unauthorized):
        store.keys.authenticate(forged)
    assert store.keys.revoke(key.key_id).revoked
    assert store.keys.revoke(key.key_id).revoked, "idempotent"
    with pytest.raises(Unauthorized) as info:
        store.keys.authenticate(token)
    assert info.value.error_code == "API_KEY_REVOKED"
    assert store.keys.list() == [] and [k.key_id for k in store.keys.list(include_revoked=True)] == [key.key_id]
    with pytest.raises(NotFound):
        store.keys.revoke("0000000000000000")


# --- the texture cache --------------------------------------------------------------------------


def test_texture_cache_remembers_the_first_image_and_goes_with_its_task(store: TaskStore, clock: Clock) -> None:
    _create(store, "made")
    entry = {"url": "http://x/a.png", "prompt": "macro photo of navy nylon"}
    store.cache_textures("made", {"h1": ("u/20261122/a.png", entry), "h2": ("u/20261122/b.png", {"url": "b"})})
    store.cache_textures("made", {"h1": ("u/20261122/other.png", {"url": "other"})})  # a racing task: first wins
    assert store.cached_textures(["h1", "h3"]) == {"h1": entry}
    store.queue.complete("made", _claim(store, "made"), {}, object_keys=["u/20261122/a.png"])
    _create(store, "running")
    store.cache_textures("running", {"h4": ("k", {"url": "k"})})
    clock.now += 100
    assert store.delete(["made", "running"]) == 1
    assert store.cached_textures(["h1", "h2", "h4"]) == {"h4": {"url": "k"}}, "only the deleted task's rows go"


# -- pushed changes ---------------------------------------------------------------------------------


async def test_every_change_of_a_task_is_pushed_to_listening_processes(open_db: Callable[[], Database]) -> None:
    """What a waiting route or an event stream relies on: each write that changes a task (insert,
    claim, progress, completion; a reaped or failed one too) reaches a listener as it commits, on
    SQLite (node-local datagrams) and PostgreSQL (LISTEN/NOTIFY) alike; other tasks' changes do not
    wake a waiter. No wait here is near its bound, which only keeps a broken push from hanging."""
    store = TaskStore(open_db())
    changes = TaskChanges()
    listener = store.db.listener()
    await listener.start(changes.deliver)
    try:
        if isinstance(listener, PostgresListener):
            await asyncio.wait_for(listener.connected.wait(), 30)
        with changes.watch("t1") as changed:
            await asyncio.to_thread(_create, store)
            assert await changes.wait(changed, 30), "the insert"
            lease = await asyncio.to_thread(_claim, store, "t1")
            assert await changes.wait(changed, 30), "the claim"
            await asyncio.to_thread(_create, store, "other")
            await asyncio.to_thread(store.set_progress, "t1", "generating", 1, 2)
            assert await changes.wait(changed, 30), "the progress"
            assert changed.is_set() is False
            await asyncio.to_thread(store.queue.complete, "t1", lease, {"ok": True})
            assert await changes.wait(changed, 30), "the completion"
        assert changes.pushed >= 5
    finally:
        await listener.close()


def test_progress_from_a_lease_that_no_longer_holds_the_task_changes_nothing(open_db: Callable[[], Database]) -> None:
    """A worker whose task was requeued (its lease lost) and claimed again by another must not write
    the new attempt's progress."""
    store = TaskStore(open_db())
    _create(store)
    old = _claim(store, "t1", worker="a", lease_s=30)
    store.set_progress("t1", "generating", 3, 8, lease=old)
    with store.db.tx() as tx:  # requeued, as the reaper does with a lease that ran out
        tx.run("UPDATE tasks SET status = 'queued', lease_owner = NULL WHERE task_id = 't1'")
    new = _claim(store, "t1", worker="b", lease_s=30)
    store.set_progress("t1", "captioning", lease=new)
    store.set_progress("t1", "generating", 7, 8, lease=old)
    record = store.require("t1")
    assert record.progress is not None and record.progress.stage == "captioning" and record.progress.step is None
