"""The Python client and the `imagegen` CLI against the running app (`main`: every photo is a desk,
webhooks on with the test secret): submit with a photo, wait on the event stream, download,
cancel, replay a webhook and verify it with the client's helper, and the CLI end to end in a
subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imagegen_client import ApiError, ImagegenClient, TaskEvent, verify_webhook
from testbed.webhook_receiver import WebhookReceiver
from tests.integration.conftest import ServeApp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(serve_app: ServeApp) -> ImagegenClient:
    return ImagegenClient(serve_app.base_url, timeout=60)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "my-desk.png"
    Image.new("RGB", (64, 64), (120, 90, 60)).save(path, format="PNG")
    return path


def test_submit_a_photo_wait_on_its_events_and_download(client: ImagegenClient, photo: Path, tmp_path: Path) -> None:
    accepted = client.submit("a cozy desk with a lamp", image=photo, steps=6, seed=11, lora="cozy-wood")
    assert accepted.status == "queued"
    events: list[TaskEvent] = []
    result = client.wait(accepted.task_id, on_event=events.append, timeout=180)
    assert result.status == "done", result
    assert result.is_desk is True and result.processed_image_url and result.caption
    assert events[-1].final and events[-1].result == result
    progress = [e.progress for e in events if e.progress is not None]
    assert progress and all(p.task_id == accepted.task_id for p in progress)
    assert [e.final for e in events].count(True) == 1
    ids = [int(e.id or 0) for e in events]
    assert ids == sorted(ids), "event ids only grow"

    paths = client.download(result, tmp_path / "out")
    assert len(paths) == len(result.image_urls) >= 1
    for path in paths:
        assert path.name.startswith(accepted.task_id) and Image.open(path).size == (64, 64)


def test_cancel_a_running_task_while_following_it(client: ImagegenClient) -> None:
    task_id = client.submit("a long render of a desk", steps=150, size="128x128").task_id  # seconds on tiny
    steps: list[int] = []

    def on_event(event: TaskEvent) -> None:
        if event.progress is not None and event.progress.step is not None:
            if not steps:
                cancelled = client.cancel(task_id)
                assert cancelled.task_id == task_id
            steps.append(event.progress.step)

    result = client.wait(task_id, on_event=on_event, timeout=180)
    assert steps, "diffusion steps were streamed before the cancel"
    assert result.status == "failed" and result.error_code == "CANCELLED"
    assert max(steps) < 150
    assert client.cancel(task_id).error_code == "CANCELLED", "cancelling it again is not an error"


def test_replay_a_webhook_and_verify_it_with_the_client_helper(serve_app: ServeApp, client: ImagegenClient) -> None:
    with WebhookReceiver() as receiver:
        task_id = client.submit("a desk for the webhook", steps=2, webhook_url=receiver.url).task_id
        result = client.wait(task_id, timeout=180)
        assert result.status == "done", result
        [first] = receiver.wait_for(1, timeout=60)
        replay = client.replay_webhook(task_id)
        assert replay.task_id == task_id and replay.webhook_status == "pending"
        second = receiver.wait_for(2, timeout=60)[1]
    for delivery in (first, second):
        payload = verify_webhook(serve_app.webhook_secret(), delivery.headers, delivery.body)
        assert payload["task_id"] == task_id and payload["status"] == "done"
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == replay.webhook_id
    assert json.loads(first.body) == json.loads(second.body), "the same result, signed again"

    plain = client.submit("a desk without a webhook", steps=2).task_id
    client.wait(plain, timeout=180)
    with pytest.raises(ApiError) as caught:
        client.replay_webhook(plain)
    assert (caught.value.status, caught.value.error_code) == (409, "NO_WEBHOOK")
    with pytest.raises(ApiError) as missing:
        client.replay_webhook("no-such-task")
    assert missing.value.status == 404


def _imagegen(serve_app: ServeApp, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `imagegen` script (or the module, without an install) against the app."""
    script = Path(sys.executable).parent / "imagegen"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "imagegen_client.cli"]
    env = {**os.environ, "IMAGEGEN_URL": serve_app.base_url}
    env.pop("IMAGEGEN_API_KEY", None)
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL
    )


