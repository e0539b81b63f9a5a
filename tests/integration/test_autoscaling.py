"""The Generator scales out under load and back in when idle (autoscaling_config in serve_config.yaml)."""

from __future__ import annotations

import time

import httpx
import pytest
from ray import serve

from tests.integration.conftest import ServeApp, wait_for_task

pytestmark = pytest.mark.integration


def _running_generators() -> int:
    deployment = serve.status().applications["main"].deployments["Generator"]
    return int(deployment.replica_states.get("RUNNING", 0))


def _wait_replicas(predicate, timeout_s: float) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = _running_generators()
        if predicate(count):
            return count
        time.sleep(0.5)
    raise AssertionError(f"generator replicas stayed at {_running_generators()} for {timeout_s}s")


def test_generator_scales_up_under_load_and_back_down(serve_app: ServeApp) -> None:
    client = serve_app.client()
    generator = next(d for d in serve_app.config["applications"][0]["deployments"] if d["name"] == "Generator")
    bounds = generator["autoscaling_config"]
    # Earlier tests in the session (the fuzz run) may have scaled the Generator out: start from the
    # floor, which the autoscaler returns to once they are idle.
    _wait_replicas(lambda n: n == bounds["min_replicas"], timeout_s=180)

    tasks = [
        client.post(
            "/v1/generate", json={"prompt": f"load {i}", "num_inference_steps": 150, "height": 128, "width": 128}
        ).json()["task_id"]
        for i in range(12)
    ]
    try:
        assert _wait_replicas(lambda n: n >= 2, timeout_s=90) == bounds["max_replicas"]
    finally:
        for task_id in tasks:
            client.delete(f"/v1/tasks/{task_id}")
    for task_id in tasks:
        assert wait_for_task(client, task_id, timeout_s=120)["status"] in ("done", "failed")
    _wait_replicas(lambda n: n == bounds["min_replicas"], timeout_s=120)
    httpx.get(f"{serve_app.base_url}/healthcheck", timeout=30)
