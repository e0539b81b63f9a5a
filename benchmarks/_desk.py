"""The desk flow over HTTP, for load_sweep, cold_start and the locustfile: a photo, submit, poll."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

PROMPT = "a cozy desk with a mouse and a keyboard"
FINAL = ("done", "failed")


def form_fields(steps: int, size: int, seed: int, lora: str | None = None) -> dict[str, str]:
    """The multipart form fields of one POST /v1/generate."""
    fields = {
        "prompt": PROMPT,
        "num_inference_steps": str(steps),
        "height": str(size),
        "width": str(size),
        "seed": str(seed),
        "user_id": "bench",
    }
    if lora:
        fields["lora"] = lora
    return fields


@dataclass
class TaskOutcome:
    """One submit + poll, timed from the start of the submit (perf_counter seconds)."""

    started: float
    submit_status: int | None = None
    accepted_s: float | None = None
    final_status: str | None = None  # done | failed | timeout | rejected | error
    error: str | None = None
    finished_s: float | None = None
    polls: int = 0


async def submit_and_wait(
    client: httpx.AsyncClient,
    fields: dict[str, str],
    photo: bytes,
    poll_interval_s: float = 0.25,
    timeout_s: float = 120.0,
) -> TaskOutcome:
    """POST /v1/generate, then GET /v1/result/{id} until done/failed (or the timeout)."""
    outcome = TaskOutcome(started=time.perf_counter())
    try:
        response = await client.post("/v1/generate", data=fields, files={"image": ("desk.jpg", photo, "image/jpeg")})
    except httpx.HTTPError as exc:
        outcome.final_status, outcome.error = "error", f"submit: {type(exc).__name__}"
        return outcome
    outcome.submit_status = response.status_code
    outcome.accepted_s = time.perf_counter() - outcome.started
    if response.status_code != 202:
        outcome.final_status = "rejected"
        outcome.error = f"submit {response.status_code}: {response.text[:200]}"
        return outcome
    task_id = response.json()["task_id"]
    deadline = outcome.started + timeout_s
    while time.perf_counter() < deadline:
        await asyncio.sleep(poll_interval_s)
        outcome.polls += 1
        try:
            result = await client.get(f"/v1/result/{task_id}")
        except httpx.HTTPError as exc:
            outcome.error = f"poll: {type(exc).__name__}"
            continue
        if result.status_code != 200:
            outcome.error = f"poll {result.status_code}"
            continue
        body = result.json()
        if body.get("status") in FINAL:
            outcome.finished_s = time.perf_counter() - outcome.started
            outcome.final_status = body["status"]
            if body["status"] == "failed":
                outcome.error = f"{body.get('error_code')}: {body.get('message')}"
            elif body.get("generation_skipped"):
                outcome.error = f"generation_skipped: {body['generation_skipped']}"
            return outcome
    outcome.final_status = "timeout"
    return outcome
