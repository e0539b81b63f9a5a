"""The rate a bound in time is read from (serve_app.tasks.admission.busy_rate)."""

from __future__ import annotations

import pytest

from serve_app.tasks.admission import busy_rate


def test_only_gaps_with_a_task_already_running_measure_the_rate() -> None:
    backlog = [(0.0, 1.0, 10), (0.0, 2.0, 10), (0.5, 3.0, 10), (1.5, 4.0, 10), (2.5, 5.0, 10)]
    assert busy_rate(backlog) == pytest.approx(10.0), "10 pixel-steps a second"
    idle = [(0.0, 1.0, 10), (5.0, 6.0, 10), (10.0, 11.0, 10), (20.0, 21.0, 10), (30.0, 31.0, 10), (40.0, 41.0, 10)]
    assert busy_rate(idle) is None, "arrivals' gaps, not the server's"
    assert busy_rate([*backlog, (40.0, 41.0, 10)]) == pytest.approx(10.0), "an idle gap is left out, not averaged"


def test_each_gap_is_weighed_by_the_work_that_ended_it() -> None:
    # a small task, then a 4x bigger one taking 4x as long, alternating: the same rate throughout
    mixed = [(0.0, 1.0, 10), (0.0, 5.0, 40), (0.0, 6.0, 10), (1.0, 10.0, 40), (5.0, 11.0, 10), (6.0, 15.0, 40)]
    assert busy_rate(mixed) == pytest.approx(10.0)


def test_a_batch_finishing_together_counts_its_zero_gaps() -> None:
    # pairs of tasks done together every 2 s: 1 task a second
    pairs = [(0.0, 2.0, 1), (0.0, 2.0, 1), (0.1, 4.0, 1), (0.1, 4.0, 1), (2.0, 6.0, 1), (2.0, 6.0, 1), (4.0, 8.0, 1)]
    assert busy_rate([*pairs, (4.0, 8.0, 1)]) == pytest.approx(7 / 6)


def test_too_few_busy_gaps_make_no_prediction() -> None:
    assert busy_rate([]) is None
    assert busy_rate([(0.0, 1.0, 1), (0.0, 2.0, 1), (0.5, 3.0, 1)]) is None
    shuffled = [(1.5, 4.0, 1), (0.0, 1.0, 1), (0.5, 3.0, 1), (0.0, 2.0, 1), (2.5, 5.0, 1)]
    assert busy_rate(shuffled) == pytest.approx(1.0)
