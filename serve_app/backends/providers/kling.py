"""KLING image generation (https://app.klingai.com/global/dev/document-api): JWT auth, create, poll.

Auth: a JWT (HS256) signed with the secret key, claims `iss` = access key, `exp` = now + 30 min,
`nbf` = now - 5 s, sent as `Authorization: Bearer <jwt>`; made fresh for every request.
`POST /v1/images/generations {model_name, prompt, negative_prompt, n, aspect_ratio}` answers
`{code: 0, message, request_id, data: {task_id, task_status: submitted}}`; `GET
/v1/images/generations/{task_id}` is polled until `task_status` is `succeed`
(`data.task_result.images[{index, url}]`) or `failed` (`task_status_msg`). Every answer carries
KLING's own `code`: 0 is success, 1000-1004 are authentication errors, 1100-1103 account errors
(no balance, no access), 1200-1203 bad parameters, 1300/1301 policy refusals, 1302-1304 rate and
concurrency limits (429), 5000-5002 server errors; a 200 with a non-zero code is an error too.
KLING has no cancel endpoint: a task still running after `max_poll_s` is UPSTREAM_TIMEOUT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from serve_app.backends.base import BackendAuthFailed
from serve_app.backends.cloud import CloudBackend, Made, nearest_aspect_ratio
from serve_app.backends.http import bad_response
from serve_app.backends.provider import cloud_config
from serve_app.backends.registry import register_backend
from serve_app.errors import UpstreamError
from serve_app.stages import GenerationSpec

ASPECT_RATIOS = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0, "4:3": 4 / 3, "3:4": 3 / 4, "3:2": 3 / 2, "2:3": 2 / 3}
CREATE_PATH = "/v1/images/generations"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def kling_jwt(access_key: str, secret_key: str, now: float | None = None) -> str:
    """The token KLING's docs sign with PyJWT: HS256, iss = access key, exp in 30 min, nbf 5 s ago."""
    issued = int(time.time() if now is None else now)
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iss": access_key, "exp": issued + 1800, "nbf": issued - 5}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret_key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


DEFAULTS = cloud_config(
    "https://api-singapore.klingai.com",
    "kling-v1",
    "KLING_ACCESS_KEY",
    60,
    0.0035,
    secret_key_env="KLING_SECRET_KEY",
)


@register_backend("kling", defaults=DEFAULTS)
class KlingBackend(CloudBackend):
    label = "KLING"
    honoured = frozenset({"negative_prompt"})

    def auth_headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {kling_jwt(self.api_key, self.secret_key)}"}

    def _checked(self, body: Any) -> dict[str, Any]:
        """`data` of a KLING answer whose `code` is 0; KLING's own errors otherwise."""
        if not isinstance(body, dict) or "code" not in body or not isinstance(body.get("data"), dict | None):
            raise bad_response(self.label, "a body without KLING's code and data")
        code = body["code"]
        if code != 0:
            said = f"KLING code {code}: {self.http.redact(str(body.get('message', '')))}"[:300]
            if 1000 <= code <= 1004:
                raise BackendAuthFailed(f"KLING rejected the key ({said}); check ${self.cfg.api_key_env}.")
            if 1302 <= code <= 1304:
                raise UpstreamError(f"KLING is busy ({said}).", error_code="RATE_LIMITED")
            if code >= 5000:
                raise UpstreamError(f"KLING failed ({said}).", error_code="UPSTREAM_ERROR")
            raise UpstreamError(f"KLING refused the request ({said}).", error_code="UPSTREAM_REJECTED")
        return body.get("data") or {}

    async def _make(self, spec: GenerationSpec) -> Made:
        body: dict[str, Any] = {
            "model_name": self.cfg.model,
            "prompt": spec.prompt[:2500],
            "n": 1,
            "aspect_ratio": nearest_aspect_ratio(spec.width, spec.height, ASPECT_RATIOS),
            **self.cfg.options,
        }
        if spec.negative_prompt:
            body["negative_prompt"] = spec.negative_prompt[:2500]
        data = self._checked(await self.http.json("POST", CREATE_PATH, json=body))
        task_id = data.get("task_id")
        if not task_id:
            raise bad_response(self.label, "a created task without task_id")
        deadline = self._clock() + self.cfg.max_poll_s
        while True:
            status = data.get("task_status")
            if status == "succeed":
                images = (data.get("task_result") or {}).get("images") or []
                if not images or not images[0].get("url"):
                    raise bad_response(self.label, "a finished task without an image URL")
                return Made(await self.http.download(images[0]["url"]), provider_request_id=str(task_id))
            if status == "failed":
                reason = self.http.redact(str(data.get("task_status_msg") or "no reason given"))
                raise UpstreamError(f"KLING task {task_id} failed: {reason}"[:300], error_code="UPSTREAM_REJECTED")
            if status not in ("submitted", "processing"):
                raise bad_response(self.label, f"an unknown task_status {status!r}")
            if self._clock() >= deadline:
                raise UpstreamError(
                    f"KLING task {task_id} was not done after {self.cfg.max_poll_s:g} s.", error_code="UPSTREAM_TIMEOUT"
                )
            await self._sleep(self.cfg.poll_interval_s)
            data = self._checked(await self.http.json("GET", f"{CREATE_PATH}/{task_id}"))
