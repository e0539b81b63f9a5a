"""What a new task must fit before it is inserted: the queue's bounds and each API key's.

`Admission.check` runs inside the insert's serialised transaction (`TaskStore.create`), and alone
as a read-only precheck before an upload is stored. Besides counts and costs, the queue can be
bounded in time: `max_predicted_wait_s` refuses a task whose result is predicted to come later
than that, from how fast the server has been getting through work (pixel-steps) while it had a
backlog (`predicted_wait_s`). Under a sustained overload a queue bounded only by count makes
every task late; bounded by time, the tasks it takes come back within the bound and the rest get
a 503 with a Retry-After at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from serve_app.errors import QueueFull, TooManyRequests
from serve_app.tasks.api_keys import KeyLimits
from serve_app.tasks.db import Row, Tx
from serve_app.tasks.records import ACTIVE

RECENT_DONE = 20  # completions the rate is read from
MIN_BUSY_GAPS = 4  # fewer such gaps than this: no evidence of a backlog yet, no prediction
WEIGHT_SQL = "CASE WHEN cost > 0 THEN cost ELSE 1 END"  # a task's work: its pixel-steps (1 when it has none)


def busy_rate(done: Sequence[tuple[float, float, int]]) -> float | None:
    """Work (pixel-steps) done per second while the server had a backlog, or None.

    `done` holds (started_at, finished_at, work) of recent tasks done. The gap between two
    consecutive completions counts only when the later task had already started before the
    earlier one finished: the server was busy for the whole gap, so the gap and the later task's
    work measure its rate, not the arrivals'. An idle machine's gaps (the next task came later)
    say nothing and are skipped.
    """
    ordered = sorted(done, key=lambda row: row[1])
    busy = [
        (finished - previous, work)
        for (_, previous, _), (started, finished, work) in zip(ordered, ordered[1:], strict=False)
        if started < previous
    ]
    seconds = sum(gap for gap, _ in busy)
    if len(busy) < MIN_BUSY_GAPS or seconds <= 0:
        return None
    return sum(work for _, work in busy) / seconds


def predicted_wait_s(tx: Tx, work_ahead: int, work: int) -> float | None:
    """Seconds until a task of `work` pixel-steps submitted now is done, if the `work_ahead` of the
    tasks queued or running goes first at the recent busy rate (`busy_rate` over the last
    `RECENT_DONE` tasks done); None without evidence."""
    rows: list[Row] = tx.rows(
        f"SELECT started_at, finished_at, {WEIGHT_SQL} AS work FROM tasks WHERE status = 'done'"
        " AND started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
        (RECENT_DONE,),
    )
    rate = busy_rate([(float(row["started_at"]), float(row["finished_at"]), int(row["work"])) for row in rows])
    return None if rate is None else (work_ahead + max(1, work)) / rate


@dataclass(frozen=True)
class Admission:
    """The bounds a new task must fit, checked inside the insert's serialised transaction.

    Whole queue: `max_active` tasks, `max_active_cost` pixel-steps queued or running, and
    `max_predicted_wait_s` seconds until its result (503 + Retry-After). Per API key, when `key_id`
    is given: `limits` (tasks and cost in flight, and requests in the last `rate_window_s`: 429 +
    Retry-After).
    """

    max_active: int | None = None
    max_active_cost: int | None = None
    max_predicted_wait_s: float | None = None
    retry_after_s: int = 5
    limits: KeyLimits | None = None
    rate_window_s: float = 60.0

    def check(self, tx: Tx, cost: int, key_id: str | None, now: float) -> None:
        if self.max_active is not None or self.max_active_cost is not None or self.max_predicted_wait_s is not None:
            self._check_queue(tx, cost)
        limits = self.limits
        if key_id is None or limits is None:
            return
        if limits.max_in_flight is not None or limits.max_cost_in_flight is not None:
            row = tx.one(
                "SELECT COUNT(*) AS n, SUM(cost) AS c FROM tasks WHERE key_id = ? AND status IN (?, ?)",
                (key_id, *ACTIVE),
            )
            count, key_cost = (int(row["n"] or 0), int(row["c"] or 0)) if row else (0, 0)
            if limits.max_in_flight is not None and count >= limits.max_in_flight:
                raise TooManyRequests(
                    f"This API key has {count} tasks in flight, its limit; retry when one ends.",
                    error_code="TOO_MANY_TASKS",
                    retry_after_s=self.retry_after_s,
                )
            if limits.max_cost_in_flight is not None and key_cost + cost > limits.max_cost_in_flight:
                raise TooManyRequests(
                    f"This API key's tasks in flight cost {key_cost} pixel-steps; with this one ({cost}) they "
                    f"would pass its budget of {limits.max_cost_in_flight}. Retry when one ends.",
                    error_code="KEY_BUDGET_EXCEEDED",
                    retry_after_s=self.retry_after_s,
                )
        if limits.requests_per_minute is not None:
            since = now - self.rate_window_s
            row = tx.one(
                "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM tasks WHERE key_id = ? AND created_at > ?",
                (key_id, since),
            )
            if row and int(row["n"] or 0) >= limits.requests_per_minute:
                wait = float(row["oldest"]) + self.rate_window_s - now
                raise TooManyRequests(
                    f"This API key may make {limits.requests_per_minute} requests per minute.",
                    error_code="RATE_LIMITED",
                    retry_after_s=wait,
                )

    def _check_queue(self, tx: Tx, cost: int) -> None:
        row = tx.one(
            f"SELECT COUNT(*) AS n, SUM(cost) AS c, SUM({WEIGHT_SQL}) AS w FROM tasks WHERE status IN (?, ?)", ACTIVE
        )
        count, queued_cost, work_ahead = (
            (int(row["n"] or 0), int(row["c"] or 0), int(row["w"] or 0)) if row else (0, 0, 0)
        )
        if self.max_active is not None and count >= self.max_active:
            raise QueueFull(f"{count} tasks are in flight; retry later.", retry_after_s=self.retry_after_s)
        if self.max_active_cost is not None and queued_cost + cost > self.max_active_cost:
            raise QueueFull(
                "The queue holds as much work as this server takes at once; retry later.",
                error_code="QUEUE_COST_FULL",
                retry_after_s=self.retry_after_s,
            )
        if self.max_predicted_wait_s is not None:
            wait = predicted_wait_s(tx, work_ahead, cost)
            if wait is not None and wait > self.max_predicted_wait_s:
                raise QueueFull(
                    f"A task submitted now would be done in about {wait:.1f} s, past this server's bound of "
                    f"{self.max_predicted_wait_s:g} s; retry later.",
                    error_code="QUEUE_WAIT_TOO_LONG",
                    # about when the tasks ahead of it have drained to the bound
                    retry_after_s=math.ceil(wait - self.max_predicted_wait_s),
                )