def test_cli_end_to_end(serve_app: ServeApp, photo: Path, tmp_path: Path) -> None:
    # submit --wait --out: progress on stderr (a line per stage: not a terminal), JSON on stdout.
    out = tmp_path / "out"
    run = _imagegen(serve_app, "submit", "a walnut desk", "--image", str(photo), "--steps", "4", "--wait")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    task_id = lines[0].split()[1].rstrip(":")
    assert lines[0] == f"task {task_id}: done" and any(line.startswith("image: http") for line in lines)
    progress = [line for line in run.stderr.splitlines() if line.startswith(f"task {task_id}:")]
    assert progress[-1] == f"task {task_id}: done" and len(progress) >= 2, run.stderr
    assert "\r" not in run.stderr, "no bar redrawn in place when stderr is not a terminal"

    run = _imagegen(serve_app, "download", task_id, "--out", str(out))
    assert run.returncode == 0, run.stderr
    [saved] = run.stdout.split()
    assert Image.open(saved).size == (64, 64)
    run = _imagegen(serve_app, "--json", "result", task_id)
    assert run.returncode == 0 and json.loads(run.stdout)["status"] == "done"

    # Several images in another format, options after the command.
    run = _imagegen(
        serve_app, "submit", "two desks", "--steps", "2", "--n", "2", "--format", "webp", "--seed", "5",
        "--out", str(out), "--json", "-q",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["status"] == "done" and len(body["files"]) == 2 and run.stderr == ""
    assert [Image.open(path).format for path in body["files"]] == ["WEBP", "WEBP"]

    # cancel, then wait: exit 1 for a failed task.
    run = _imagegen(serve_app, "submit", "a long desk", "--steps", "150", "--size", "128x128")
    assert run.returncode == 0, run.stderr
    long_id = run.stdout.strip()
    assert _imagegen(serve_app, "cancel", long_id).returncode == 0
    run = _imagegen(serve_app, "wait", long_id)
    assert run.returncode == 1 and "CANCELLED" in run.stdout, run.stdout + run.stderr

    # Errors: clear messages and exit codes.
    run = _imagegen(serve_app, "result", "no-such-task")
    assert run.returncode == 3 and "404 TASK_NOT_FOUND" in run.stderr
    run = _imagegen(serve_app, "submit", "x", "--guidance-scale", "-1")
    assert run.returncode == 3 and "INVALID_INPUT" in run.stderr
    run = _imagegen(serve_app, "replay-webhook", task_id)
    assert run.returncode == 3 and "NO_WEBHOOK" in run.stderr
    run = _imagegen(serve_app, "--url", "http://127.0.0.1:9", "--retries", "0", "result", task_id)
    assert run.returncode == 4 and "cannot reach" in run.stderr
    run = _imagegen(serve_app, "submit", "x", "--size", "big")
    assert run.returncode == 2 and "--size" in run.stderr

    # A real delivery, replayed through the CLI, verified by the CLI.
    with WebhookReceiver() as receiver:
        run = _imagegen(serve_app, "submit", "a hooked desk", "--steps", "2", "--webhook-url", receiver.url, "--wait")
        assert run.returncode == 0, run.stderr
        hooked = run.stdout.split()[1].rstrip(":")
        receiver.wait_for(1, timeout=60)
        run = _imagegen(serve_app, "replay-webhook", hooked)
        assert run.returncode == 0 and f"msg_{hooked}" in run.stdout, run.stderr
        delivery = receiver.wait_for(2, timeout=60)[1]
    body_file = tmp_path / "body.json"
    body_file.write_bytes(delivery.body)
    headers = [f"--header={name}: {delivery.headers[name]}" for name in ("webhook-id", "webhook-timestamp")]
    signature = f"--header=webhook-signature: {delivery.headers['webhook-signature']}"
    verify = ["verify-webhook", "--secret", serve_app.webhook_secret(), "--body-file", str(body_file), *headers]
    assert _imagegen(serve_app, *verify, signature).returncode == 0
    body_file.write_bytes(delivery.body.replace(b"done", b"DONE"))
    run = _imagegen(serve_app, *verify, signature)
    assert run.returncode == 1 and "invalid" in run.stderr


def test_wait_by_polling_reads_every_image(client: ImagegenClient, tmp_path: Path) -> None:
    task_id = client.submit("two images", steps=2, n=2, seed=7).task_id
    result = client.wait(task_id, timeout=180, use_events=False)
    assert result.status == "done" and result.images and len(result.images) == 2
    assert [image.seed for image in result.images] == [7, 8]
    assert result.image_urls[0] == result.processed_image_url
    paths = client.download(result, tmp_path)
    assert [path.name for path in paths] == [f"{task_id}-0.png", f"{task_id}-1.png"]
