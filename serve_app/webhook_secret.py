"""Which secret signs webhooks, so they work on one machine with no setup.

- IMAGEGEN_WEBHOOK_SECRET set: that secret, on every profile.
- Not set, one machine (the SQLite task store): a secret made on first start and kept in
  `<data_dir>/webhook_secret` (mode 0600). Every replica of the node reads the same file; the
  first to start creates it atomically (written to a temporary file, then linked into place, which
  fails if another replica got there first: the loser reads the winner's file).
- Not set, a cluster (the PostgreSQL task store): webhooks stay off, and a webhook_url is refused
  saying why. A secret made on one node would not be the one the other nodes sign with.
A data directory that cannot be written turns webhooks off the same way; a file there that holds
no secret is a ConfigurationError (the replica does not start until it is fixed or deleted).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_app.args import CoreArgs
from serve_app.errors import ConfigurationError, InvalidInput
from serve_app.settings import Settings
from serve_app.webhooks import SECRET_PREFIX, secret_bytes

log = logging.getLogger(__name__)

SECRET_FILE = "webhook_secret"
ENV_NAME = "IMAGEGEN_WEBHOOK_SECRET"
CLUSTER_NEEDS_A_SECRET = (
    f"the cluster profile (tasks.store: postgres) needs {ENV_NAME} set on every node: a secret made on "
    "one node would not be the one the others sign with"
)


@dataclass(frozen=True)
class WebhookSecret:
    """The signing secret this replica uses (None: webhooks off), where it came from, and, when
    webhooks are off for a reason worth telling a client, that reason."""

    value: str | None
    source: str  # "environment", "file" or "none"
    path: str | None = None
    off_because: str | None = None

    @property
    def enabled(self) -> bool:
        return self.value is not None

    @classmethod
    def configured(cls, value: str | None) -> WebhookSecret:
        """The secret of the environment alone (no file): what a context built without args uses."""
        return cls(value, "environment") if value else cls(None, "none")

    def require(self, subject: str) -> None:
        """422 WEBHOOKS_DISABLED ("<subject> are not enabled on this server (why)") unless webhooks are on."""
        if not self.enabled:
            why = f" ({self.off_because})" if self.off_because else ""
            raise InvalidInput(f"{subject} are not enabled on this server{why}.", error_code="WEBHOOKS_DISABLED")

    def info(self) -> dict[str, Any]:
        """What /info shows: on or off, where the secret lives (never the secret itself)."""
        return {
            "enabled": self.enabled,
            "secret": {"environment": ENV_NAME, "file": "generated on first start", "none": None}[self.source],
            "secret_file": self.path,
            "off_because": self.off_because,
            "signature": "Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature: HMAC-SHA256)",
        }


def load_webhook_secret(settings: Settings, args: CoreArgs) -> WebhookSecret:
    """The secret every replica of this deployment signs with (see the module docstring)."""
    if settings.imagegen_webhook_secret:
        return WebhookSecret(settings.imagegen_webhook_secret, "environment")
    if args.tasks.store == "postgres":
        log.warning("webhooks are off: %s", CLUSTER_NEEDS_A_SECRET)
        return WebhookSecret(None, "none", off_because=CLUSTER_NEEDS_A_SECRET)
    path = Path(args.data_dir) / SECRET_FILE
    try:
        return WebhookSecret(node_secret(path), "file", path=str(path))
    except OSError as exc:  # a data directory this process cannot write: run, without webhooks
        why = f"no webhook secret could be made in {path} ({exc.strerror or exc}); set {ENV_NAME}"
        log.error("webhooks are off: %s", why)
        return WebhookSecret(None, "none", path=str(path), off_because=why)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def node_secret(path: Path, wait_s: float = 5.0) -> str:
    """The secret kept at `path`, made there first if there is none (mode 0600, race-safe)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create(path)
    return _read(path, wait_s)


def _create(path: Path) -> None:
    """Write a new secret to a temporary file (O_EXCL, 0600) and link it into place: the link fails
    when another process made the file first, and a reader never sees a half-written one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(new_secret() + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
            log.info("made a webhook signing secret in %s", path)
        except FileExistsError:
            pass  # another replica made it first: its secret is the one
        except OSError:  # a file system without hard links: create it in place, exclusively
            _create_in_place(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _create_in_place(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(new_secret() + "\n")


def _read(path: Path, wait_s: float) -> str:
    """The secret in `path`; a file still empty (its creator writing it in place) is read again
    for up to `wait_s`. A file others may read is used, with a warning."""
    deadline = time.monotonic() + wait_s
    while True:
        secret = path.read_text(encoding="ascii", errors="replace").strip()
        if secret or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users; chmod 600 it", path)
    try:
        secret_bytes(secret)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{path} does not hold a webhook secret ({exc.message}); delete it to make a new one, or set {ENV_NAME}.",
            error_code="WEBHOOK_SECRET_INVALID",
        ) from exc
    return secret
