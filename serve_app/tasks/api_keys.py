"""API keys, hashed at rest in the task store's database.

A key reads `igs_<key_id>_<secret>`: `key_id` (16 hex) names the row and is safe to show and log;
`secret` (43 url-safe characters, 256 random bits) is shown once, when the key is made, and kept
only as its SHA-256. A slow password hash buys nothing for a 256-bit random secret, and a fast one
keeps authentication off the request's critical path. Checks compare digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from serve_app.errors import InvalidInput, NotFound, Unauthorized
from serve_app.storage.base import sanitize_user_id
from serve_app.tasks.db import Database, Row


class KeyLimits(BaseModel):
    """What one API key may do; a key's own limits override `auth.default_limits` field by field."""

    max_pixel_steps_per_image: int | None = Field(
        default=None, ge=1, description="height x width x steps of one image; above it: 403 KEY_LIMIT_EXCEEDED."
    )
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Generation requests accepted per rolling minute; above: 429 RATE_LIMITED."
    )
    max_in_flight: int | None = Field(
        default=None, ge=1, description="Tasks queued or running at once; above: 429 TOO_MANY_TASKS."
    )
    max_cost_in_flight: int | None = Field(
        default=None, ge=1, description="Sum of the costs of its queued and running tasks; above: 429."
    )

    def over(self, defaults: KeyLimits) -> KeyLimits:
        """These limits, with the fields they leave unset taken from `defaults`."""
        return KeyLimits.model_validate(
            {
                name: getattr(self, name) if getattr(self, name) is not None else getattr(defaults, name)
                for name in KeyLimits.model_fields
            }
        )


KEY_PREFIX = "igs_"
_TOKEN_RE = re.compile(r"^igs_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class ApiKey(BaseModel):
    """One key as operators see it: never its secret or hash."""

    key_id: str
    name: str
    user_id: str = Field(description="The owner segment of the storage keys of its tasks' images.")
    limits: KeyLimits = Field(description="Its own limits; unset fields fall back to auth.default_limits.")
    created_at: float
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, row: Row) -> ApiKey:
        data = {k: v for k, v in row.items() if k != "secret_hash"}
        data["limits"] = KeyLimits.model_validate_json(row["limits"])
        return cls.model_validate(data)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    match = _TOKEN_RE.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


class ApiKeyStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    def create(self, name: str, *, user_id: str | None = None, limits: KeyLimits | None = None) -> tuple[ApiKey, str]:
        """A new key: (its record, the token to hand to the caller; shown this once)."""
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidInput("A key needs a name of 1 to 128 characters.")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        owner = sanitize_user_id(user_id) if user_id else f"key-{key_id}"
        now = self._clock()
        with self.db.tx() as tx:
            tx.run(
                "INSERT INTO api_keys (key_id, name, user_id, secret_hash, limits, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, owner, _digest(secret), (limits or KeyLimits()).model_dump_json(), now),
            )
            row = tx.one("SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
        assert row is not None  # inserted in this transaction
        return ApiKey.from_row(row), f"{KEY_PREFIX}{key_id}_{secret}"

    def authenticate(self, token: str | None) -> ApiKey:
        """The live key `token` names; Unauthorized (401) for none, a malformed, unknown or revoked one.

        The messages never repeat what was sent.
        """
        if not token:
            raise Unauthorized()
        parsed = parse_token(token)
        if parsed is None:
            raise Unauthorized("The API key is malformed.", error_code="INVALID_API_KEY")
        key_id, secret = parsed
        rows = self.db.read("SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
        if not rows or not hmac.compare_digest(rows[0]["secret_hash"], _digest(secret)):
            raise Unauthorized("The API key is not valid.", error_code="INVALID_API_KEY")
        key = ApiKey.from_row(rows[0])
        if key.revoked:
            raise Unauthorized("The API key has been revoked.", error_code="API_KEY_REVOKED")
        return key

    def get(self, key_id: str) -> ApiKey:
        rows = self.db.read("SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
        if not rows:
            raise NotFound(f"No API key {key_id}.", error_code="API_KEY_NOT_FOUND")
        return ApiKey.from_row(rows[0])

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key at once (every replica reads the store on each request); idempotent."""
        with self.db.tx() as tx:
            tx.run(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (self._clock(), key_id)
            )
        return self.get(key_id)

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        sql = "SELECT * FROM api_keys" + ("" if include_revoked else " WHERE revoked_at IS NULL")
        return [ApiKey.from_row(row) for row in self.db.read(sql + " ORDER BY created_at")]
