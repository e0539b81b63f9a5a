"""benchmarks.peers' app variants: a bound in time per run, and how its rows are named and sorted."""

from __future__ import annotations

from benchmarks.peers import TARGETS, _order, target_name, wait_bound


def test_each_bound_in_time_is_a_run_of_its_own_named_by_it() -> None:
    assert wait_bound("none") is None and wait_bound("None") is None and wait_bound("2") == 2.0
    assert target_name("step", None) == "imagegen-serve" and target_name("static", None) == "imagegen-serve-static"
    assert target_name("step", 1.5) == "imagegen-serve wait<=1.5s"
    rows = ["imagegen-serve-static", "imagegen-serve wait<=2s", "ray-doc-example", "imagegen-serve"]
    assert sorted(rows, key=_order) == [*TARGETS[:2], "imagegen-serve wait<=2s", TARGETS[2]]
