"""The chaos benchmark's bookkeeping: arrival times, how a task ended, load-shedding figures."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks.chaos import KINDS, KOREAN_PROMPT, Task, arrival_offsets, chaos_config, outcome_counts, shed_summary
from benchmarks.common import REPO_ROOT
from serve_app.writing.glossary import load_glossary


def test_arrival_offsets_are_seeded_bounded_and_near_the_rate() -> None:
    offsets = arrival_offsets(20.0, 50.0, 10_000, seed="s")
    assert offsets == arrival_offsets(20.0, 50.0, 10_000, seed="s")
    assert offsets != arrival_offsets(20.0, 50.0, 10_000, seed="t")
    assert offsets == sorted(offsets) and 0 < offsets[0] and offsets[-1] < 50.0
    assert len(offsets) == pytest.approx(1000, rel=0.15)
    assert len(arrival_offsets(20.0, 50.0, 7, seed="s")) == 7
    assert len(arrival_offsets(1.0, math.inf, 5, seed=0)) == 5
    assert arrival_offsets(0.0, 10.0, 5, seed=0) == arrival_offsets(1.0, 0.0, 5, seed=0) == []


def _task(status: int | None, final: str | None = None, **kw: object) -> Task:
    task = Task(kind="desk", started=kw.pop("started", 0.0), submit_status=status, **kw)  # type: ignore[arg-type]
    if status == 202:
        task.task_id = task.task_id or "t"
        task.status = final
    return task


def test_outcome_of_a_task() -> None:
    assert _task(503, submit_error="QUEUE_FULL").outcome == "rejected"
    assert _task(None, submit_error="ConnectError").outcome == "rejected"
    assert _task(202, "done").outcome == "done"
    assert _task(202, "done", generation_skipped="generation_failed: X").outcome == "fallback"
    assert _task(202, "failed", error_code="S3_UPLOAD_FAILED").outcome == "failed:S3_UPLOAD_FAILED"
    assert _task(202, "failed").outcome == "failed:NO_CODE"
    assert _task(202, "processing").outcome == "stuck"
    assert _task(202, "queued").outcome == "stuck"
    assert _task(202, None).outcome == "stuck"  # accepted, never seen again


def test_outcome_counts_separate_done_failed_stuck_and_refused() -> None:
    tasks = [
        _task(202, "done"),
        _task(202, "done", generation_skipped="not_a_desk", retries=1),
        _task(202, "failed", error_code="STAGE_UNAVAILABLE", attempts=2),
        _task(202, "failed"),
        _task(202, "processing"),
        _task(503, submit_error="QUEUE_FULL"),
        _task(None, submit_error="ReadTimeout"),
    ]
    counts = outcome_counts(tasks)
    assert counts["submitted"] == 7 and counts["accepted"] == 5
    assert counts["done"] == 2 and counts["fallback"] == 1
    assert counts["failed"] == 2 and counts["failed_codes"] == {"NO_CODE": 1, "STAGE_UNAVAILABLE": 1}
    assert counts["failed_without_code"] == 1
    assert counts["stuck"] == 1
    assert counts["retried"] == 2
    assert counts["rejected_503"] == 1
    assert counts["refused"] == {"503:QUEUE_FULL": 1, "None:ReadTimeout": 1}


def test_shed_summary() -> None:
    tasks = [
        _task(202, "done", started=0.0, submit_s=0.01, ended=1.0),
        _task(202, "done", started=0.1, submit_s=0.01, ended=2.1),
        _task(503, started=0.2, submit_s=0.05, submit_error="QUEUE_FULL", retry_after="2"),
        _task(503, started=0.3, submit_s=0.05, submit_error="QUEUE_FULL", retry_after=None),
        _task(202, "done", started=0.5, submit_s=0.02, ended=3.5),
        _task(500, started=0.6, submit_s=0.02, submit_error="S3_UPLOAD_FAILED"),
    ]
    shed = shed_summary(tasks, t0=0.0, window_s=1.0)
    assert shed["offered"] == 6 and shed["accepted"] == 3 and shed["rejected_503"] == 2
    assert shed["share_503"] == pytest.approx(2 / 6)
    assert shed["with_retry_after"] == 1 and shed["share_503_with_retry_after"] == pytest.approx(0.5)
    assert shed["first_503_s"] == pytest.approx(0.25)
    assert shed["accepted_before_first_503"] == 2
    assert shed["other_rejections"] == {"500:S3_UPLOAD_FAILED": 1}
    assert shed["e2e_done"]["n"] == 3 and shed["e2e_done"]["max_ms"] == pytest.approx(3000)
    assert shed["submit_503"]["p50_ms"] == pytest.approx(50)
    empty = shed_summary([], t0=0.0, window_s=1.0)
    assert empty["offered"] == 0 and math.isnan(empty["first_503_s"]) and math.isnan(empty["share_503"])


def test_every_deployment_with_a_replica_to_kill_is_a_kind_and_the_translator_starts_with_one(tmp_path: Path) -> None:
    """serve_config.yaml starts the Translator (like the Editor) from zero; the benchmark starts one,
    so its kill phase has a replica to kill, and its tasks' Korean prompt has a word the glossary lacks."""

    class Seaweed:
        def storage_config(self, bucket: str) -> dict[str, Any]:
            return {"kind": "s3", "bucket": bucket}

    args = SimpleNamespace(
        model_cache_dir=tmp_path,
        config=REPO_ROOT / "serve_config.yaml",
        lease_s=4.0,
        max_active=4,
        retry_after_s=2,
        smoke=False,
    )
    app = chaos_config(args, 8123, tmp_path, "tiny", Seaweed())["applications"][0]
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) - {"Editor"} == set(KINDS)
    assert deployments["Translator"]["autoscaling_config"]["min_replicas"] == 1
    assert load_glossary().translate(KOREAN_PROMPT).untranslated
