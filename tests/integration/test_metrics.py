"""The app's metrics and Serve's, scraped from Ray's Prometheus endpoint after real tasks ran.

Ray's metrics agent exports what the replicas record every metrics_report_interval_ms (10 s by
default, 2 s in the test app), so the test polls the endpoint until every expectation holds or a
deadline passes; no fixed sleep decides anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from testbed.harness import desk_photo, free_port
from tests.integration.conftest import ServeApp, wait_for_task
from tests.support.prometheus import (
    EVENT_ONLY,
    Scrape,
    app_series_names,
    dashboard_exprs,
    load_dashboard,
    promql_metric_names,
    serve_series_names,
)

pytestmark = pytest.mark.integration

SCRAPE_DEADLINE_S = 90.0  # several of Ray's 10 s export rounds

Check = Callable[[Scrape], bool]


def _scrape(url: str) -> Scrape:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return Scrape.parse(response.text)


def _wait_for(url: str, checks: dict[str, Check]) -> Scrape:
    """Scrape until every check holds; fail naming the ones that never did."""
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    failing = list(checks)
    while True:
        try:
            scrape = _scrape(url)
        except httpx.HTTPError as exc:
            failing = [f"scrape failed: {exc!r}"]
        else:
            failing = [what for what, check in checks.items() if not check(scrape)]
            if not failing:
                return scrape
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics still missing after {SCRAPE_DEADLINE_S:.0f} s: {failing}")
        time.sleep(1.0)


def test_app_and_serve_metrics_are_scraped_from_the_running_app(serve_app: ServeApp) -> None:
    assert serve_app.metrics_url, "the serve_app fixture starts Ray with a metrics export port"
    client = serve_app.client()

    # 1. A desk photo with a LoRA on `main` (always a desk: every stage runs), whose webhook
    #    receiver is down (a closed port on the allow-listed 127.0.0.1): failed webhook attempts.
    response = client.post(
        "/v1/generate",
        data={
            "prompt": "a cozy desk with a mouse and a keyboard",
            "num_inference_steps": "2",
            "lora": "cozy-wood",
            "seed": "7",
            "webhook_url": f"http://127.0.0.1:{free_port()}/hook",
        },
        files={"image": ("desk.jpg", desk_photo(seed=3), "image/jpeg")},
    )
    assert response.status_code == 202, response.text
    desk = wait_for_task(client, response.json()["task_id"])
    assert desk["status"] == "done" and desk["is_desk"] is True, desk
    stages = set(desk["timings"])
    assert stages >= {"caption_and_classify", "generate", "store", "search"}

    # 2. On `s3`, Naver refuses the credentials: a shopping provider error.
    serve_app.naver.reset()
    serve_app.naver.set_mode("unauthorized")
    try:
        response = client.post("/s3/v1/generate", json={"prompt": "a desk with a mouse", "num_inference_steps": 2})
        assert response.status_code == 202, response.text
        shopping = wait_for_task(client, response.json()["task_id"], prefix="/s3")
    finally:
        serve_app.naver.set_mode("ok")
    assert "CONFIGURATION_ERROR" in (shopping.get("recommendation_errors") or {}).get("마우스", ""), shopping

    main = {"application": "main"}
    checks: dict[str, Check] = {
        "a desk task submitted": lambda s: s.total("ray_imagegen_tasks_submitted_total", kind="desk", **main) >= 1,
        "a task done": lambda s: s.total("ray_imagegen_tasks_finished_total", status="done", **main) >= 1,
        "task duration": lambda s: s.total("ray_imagegen_task_duration_seconds_count", status="done", **main) >= 1,
        "queue wait observed": lambda s: s.total("ray_imagegen_queue_wait_seconds_count", kind="desk", **main) >= 1,
        "queue depth by status": lambda s: (
            s.label_values("ray_imagegen_queue_depth", "status", **main) == {"queued", "processing"}
        ),
        "webhook attempt failed": lambda s: (
            s.total("ray_imagegen_backend_errors_total", backend="webhook", **main) >= 1
        ),
        "naver error counted": lambda s: (
            s.total(
                "ray_imagegen_backend_errors_total", backend="naver", error_code="CONFIGURATION_ERROR", application="s3"
            )
            >= 1
        ),
        "LoRA loaded": lambda s: (
            s.total("ray_imagegen_lora_loads_total", lora="cozy-wood", result="ok", **main) >= 1
            and s.total("ray_imagegen_lora_load_seconds_count", lora="cozy-wood", **main) >= 1
        ),
        "img2img pipeline call": lambda s: (
            s.total("ray_imagegen_pipeline_batch_size_count", mode="img2img", **main) >= 1
        ),
        "Serve's own metrics": lambda s: s.total("ray_serve_num_http_requests_total") >= 2,
    }
    for stage in stages:
        checks[f"stage {stage}"] = lambda s, stage=stage: (
            s.total("ray_imagegen_stage_duration_seconds_count", kind="desk", stage=stage, **main) >= 1
        )
    for model in ("captioner", "classifier", "generator"):
        checks[f"{model} batch size"] = lambda s, model=model: (  # every batch holds a request or more
            s.total("ray_imagegen_batch_size_sum", model=model, **main)
            >= s.total("ray_imagegen_batch_size_count", model=model, **main)
            >= 1
        )
        checks[f"{model} model time"] = lambda s, model=model: (
            s.total("ray_imagegen_model_call_seconds_count", model=model, **main) >= 1
        )
    scrape = _wait_for(serve_app.metrics_url, checks)

    # 3. Every imagegen series is one serve_app.metrics defines (so the dashboard test's list of
    #    Prometheus names is the real one), with Serve's labels and no per-task or per-user label.
    exported = {name for name in scrape.names if name.startswith("ray_imagegen_")}
    assert exported <= app_series_names(), exported - app_series_names()
    for sample in scrape.samples:
        if sample.name.startswith("ray_imagegen_"):
            assert {"deployment", "replica", "application"} <= set(sample.labels), sample
            assert not {"task_id", "user_id", "key_id"} & set(sample.labels), sample
    for stage in stages:
        bucket = scrape.select("ray_imagegen_stage_duration_seconds_bucket", stage=stage, le="+Inf", **main)
        assert sum(sample.value for sample in bucket) >= 1, stage
    depth = scrape.select("ray_imagegen_queue_depth", **main)
    assert all(sample.value >= 0 for sample in depth), depth

    # 4. The Ray Serve metrics the dashboard test knows (and the dashboard reads) are ones the
    #    running app exports, with the suffixes the list gives them.
    used = {name for expr in dashboard_exprs(load_dashboard()) for name in promql_metric_names(expr)}
    serve_known = serve_series_names() | {name for name in used if name.startswith("ray_serve_")}
    missing = {name for name in serve_known - scrape.names if not name.startswith(tuple(EVENT_ONLY))}
    assert not missing, f"Serve metrics the dashboard may read that the app does not export: {sorted(missing)}"
