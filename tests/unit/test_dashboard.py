"""The Grafana dashboard reads only metrics that exist, so it cannot silently rot.

Every metric name in every PromQL expression must be a series the app defines in
serve_app/metrics.py (as Prometheus sees it: `ray_` prefix, counters `_total`, histograms
`_bucket`/`_count`/`_sum`) or a known Ray Serve metric (tests/support/prometheus.py, which the
integration scrape checks against the running app).
"""

from __future__ import annotations

import re

import pytest

from serve_app.metrics import METRICS
from tests.support.prometheus import (
    RAY_PREFIX,
    app_series_names,
    dashboard_exprs,
    load_dashboard,
    promql_metric_names,
    serve_series_names,
)

DASHBOARD = load_dashboard()
EXPRS = dashboard_exprs(DASHBOARD)
USED = {name for expr in EXPRS for name in promql_metric_names(expr)}


def _panels() -> list[dict]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.95, sum by (le, stage) (rate(ray_imagegen_stage_duration_seconds_bucket"
            '{application=~"$application"}[$__rate_interval])))',
            {"ray_imagegen_stage_duration_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[5m])) / (sum(rate(a_total[5m])) + sum(rate(b_total[5m] offset 1h))) > 0.5e3",
            {"a_total", "b_total"},
        ),
        ('max by (status) (ray_imagegen_queue_depth{status!="x"})', {"ray_imagegen_queue_depth"}),
        ("sum(rate(x_total[1m])) by (deployment, le)", {"x_total"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_the_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    assert DASHBOARD["schemaVersion"] >= 36 and DASHBOARD["uid"] and DASHBOARD["title"]
    variables = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_expression_reads_only_metrics_that_exist() -> None:
    known = app_series_names() | serve_series_names()
    for expr in EXPRS:
        names = promql_metric_names(expr)
        assert names, expr
        assert names <= known, f"unknown metric(s) {sorted(names - known)} in: {expr}"


def test_quantiles_read_buckets_grouped_by_le() -> None:
    quantiles = [expr for expr in EXPRS if "histogram_quantile" in expr]
    assert quantiles
    for expr in quantiles:
        assert all(name.endswith("_bucket") for name in promql_metric_names(expr)), expr
        assert re.search(r"by \(le\b", expr), expr
        assert "rate(" in expr, expr


def test_every_app_metric_is_on_the_dashboard() -> None:
    """A metric added to serve_app/metrics.py gets a panel too."""
    for spec in METRICS:
        assert any(name.startswith(RAY_PREFIX + spec.name) for name in USED), f"{spec.name} has no panel"


def test_the_required_panels_are_there() -> None:
    used = " ".join(EXPRS)
    for topic in (
        "ray_serve_num_http_requests_total",  # request rate
        "ray_imagegen_requests_rejected_total",  # errors
        "ray_imagegen_tasks_finished_total",  # task outcomes
        "ray_imagegen_stage_duration_seconds_bucket",  # per-stage p50/p95
        "ray_imagegen_batch_size_sum",  # batch size
        "ray_imagegen_queue_depth",
        "ray_imagegen_queue_wait_seconds_bucket",
        "ray_imagegen_lora_cache_hits_total",
        "ray_imagegen_backend_errors_total",
        "ray_serve_deployment_processing_latency_ms_bucket",
        "ray_serve_deployment_replica_healthy",
    ):
        assert topic in used, topic
    stage_quantiles = {q for q in ("0.5", "0.95") if f"histogram_quantile({q}, sum by (le, kind, stage)" in used}
    assert stage_quantiles == {"0.5", "0.95"}
