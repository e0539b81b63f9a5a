"""A local KLING image API for tests: `POST /v1/images/generations`, `GET /v1/images/generations/{id}`.

Speaks KLING's wire format: every answer is `{code, message, request_id, data}`; a created task is
`submitted`, then `processing` on the first poll, then `succeed` with
`task_result.images[{index, url}]` (the image is served by this stub at `/kling-files/...`, a path
no failure rule touches), or `failed` with `task_status_msg` under the `fail_job` rule. The
Authorization header must be `Bearer <JWT>` signed HS256 with the secret key, `iss` the access
key, within `nbf`/`exp`; otherwise KLING's 401 (code 1000-1004). Error answers use KLING's codes:
1002 bad token (401), 1303 concurrency/rate limit (429), 1301 content policy (400), 5000/5001
server errors (500/503).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

from testbed.stubs.provider_base import BackendCase, ProviderStub, Reply, StubRequest, make_png

ACCESS_KEY, SECRET_KEY = "test-access-key", "test-secret"
PATH = "/v1/images/generations"
_ERRORS = {
    "unauthorized": (401, 1002, "Authorization is invalid"),
    "forbidden": (401, 1004, "Account authorization failed: no access to this resource"),
    "rate_limit": (429, 1303, "Parallel task over resource pack limit"),
    "loading": (503, 5001, "Server is temporarily unavailable, please try again later"),
    "server_error": (500, 5000, "Server internal error"),
    "bad_request": (400, 1301, "Risk control: the prompt violates the content security policy"),
}


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_jwt(header: str, access_key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> str | None:
    """Why the token is not valid, or None."""
    if not header.startswith("Bearer "):
        return "no bearer token"
    try:
        head, payload, signature = header.removeprefix("Bearer ").split(".")
        if json.loads(_unb64(head)).get("alg") != "HS256":
            return "alg is not HS256"
        expected = hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return "bad signature"
        claims = json.loads(_unb64(payload))
    except (ValueError, TypeError):
        return "malformed token"
    now = time.time()
    if claims.get("iss") != access_key:
        return "unknown access key"
    if not claims.get("nbf", now + 1) <= now < claims.get("exp", 0):
        return "token not valid now"
    return None


class KlingStub(ProviderStub):
    def on_reset(self) -> None:
        self.jobs: dict[str, dict[str, object]] = {}

    def exempt(self, request: StubRequest) -> bool:
        return request.path.startswith("/kling-files/")

    def _answer(self, status: int, code: int, message: str, data: object = None) -> Reply:
        return Reply(status, {"code": code, "message": message, "request_id": uuid.uuid4().hex, "data": data})

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        status, code, message = _ERRORS[mode]
        return self._answer(status, code, message)

    def handle(self, request: StubRequest, mode: str) -> Reply:
        if request.path.startswith("/kling-files/"):
            return Reply(200, make_png(48, 48), {"Content-Type": "image/png"})
        if check_jwt(request.headers.get("authorization", "")) is not None:
            return self.error_reply("unauthorized", request)
        if mode == "malformed":
            return Reply(200, {"status": "ok"})
        if request.method == "POST" and request.path == PATH:
            body = request.json()
            if not isinstance(body, dict) or not body.get("prompt") or body.get("n", 1) != 1:
                return self._answer(400, 1201, "Invalid request parameters")
            task_id = uuid.uuid4().hex[:18]
            self.jobs[task_id] = {"polls": 0, "fail": mode == "fail_job", "created": int(time.time() * 1000)}
            return self._answer(200, 0, "SUCCEED", self._task(task_id, "submitted"))
        if request.method == "GET" and request.path.startswith(PATH + "/"):
            task_id = request.path.rsplit("/", 1)[1]
            job = self.jobs.get(task_id)
            if job is None:
                return self._answer(404, 1203, "The requested task does not exist")
            job["polls"] = int(job["polls"]) + 1  # type: ignore[call-overload]
            if job["polls"] == 1:
                return self._answer(200, 0, "SUCCEED", self._task(task_id, "processing"))
            if job["fail"]:
                return self._answer(
                    200, 0, "SUCCEED", self._task(task_id, "failed", msg="Image generation failed: risk control")
                )
            return self._answer(200, 0, "SUCCEED", self._task(task_id, "succeed"))
        return self._answer(404, 1203, "Not found")

    def _task(self, task_id: str, status: str, msg: str = "") -> dict[str, object]:
        job = self.jobs[task_id]
        data: dict[str, object] = {
            "task_id": task_id,
            "task_status": status,
            "task_status_msg": msg,
            "created_at": job["created"],
            "updated_at": int(time.time() * 1000),
        }
        if status == "succeed":
            url = f"{self.base_url}/kling-files/{task_id}/0.png"
            data["task_result"] = {"images": [{"index": 0, "url": url}]}
        return data


def _check(stub: KlingStub, spec: object) -> None:
    create = next(r for r in stub.requests if r.method == "POST" and r.path == PATH)
    body = create.json()
    assert body["model_name"] == "kling-v1" and body["prompt"] == spec.prompt and body["n"] == 1  # type: ignore[attr-defined]
    assert body["aspect_ratio"] == "1:1" and body["negative_prompt"] == spec.negative_prompt  # type: ignore[attr-defined]
    assert check_jwt(create.headers["authorization"]) is None
    assert any(r.method == "GET" and r.path.startswith(PATH + "/") for r in stub.requests), "the task was polled"


CASE = BackendCase(
    name="kling",
    stub=KlingStub,
    env={"KLING_ACCESS_KEY": ACCESS_KEY, "KLING_SECRET_KEY": SECRET_KEY},
    refusal_words="violates the content security policy",
    check_request=_check,
)
