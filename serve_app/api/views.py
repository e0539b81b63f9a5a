"""Request fingerprints for Idempotency-Key checks."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def request_fingerprint(payload: dict[str, Any], extra: bytes = b"") -> str:
    """Stable hash of a request body (and an uploaded file) for Idempotency-Key checks."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode())
    digest.update(hashlib.sha256(extra).digest())
    return digest.hexdigest()
