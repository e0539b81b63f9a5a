"""Prometheus names for the metrics tests: what the app exports, what Ray Serve exports, what a
PromQL expression reads, and a parsed scrape of Ray's metrics endpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from serve_app.metrics import METRICS, MetricDef

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "imagegen-serve.json"

RAY_PREFIX = "ray_"

# Ray Serve's own metrics the dashboard may use (Ray 2.60; `ray_` + the name, counters with
# `_total`, histograms as `_bucket`/`_count`/`_sum`). The integration scrape checks each one the
# dashboard uses is exported by the running app (all but EVENT_ONLY ones, which appear once their
# event happened).
RAY_SERVE_METRICS: dict[str, str] = {
    "ray_serve_num_http_requests": "counter",
    "ray_serve_num_http_error_requests": "counter",
    "ray_serve_http_request_latency_ms": "histogram",
    "ray_serve_deployment_request_counter": "counter",
    "ray_serve_deployment_error_counter": "counter",
    "ray_serve_deployment_processing_latency_ms": "histogram",
    "ray_serve_deployment_replica_healthy": "gauge",
    "ray_serve_autoscaling_target_replicas": "gauge",
    "ray_serve_replica_processing_queries": "gauge",
    "ray_serve_deployment_queued_queries": "gauge",
    "ray_serve_num_ongoing_requests_at_replicas": "gauge",
    "ray_serve_actual_batch_size": "histogram",
    "ray_serve_batch_wait_time_ms": "histogram",
    "ray_serve_num_multiplexed_models": "gauge",
    "ray_serve_multiplexed_models_load_counter": "counter",
    "ray_serve_multiplexed_get_model_requests_counter": "counter",
}
# Exported only once their event happened; the multiplexed-models gauge only while some replica
# holds an adapter (an autoscaled Generator replica that replaced the one that ran a LoRA holds none).
EVENT_ONLY = {
    "ray_serve_num_http_error_requests",
    "ray_serve_deployment_error_counter",
    "ray_serve_num_multiplexed_models",
}

_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def series_names(base: str, kind: str) -> set[str]:
    """The Prometheus series names of one exported metric (`base` already has its `ray_`)."""
    return {base + suffix for suffix in _SUFFIXES[kind]}


def app_series_names(defs: Iterable[MetricDef] = METRICS) -> set[str]:
    """Every series name the app's metrics have in Prometheus."""
    return {name for spec in defs for name in series_names(RAY_PREFIX + spec.name, spec.type)}


def serve_series_names() -> set[str]:
    return {name for base, kind in RAY_SERVE_METRICS.items() for name in series_names(base, kind)}


# PromQL words that look like metric names but are not: functions, aggregations, keywords.
_PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "by", "without", "rate", "irate", "increase", "delta",
    "histogram_quantile", "clamp_min", "clamp_max", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "topk", "bottomk", "label_values", "vector", "time",
    "abs", "round", "le", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]|\boffset\s+\S+")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, grouping labels, functions,
    ranges, numbers, strings and Grafana's `$variables` left out)."""
    text = expr
    for pattern in (_STRING, _BRACES, _GROUPING, _RANGE, _VARIABLE, _NUMBER):
        text = pattern.sub(" ", text)
    names = set()
    for match in _NAME.finditer(text):
        word = match.group(0)
        if word.lower() in _PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, a function or an aggregation
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and query variables."""
    exprs: list[str] = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
        exprs.extend(target["expr"] for target in panel.get("targets", []) if target.get("expr"))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and query:
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
            exprs.append(match.group(1) if match else text)
    return exprs


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Scrape:
    """One parsed scrape of a Prometheus text endpoint."""

    samples: list[Sample] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = [
            Sample(sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
        return cls(samples)

    @property
    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}

    def select(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def total(self, name: str, **labels: str) -> float:
        """The sum of a series over every label set matching `labels` (replicas, workers, ...)."""
        return sum(sample.value for sample in self.select(name, **labels))

    def label_values(self, name: str, label: str, **labels: str) -> set[str]:
        return {s.labels[label] for s in self.select(name, **labels) if label in s.labels}
