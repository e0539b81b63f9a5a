"""Overload and faults the other integration tests leave out (the small versions of benchmarks/chaos.py).

Already covered elsewhere, so not repeated here: a 503 with Retry-After once the queue is full
(cancelling what was accepted), an ingress and a runner replica killed, kill -9 of the Generator
(test_durability); S3 down before a task is submitted, a webhook answered 500 twice
(test_webhooks_s3_naver). Here: a burst over the queue bound whose accepted tasks all finish; kill
-9 of the Captioner, DeskClassifier and ShoppingSearch replicas with tasks in flight; S3 crashing
while tasks are in flight (one about to store its image, one about to read its photo); a webhook
receiver that is down (no answer at all), then overloaded, then up. Every wait is bounded on a
condition; "stuck" is a task not ended within its deadline. Where an order of events matters, a
replica is stalled (SIGSTOP, for seconds) instead of racing it, so no outcome depends on speed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from testbed.harness import desk_photo
from testbed.replicas import frozen, kill_9, pid_alive, wait_replaced
from testbed.webhook_receiver import DROPPED, WebhookReceiver
from tests.integration.conftest import ServeApp, wait_for_task, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> httpx.Client:
    return serve_app.client()


def _submit_desk(client: httpx.Client, seed: int, steps: int = 2, prefix: str = "") -> str:
    response = client.post(
        f"{prefix}/v1/generate",
        data={"prompt": "a desk with a mouse and a keyboard", "num_inference_steps": str(steps), "seed": str(seed)},
        files={"image": ("desk.jpg", desk_photo(seed=seed), "image/jpeg")},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def _generating(client: httpx.Client, task_id: str, prefix: str = "") -> bool:
    body = client.get(f"{prefix}/v1/result/{task_id}").json()
    progress = body.get("progress") or {}
    return body["status"] == "processing" and progress.get("stage") == "generating"


def test_a_burst_over_the_queue_bound_sheds_503s_and_every_accepted_task_finishes(
    serve_app: ServeApp, client: httpx.Client
) -> None:
    tasks = serve_app.config["applications"][0]["args"]["tasks"]
    max_active, retry_after = tasks["max_active"], tasks["retry_after_s"]

    def post(seed: int) -> httpx.Response:
        return client.post("/v1/generate", json={"prompt": "a burst of desks", "num_inference_steps": 2, "seed": seed})

    # Twice the bound from 8 threads at once, while the runner is stalled: admission alone decides
    # (nothing can finish and free a slot during the burst, however fast the machine).
    with frozen("main", "TaskRunner"), ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(2 * max_active)))

    unexpected = [(r.status_code, r.text) for r in responses if r.status_code not in (202, 503)]
    assert not unexpected, unexpected
    shed = [r for r in responses if r.status_code == 503]
    accepted = [r.json()["task_id"] for r in responses if r.status_code == 202]
    assert 0 < len(accepted) <= max_active, len(accepted)
    assert len(shed) >= max_active, len(shed)
    for response in shed:
        assert response.json()["error_code"] == "QUEUE_FULL", response.text
        assert response.headers["Retry-After"] == str(retry_after)
    # Shedding protected the accepted ones: once the runner resumes, every one of them ends done.
    results = [wait_for_task(client, task_id, timeout_s=180) for task_id in accepted]
    assert [r["status"] for r in results] == ["done"] * len(accepted), [r.get("message") for r in results]
    assert all(r["processed_image_url"] for r in results)
    # And the queue has room again.
    again = post(10_000)
    assert again.status_code == 202, again.text
    assert wait_for_task(client, again.json()["task_id"])["status"] == "done"


def _check_desk_result(result: dict[str, Any]) -> None:
    """A desk task that lost its model replicas ends done (caption, verdict, offers or a per-item
    error) or failed with STAGE_UNAVAILABLE (a stage unreachable through every retry); never a crash."""
    if result["status"] == "failed":
        assert result["error_code"] == "STAGE_UNAVAILABLE", result
        assert result["message"], result
        return
    assert result["status"] == "done", result
    assert isinstance(result["caption"], str) and result["is_desk"] is True, result
    errors = result.get("recommendation_errors") or {}
    for item in result["items"]:
        assert item["name"] in result["recommendations"] or "STAGE_UNAVAILABLE" in errors.get(item["name"], ""), result
    assert result.get("processed_image_url") or result.get("generation_skipped"), result


def test_kill_9_of_the_captioner_classifier_and_search_replicas_leaves_no_task_stuck(client: httpx.Client) -> None:
    kinds = ("Captioner", "DeskClassifier", "ShoppingSearch")
    # In flight when the replicas die: two desk tasks in the middle of generating.
    running = [_submit_desk(client, seed, steps=100) for seed in (1, 2)]
    wait_until(lambda: any(_generating(client, t) for t in running), 120, "a desk task to be generating")

    victims = {kind: kill_9("main", kind) for kind in kinds}
    assert all(not pid_alive(pid) for found in victims.values() for _, pid in found)
    # Submitted while those replicas are dead: their first stages have no live replica to go to.
    during = [_submit_desk(client, seed) for seed in (3, 4, 5)]

    results = {task_id: wait_for_task(client, task_id, timeout_s=240) for task_id in running + during}
    for result in results.values():
        _check_desk_result(result)
    ends = [r["error_code"] if r["status"] == "failed" else r["status"] for r in results.values()]
    retried = sum(1 for r in results.values() if r.get("retries"))
    print(f"\nkill -9 of {', '.join(kinds)}: tasks ended {ends}; {retried} retried a stage")

    # Serve replaced every killed replica, and the graph works again end to end.
    for kind, found in victims.items():
        wait_replaced("main", kind, [name for name, _ in found], timeout_s=180)
    wait_until(lambda: client.get("/healthcheck").status_code == 200, 120, "the service to be healthy")
    after = wait_for_task(client, _submit_desk(client, 6), timeout_s=120)
    assert after["status"] == "done" and not after.get("retries"), after
    assert isinstance(after["caption"], str) and after["processed_image_url"], after
    assert not after.get("recommendation_errors"), after
    assert any(after["recommendations"].values()), after


def test_s3_down_mid_run_fails_the_tasks_in_flight_with_a_code_and_recovers(
    serve_app: ServeApp, client: httpx.Client
) -> None:
    prefix = "/s3"
    # 1. A text-to-image task waiting on a stalled Generator: S3 will be gone when it has to store.
    with frozen("s3", "Generator"):
        body = {"prompt": "a desk in the cloud", "num_inference_steps": 4}
        response = client.post(f"{prefix}/v1/generate", json=body)
        assert response.status_code == 202, response.text
        generating = response.json()["task_id"]
        wait_until(lambda: _generating(client, generating, prefix), 60, "the task to reach the generator")
        # 2. A photo task accepted (its photo stored on S3) while the runner is stalled: S3 will be
        #    gone when the runner reads the photo back.
        with frozen("s3", "TaskRunner"):
            reading = _submit_desk(client, 8, prefix=prefix)
            serve_app.seaweed.kill()  # the outage begins at once, mid-run for both
    try:
        results = {t: wait_for_task(client, t, timeout_s=180, prefix=prefix) for t in (generating, reading)}
        # Ended, each with its code, none stuck; the task store answered every poll during the outage.
        assert results[generating]["status"] == "failed", results[generating]
        assert results[generating]["error_code"] == "S3_UPLOAD_FAILED", results[generating]
        assert results[generating]["message"] == "Failed to upload image to S3."
        assert "processed_image_url" not in results[generating]
        assert results[reading]["status"] == "failed", results[reading]
        assert results[reading]["error_code"] == "S3_DOWNLOAD_FAILED", results[reading]
    finally:
        serve_app.seaweed.start()

    wait_until(lambda: client.get(f"{prefix}/healthcheck").status_code == 200, 60, "S3 to be back")
    # New work of both kinds goes through: a photo upload (stored at submit) and a generated image.
    photo = wait_for_task(client, _submit_desk(client, 9, prefix=prefix), prefix=prefix)
    assert photo["status"] == "done" and photo["initial_image_url"], photo
    assert httpx.get(photo["initial_image_url"], timeout=10).status_code == 200
    response = client.post(f"{prefix}/v1/generate", json={**body, "prompt": "a desk after the outage"})
    assert response.status_code == 202, response.text
    text = wait_for_task(client, response.json()["task_id"], prefix=prefix)
    assert text["status"] == "done", text
    image = httpx.get(text["processed_image_url"], timeout=10)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_webhook_receiver_down_then_up_gets_the_result_with_one_webhook_id(
    serve_app: ServeApp, client: httpx.Client
) -> None:
    max_attempts = serve_app.config["applications"][0]["args"]["webhooks"]["max_attempts"]
    assert max_attempts >= 4, "the scenario needs 4 attempts"
    with WebhookReceiver(secret=serve_app.webhook_secret()) as receiver:
        # Down (the connection closes without an answer), down again, overloaded, then up.
        receiver.drop_first(2)
        receiver.fail_first(1, status=503, headers={"Retry-After": "1"})
        response = client.post(
            "/v1/generate",
            json={"prompt": "a desk for a flaky receiver", "num_inference_steps": 2, "webhook_url": receiver.url},
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        deliveries = receiver.wait_for(4, timeout=60)
    assert [d.status for d in deliveries] == [DROPPED, DROPPED, 503, 204]
    assert {d.headers["webhook-id"] for d in deliveries} == {f"msg_{task_id}"}
    assert all(d.verified for d in deliveries), "every attempt is signed"
    assert len({d.body for d in deliveries}) == 1, "every attempt carries the same body"
    body = deliveries[-1].json()
    assert body["task_id"] == task_id and body["status"] == "done" and body["processed_image_url"]
    assert wait_for_task(client, task_id)["status"] == "done"
