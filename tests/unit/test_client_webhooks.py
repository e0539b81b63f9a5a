"""The client's webhook verification (imagegen_client.webhooks, written apart from serve_app)
cross-checked against the server's signer, serve_app.webhooks.sign: what the server signs the
client accepts, and what it must refuse (tampered, stale, future, unsigned) it refuses, as the
server's own verifier does. Then `imagegen verify-webhook` on the same cases."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from imagegen_client import WebhookVerificationError, verify_webhook, webhook_signature
from imagegen_client.cli import main
from serve_app import webhooks as server

NOW = 1_800_000_000
KEY = b"test-webhook-secret-1234567890"
SECRETS = [
    "whsec_" + base64.b64encode(KEY).decode(),  # the usual form
    base64.b64encode(KEY).decode(),  # no prefix
    "whsec_" + base64.b64encode(b"\xff" * 31).decode().rstrip("="),  # no padding
]
BODY = json.dumps({"task_id": "abc", "status": "done", "caption": "책상 ☕"}, ensure_ascii=False).encode()


def _headers(secret: str, msg_id: str = "msg_abc", timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": server.sign(secret, msg_id, timestamp, body),
    }


def _both(secret: str, headers: dict[str, str], body: bytes, now: float = NOW) -> tuple[bool, bool]:
    """(client accepts, server's verifier accepts)."""
    try:
        verify_webhook(secret, headers, body, now=now)
        client = True
    except WebhookVerificationError:
        client = False
    try:
        server.verify(secret, headers, body, now=now)
        ours = True
    except server.WebhookVerificationError:
        ours = False
    return client, ours


@pytest.mark.parametrize("secret", SECRETS)
def test_what_the_server_signs_verifies(secret: str) -> None:
    headers = _headers(secret)
    assert verify_webhook(secret, headers, BODY, now=NOW) == json.loads(BODY), "returns the parsed body"
    assert _both(secret, headers, BODY) == (True, True)
    upper = {name.upper(): value for name, value in headers.items()}
    assert _both(secret, upper, BODY) == (True, True), "header names are case-insensitive"
    assert webhook_signature(secret, "msg_abc", NOW, BODY) == headers["webhook-signature"]


@pytest.mark.parametrize("secret", SECRETS)
def test_tampering_is_refused(secret: str) -> None:
    headers = _headers(secret)
    assert _both(secret, headers, BODY + b" ") == (False, False), "body"
    assert _both(secret, {**headers, "webhook-id": "msg_other"}, BODY) == (False, False), "id"
    assert _both(secret, {**headers, "webhook-timestamp": str(NOW + 1)}, BODY) == (False, False), "timestamp"
    other = "whsec_" + base64.b64encode(b"another secret").decode()
    assert _both(other, headers, BODY) == (False, False), "another secret"
    for missing in headers:
        partial = {name: value for name, value in headers.items() if name != missing}
        assert _both(secret, partial, BODY) == (False, False), missing
    assert _both(secret, {**headers, "webhook-timestamp": "soon"}, BODY) == (False, False)


def test_stale_and_future_timestamps_are_refused() -> None:
    secret = SECRETS[0]
    for offset, ok in [(-301, False), (-299, True), (299, True), (301, False)]:
        headers = _headers(secret, timestamp=NOW + offset)
        assert _both(secret, headers, BODY) == (ok, ok), offset
    stale = _headers(secret, timestamp=NOW - 3600)
    verify_webhook(secret, stale, BODY, tolerance_s=7200, now=NOW)  # a wider tolerance accepts it


def test_several_signatures_any_v1_may_match() -> None:
    secret = SECRETS[0]
    good = server.sign(secret, "msg_abc", NOW, BODY)
    rotated = server.sign("whsec_" + base64.b64encode(b"old key").decode(), "msg_abc", NOW, BODY)
    value = good.split(",", 1)[1]
    for signatures, ok in [
        (f"{rotated} {good}", True),  # key rotation: the old and the new signature
        (f"v1a,{value} {good}", True),  # another scheme's signature is skipped
        (f"v1,not-base64!! {good}", True),
        (f"v2,{value}", False),  # only v1 counts
        (f"{rotated} v1a,{value}", False),
        ("", False),
    ]:
        headers = {**_headers(secret), "webhook-signature": signatures}
        assert _both(secret, headers, BODY) == (ok, ok), signatures


def test_a_malformed_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        verify_webhook("whsec_***", _headers(SECRETS[0]), BODY, now=NOW)
    with pytest.raises(ValueError):
        verify_webhook("whsec_", _headers(SECRETS[0]), BODY, now=NOW)


def _cli(tmp_path: Path, headers: dict[str, str], body: bytes, *extra: str) -> int:
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    args = ["verify-webhook", "--body-file", str(body_file), *extra]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    return main(args)


def test_cli_verify_webhook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = SECRETS[0]
    now = int(time.time())
    headers = _headers(secret, timestamp=now)
    assert _cli(tmp_path, headers, BODY, "--secret", secret) == 0
    assert capsys.readouterr().out.strip() == "valid: msg_abc"
    assert _cli(tmp_path, headers, BODY + b"x", "--secret", secret) == 1
    assert "invalid: No matching signature" in capsys.readouterr().err
    stale = _headers(secret, timestamp=now - 1000)
    assert _cli(tmp_path, stale, BODY, "--secret", secret, "--json") == 1
    assert json.loads(capsys.readouterr().out) == {"valid": False, "reason": "Message timestamp too old."}
    assert _cli(tmp_path, stale, BODY, "--secret", secret, "--tolerance", "2000", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"valid": True, "webhook_id": "msg_abc"}

    monkeypatch.setenv("IMAGEGEN_WEBHOOK_SECRET", secret)  # the secret from the environment
    assert _cli(tmp_path, headers, BODY) == 0
    monkeypatch.delenv("IMAGEGEN_WEBHOOK_SECRET")
    assert _cli(tmp_path, headers, BODY) == 2, "no secret at all"
    assert _cli(tmp_path, headers, BODY, "--secret", "whsec_***") == 2, "a malformed secret"
    assert main(["verify-webhook", "--secret", secret, "--body-file", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
