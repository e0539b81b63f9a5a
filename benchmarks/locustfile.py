"""Locust version of the desk-flow load: each user submits a desk photo, then polls until the task ends.

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000 --headless -u 4 -r 1 -t 60s

Locust reports `POST /v1/generate` and `GET /v1/result/[id]` as their own rows, plus a synthetic
`desk task (submit -> done)` row whose response time is the end-to-end latency (a task that ends
`failed` or times out is counted as a failure). Knobs come from the environment:
BENCH_STEPS (8), BENCH_SIZE (64), BENCH_POLL_S (0.25), BENCH_TASK_TIMEOUT_S (180), BENCH_WAIT_S (1.0,
the pause between a user's tasks). `python -m benchmarks.load_sweep` is the measured path; this is
for people who prefer locust's UI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from locust import HttpUser, TaskSet, constant, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # locust puts only benchmarks/ on the path
from benchmarks._desk import FINAL, form_fields
from testbed.harness import desk_photo

STEPS = int(os.environ.get("BENCH_STEPS", "8"))
SIZE = int(os.environ.get("BENCH_SIZE", "64"))
POLL_S = float(os.environ.get("BENCH_POLL_S", "0.25"))
TASK_TIMEOUT_S = float(os.environ.get("BENCH_TASK_TIMEOUT_S", "180"))
WAIT_S = float(os.environ.get("BENCH_WAIT_S", "1.0"))
PHOTO = desk_photo()


class DeskFlow(TaskSet):
    """Submit, then poll GET /v1/result/{id} until done or failed."""

    @task
    def makeover(self) -> None:
        started = time.perf_counter()
        fields = form_fields(STEPS, SIZE, seed=int(started * 1000) % 2**31)
        files = {"image": ("desk.jpg", PHOTO, "image/jpeg")}
        with self.client.post("/v1/generate", data=fields, files=files, catch_response=True) as response:
            if response.status_code != 202:
                response.failure(f"submit {response.status_code}")
                return
            task_id = response.json()["task_id"]
        status, error = "timeout", None
        while time.perf_counter() - started < TASK_TIMEOUT_S:
            time.sleep(POLL_S)
            with self.client.get(f"/v1/result/{task_id}", name="/v1/result/[id]", catch_response=True) as polled:
                if polled.status_code != 200:
                    polled.failure(f"poll {polled.status_code}")
                    continue
                body = polled.json()
            if body.get("status") in FINAL:
                status, error = body["status"], body.get("error_code")
                break
        elapsed_ms = (time.perf_counter() - started) * 1e3
        failure = None if status == "done" else Exception(f"task {status}: {error}")
        self.user.environment.events.request.fire(
            request_type="TASK",
            name="desk task (submit -> done)",
            response_time=elapsed_ms,
            response_length=0,
            exception=failure,
            context={},
        )


class DeskUser(HttpUser):
    """One client running desk makeovers back to back (with a pause of BENCH_WAIT_S)."""

    tasks = [DeskFlow]
    wait_time = constant(WAIT_S)
