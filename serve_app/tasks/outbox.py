"""The webhook outbox: finished tasks whose result still has to be POSTed to their webhook_url.

A task with a webhook_url is born `pending`. When it ends, one deliverer at a time (on any node)
takes a delivery lease for one attempt, and marks it delivered or failed, or schedules the next
attempt (`retry_later`): the retry schedule lives here, not in a sleeping coroutine, so a receiver
may stay down for hours across runner restarts. A deliverer that dies leaves the lease to expire,
and the next sweep delivers it again (at least once, same id). `replay` puts a finished task's
delivery back in the outbox on a client's request (same id again, a fresh retry schedule), within
`ReplayLimits`: each replay makes the server POST to a URL the caller chose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from serve_app.errors import Conflict, NotFound, TooManyRequests
from serve_app.tasks.db import Database, Tx
from serve_app.tasks.records import FINISHED, TaskRecord


@dataclass(frozen=True)
class ReplayLimits:
    """How often webhooks may be replayed: `per_caller` replays by one caller within `window_s`
    (429 REPLAY_RATE_LIMITED, Retry-After: until the oldest leaves the window), and
    `max_per_task` replays of one task in all (429 REPLAY_LIMIT_REACHED, Retry-After: until the
    task is surely gone, `task_kept_s` after it ended). None: no such bound."""

    per_caller: int | None = None
    window_s: float = 60.0
    max_per_task: int | None = None
    task_kept_s: float = 0.0

    def check(self, tx: Tx, record: TaskRecord, caller: str, now: float) -> None:
        if self.max_per_task is not None and record.webhook_replays >= self.max_per_task:
            gone_in = (record.finished_at or now) + self.task_kept_s - now
            raise TooManyRequests(
                f"Task {record.task_id}'s webhook was replayed {record.webhook_replays} times, the most one task "
                "may be; it is not replayed again (Retry-After: when the task expires).",
                error_code="REPLAY_LIMIT_REACHED",
                retry_after_s=gone_in,
            )
        if self.per_caller is None:
            return
        row = tx.one(
            "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM webhook_replay_log WHERE caller = ? AND at > ?",
            (caller, now - self.window_s),
        )
        if row and int(row["n"] or 0) >= self.per_caller:
            raise TooManyRequests(
                f"At most {self.per_caller} webhook replays per {self.window_s:g} s per caller; retry later.",
                error_code="REPLAY_RATE_LIMITED",
                retry_after_s=float(row["oldest"]) + self.window_s - now,
            )

    def record(self, tx: Tx, caller: str, task_id: str, now: float) -> None:
        """Count this replay against `caller`, and forget the ones out of every window."""
        if self.per_caller is None:
            return
        tx.run("DELETE FROM webhook_replay_log WHERE at <= ?", (now - self.window_s,))
        tx.run("INSERT INTO webhook_replay_log (caller, task_id, at) VALUES (?, ?, ?)", (caller, task_id, now))


class WebhookOutbox:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    def claim(self, task_id: str, lease_s: float) -> TaskRecord | None:
        """Take the right to deliver a finished task's webhook; None if not pending or taken."""
        now = self._clock()
        with self.db.tx() as tx:
            changed = tx.run(
                "UPDATE tasks SET webhook_lease_expires_at = ? WHERE task_id = ? AND webhook_status = 'pending'"
                " AND status IN (?, ?) AND (webhook_lease_expires_at IS NULL OR webhook_lease_expires_at < ?)"
                " AND (webhook_next_at IS NULL OR webhook_next_at <= ?)",
                (now + lease_s, task_id, *FINISHED, now, now),
            )
            if changed != 1:
                return None
            row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRecord.from_row(row) if row else None

    def due(self, limit: int = 16) -> list[str]:
        """Finished tasks whose webhook is still pending, whose next attempt is due, and that nobody is
        delivering."""
        now = self._clock()
        rows = self.db.read(
            "SELECT task_id FROM tasks WHERE webhook_status = 'pending' AND status IN (?, ?)"
            " AND (webhook_lease_expires_at IS NULL OR webhook_lease_expires_at < ?)"
            " AND (webhook_next_at IS NULL OR webhook_next_at <= ?) ORDER BY finished_at LIMIT ?",
            (*FINISHED, now, now, limit),
        )
        return [row["task_id"] for row in rows]

    def finish(self, task_id: str, delivered: bool, attempts: int, replays: int | None = None) -> None:
        """End a claimed delivery. `replays`: the task's `webhook_replays` when it was claimed; a
        replay since then wins (the task stays pending, its lease given back, so the replay is sent
        after this delivery) instead of being overwritten by this delivery's outcome."""
        with self.db.tx() as tx:
            changed = tx.run(
                "UPDATE tasks SET webhook_status = ?, webhook_attempts = webhook_attempts + ?,"
                " webhook_lease_expires_at = NULL WHERE task_id = ?" + self._unreplayed(replays),
                ("delivered" if delivered else "failed", attempts, task_id, *self._args(replays)),
            )
            if changed == 0 and replays is not None:
                self._give_back(tx, task_id)

    def retry_later(self, task_id: str, attempts: int, delay_s: float, replays: int | None = None) -> None:
        """Count `attempts` more failed attempts and let the next one be claimed after `delay_s`
        (unless the task was replayed since its claim: see `finish`)."""
        with self.db.tx() as tx:
            changed = tx.run(
                "UPDATE tasks SET webhook_attempts = webhook_attempts + ?, webhook_next_at = ?,"
                " webhook_lease_expires_at = NULL WHERE task_id = ? AND webhook_status = 'pending'"
                + self._unreplayed(replays),
                (attempts, self._clock() + delay_s, task_id, *self._args(replays)),
            )
            if changed == 0 and replays is not None:
                self._give_back(tx, task_id)

    @staticmethod
    def _unreplayed(replays: int | None) -> str:
        return "" if replays is None else " AND webhook_replays = ?"

    @staticmethod
    def _args(replays: int | None) -> tuple[int, ...]:
        return () if replays is None else (replays,)

    @staticmethod
    def _give_back(tx: Tx, task_id: str) -> None:
        tx.run("UPDATE tasks SET webhook_lease_expires_at = NULL WHERE task_id = ?", (task_id,))

    def replay(
        self,
        task_id: str,
        key_id: str | None = None,
        *,
        caller: str = "",
        limits: ReplayLimits | None = None,
    ) -> TaskRecord:
        """Queue a finished task's webhook for delivery again: pending, due now, with a fresh retry
        schedule (attempts counted from 0); the maintenance pass of any runner delivers it, under
        the same message id. A delivery already under way is left to finish, and the replay is
        sent after it (its `finish` sees the replay and leaves the task pending). With `key_id`,
        only that key's task: any other is 404, as for no task. 409 while the task runs, or when it
        has no webhook_url; 429 past `limits` (counted for `caller`), which
        are checked and counted in one serialised step, as admission is."""
        now = self._clock()
        with self.db.tx() as tx:
            self.db.lock_admission(tx)
            row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
            if row is None or (key_id is not None and row["key_id"] != key_id):
                raise NotFound(f"Task {task_id} not found.", error_code="TASK_NOT_FOUND")
            record = TaskRecord.from_row(row)
            if not record.webhook_url:
                raise Conflict(f"Task {task_id} has no webhook_url.", error_code="NO_WEBHOOK")
            if not record.finished:
                raise Conflict(
                    f"Task {task_id} has not finished ({record.status}); its webhook is sent when it does.",
                    error_code="TASK_NOT_FINISHED",
                )
            if limits is not None:
                limits.check(tx, record, caller, now)
                limits.record(tx, caller, task_id, now)
            tx.run(
                "UPDATE tasks SET webhook_status = 'pending', webhook_attempts = 0, webhook_next_at = NULL,"
                " webhook_replays = webhook_replays + 1 WHERE task_id = ? AND status IN (?, ?)",
                (task_id, *FINISHED),
            )
            row = tx.one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        assert row is not None  # finished tasks are only deleted outside this transaction
        return TaskRecord.from_row(row)
