"""benchmarks.peers: a bound in time per app run, how its rows are named and sorted, and where its time went."""

from __future__ import annotations

from pathlib import Path

from benchmarks.peers import TARGETS, _order, keep_mb, target_name, wait_bound


def test_each_bound_in_time_is_a_run_of_its_own_named_by_it() -> None:
    assert wait_bound("none") is None and wait_bound("None") is None and wait_bound("2") == 2.0
    assert target_name("step", None) == "imagegen-serve" and target_name("static", None) == "imagegen-serve-static"
    assert target_name("step", 1.5) == "imagegen-serve wait<=1.5s"
    rows = ["imagegen-serve-static", "imagegen-serve wait<=2s", "ray-doc-example", "imagegen-serve"]
    assert sorted(rows, key=_order) == [*TARGETS[:2], "imagegen-serve wait<=2s", TARGETS[2]]


def test_each_allocator_setting_is_a_run_of_its_own_named_by_it() -> None:
    assert keep_mb("shipped") is None and keep_mb("0") == 0
    assert target_name("step", None, None) == "imagegen-serve"
    assert target_name("step", None, 0) == "imagegen-serve keep=0MiB"
    assert target_name("step", 0.6, 0) == "imagegen-serve wait<=0.6s keep=0MiB"


def test_the_server_breakdown_lines_up_each_answer_with_its_task(tmp_path: Path) -> None:
    import json
    import sqlite3

    from benchmarks.peers import server_breakdown

    db_path = tmp_path / "tasks.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE tasks (request, status, created_at, started_at, finished_at, result)")
        rows = [  # seed 0 and 1 this rate; an older seed 0 from the rate before is left out
            ({"seed": 0}, "done", 100.010, 100.015, 100.500, {"timings": {"generate": 0.45, "store": 0.01}}),
            ({"seed": 1}, "done", 101.006, 101.010, 101.420, {"timings": {"generate": 0.40}}),
            ({"seed": 0}, "done", 50.0, 50.1, 51.0, {"timings": {"generate": 0.1}}),
        ]
        db.executemany(
            "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)",
            [(json.dumps(r), st, c, s, f, json.dumps(res)) for r, st, c, s, f, res in rows],
        )
    result = {"samples": [[0.0, 200, 0.52, 100.0], [1.0, 200, 0.43, 101.0], [2.0, 503, 0.01, 102.0]]}
    got = server_breakdown(db_path, result)
    assert got == {
        "to task": 8.0,  # (10 + 6) / 2 ms
        "to claim": 4.5,
        "generate": 425.0,
        "rest of run": 22.5,  # 35 and 10 ms
        "to answer": 15.0,  # 20 and 10 ms
    }
    assert server_breakdown(tmp_path / "none.db", result) is None
