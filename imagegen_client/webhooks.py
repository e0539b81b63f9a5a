"""Verify a webhook from imagegen-serve: Standard Webhooks (https://www.standardwebhooks.com).

Each delivery carries `webhook-id` (the same on every attempt and replay: deduplicate on it),
`webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`, a space-separated
list of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` (other versions are skipped).
The secret is the server's IMAGEGEN_WEBHOOK_SECRET: `whsec_` + the key in base64 (prefix and
padding optional). Verify the raw body bytes as received, before parsing them.

    from imagegen_client import verify_webhook, WebhookVerificationError

    try:
        payload = verify_webhook(secret, request.headers, raw_body)
    except WebhookVerificationError:
        return 400
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from imagegen_client.errors import ImagegenError

SECRET_PREFIX = "whsec_"


class WebhookVerificationError(ImagegenError):
    """The webhook's headers, timestamp or signature do not verify: do not trust its body."""


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError when it is empty or not base64."""
    encoded = (secret or "").strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("The webhook secret is not base64 (expected whsec_<base64 key>).") from exc
    if not key:
        raise ValueError("The webhook secret is empty.")
    return key


def webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one message (for tests and for signing your own)."""
    digest = hmac.new(webhook_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> Any:
    """Check a delivery and return its parsed JSON body.

    Raises WebhookVerificationError when a header is missing, the timestamp is not an integer or
    is more than `tolerance_s` from now (either way: replays and clock skew), or no `v1` signature
    matches. Raises ValueError when `secret` itself is malformed (a configuration error).
    """
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    key = webhook_key(secret)
    lower = {name.lower(): value for name, value in headers.items()}
    msg_id, stamp, signatures = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("Missing webhook-id, webhook-timestamp or webhook-signature header.")
    stamp = stamp.strip()
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError("Invalid webhook-timestamp.")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("Message timestamp too old.")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("Message timestamp too new.")
    expected = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(given, expected):
            try:
                return json.loads(raw) if raw else None
            except ValueError as exc:
                raise WebhookVerificationError("The signed body is not JSON.") from exc
    raise WebhookVerificationError("No matching signature found.")
