"""The rate a bound in time is read from (serve_app.tasks.admission.busy_interval_s)."""

from __future__ import annotations

import pytest

from serve_app.tasks.admission import busy_interval_s


def test_only_gaps_with_a_task_already_running_measure_the_rate() -> None:
    backlog = [(0.0, 1.0), (0.0, 2.0), (0.5, 3.0), (1.5, 4.0), (2.5, 5.0)]
    assert busy_interval_s(backlog) == pytest.approx(1.0)
    idle = [(0.0, 1.0), (5.0, 6.0), (10.0, 11.0), (20.0, 21.0), (30.0, 31.0), (40.0, 41.0)]
    assert busy_interval_s(idle) is None, "arrivals' gaps, not the server's"
    assert busy_interval_s(backlog + [(40.0, 41.0)]) == pytest.approx(1.0), "an idle gap is left out, not averaged"


def test_a_batch_finishing_together_counts_its_zero_gaps() -> None:
    # pairs of tasks done together every 2 s: 1 task a second
    pairs = [(0.0, 2.0), (0.0, 2.0), (0.1, 4.0), (0.1, 4.0), (2.0, 6.0), (2.0, 6.0), (4.0, 8.0), (4.0, 8.0)]
    assert busy_interval_s(pairs) == pytest.approx(6.0 / 7)


def test_too_few_busy_gaps_make_no_prediction() -> None:
    assert busy_interval_s([]) is None
    assert busy_interval_s([(0.0, 1.0), (0.0, 2.0), (0.5, 3.0)]) is None
    assert busy_interval_s([(1.5, 4.0), (0.0, 1.0), (0.5, 3.0), (0.0, 2.0), (2.5, 5.0)]) == pytest.approx(1.0)
