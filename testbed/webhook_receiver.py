"""A real webhook receiver for tests: stdlib ThreadingHTTPServer on 127.0.0.1:0 in a thread.

It records every delivery (headers, body, the status it answered) and checks the Standard Webhooks
signature with its own small HMAC code (independent of serve_app.webhooks, so tests of the sender
are not circular). `fail_first(n, status)` makes the next n requests fail before it accepts;
`drop_first(n)` makes the next n requests get no answer at all (the connection is closed after the
request is read, as when the receiver's process dies: the sender sees a transport error), before
any `fail_first` answers. `port` binds a given port, so a receiver can be stopped (its port then
refuses connections) and a new one started on the same URL.

    with WebhookReceiver(secret="whsec_...") as rx:
        ... deliver to rx.url ...
        (d,) = rx.wait_for(1, timeout=5)
        assert d.verified
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any

from testbed.local_server import LocalServer, QuietHandler

DROPPED = 0  # Delivery.status of a request that got no answer (drop_first)


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered; DROPPED when it closed the connection without an answer
    verified: bool | None  # None when the receiver has no secret

    def json(self) -> Any:
        return json.loads(self.body)


def _key(secret: str) -> bytes:
    """As the Standard Webhooks reference library reads a secret (deliberately not our own parser)."""
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


def check_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """True when one `v1,` signature in webhook-signature matches id.timestamp.body."""
    msg_id, stamp, sigs = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature")
    if not (msg_id and stamp and sigs):
        return False
    expected = base64.b64encode(hmac.new(_key(secret), f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    return any(sig.startswith("v1,") and hmac.compare_digest(sig[3:].encode(), expected) for sig in sigs.split())


class WebhookReceiver(LocalServer):
    """Records deliveries; answers `fail_status` to the first `n` requests, then `ok_status`."""

    def __init__(self, secret: str | None = None, *, ok_status: int = 204, port: int = 0) -> None:
        self.secret = secret
        self.ok_status = ok_status
        self._lock = threading.Condition()
        self._deliveries: list[Delivery] = []
        self._drop_left = 0
        self._fail_left = 0
        self._fail_status = 500
        self._fail_headers: dict[str, str] = {}
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra = receiver._next_status()
                verified = check_signature(receiver.secret, headers, body) if receiver.secret else None
                with receiver._lock:
                    receiver._deliveries.append(Delivery(self.path, headers, body, status, verified))
                    receiver._lock.notify_all()
                if status == DROPPED:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler, port, name="webhook-receiver")
        self.url = f"{self.base_url}/hook"

    def fail_first(self, n: int, status: int = 500, headers: dict[str, str] | None = None) -> None:
        """Answer the next `n` requests with `status` (and `headers`, e.g. Retry-After)."""
        with self._lock:
            self._fail_left, self._fail_status, self._fail_headers = n, status, dict(headers or {})

    def drop_first(self, n: int) -> None:
        """Close the connection of the next `n` requests without answering (checked before fail_first)."""
        with self._lock:
            self._drop_left = n

    def _next_status(self) -> tuple[int, dict[str, str]]:
        with self._lock:
            if self._drop_left > 0:
                self._drop_left -= 1
                return DROPPED, {}
            if self._fail_left > 0:
                self._fail_left -= 1
                return self._fail_status, self._fail_headers
            return self.ok_status, {}

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Delivery]:
        """The first `n` deliveries once they arrived; TimeoutError after `timeout` seconds."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._deliveries) >= n, timeout=timeout):
                raise TimeoutError(f"{len(self._deliveries)} of {n} webhook deliveries after {timeout} s")
            return list(self._deliveries[:n])
