"""When and how long to retry a request.

Retried: connection failures and timeouts (the request may or may not have reached the server,
so only requests that are safe to repeat go through here: reads, cancels, and submits with an
Idempotency-Key), and the statuses that mean "later": 429, 502, 503, 504. Never other 4xx.

The wait is the server's Retry-After when it sends one (a Retry-After longer than
`max_retry_after_s` is not waited out: the error is raised with its `retry_after`), else
exponential backoff with equal jitter: d/2 + rand() * d/2 with d = min(max_backoff_s,
backoff_s * 2**retry), so retries of many clients spread out without ever bunching at zero.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})

# Transport failures worth another try; not e.g. an unsupported URL scheme or an invalid header.
RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 120.0
    statuses: frozenset[int] = RETRY_STATUSES
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def retries_status(self, status: int) -> bool:
        return status in self.statuses

    def backoff(self, retry: int) -> float:
        """The wait before retry number `retry` (0 for the first) without a Retry-After."""
        cap = min(self.max_backoff_s, self.backoff_s * 2.0**retry)
        return cap / 2 + self.rand() * cap / 2

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        """The wait before retry number `retry`, or None when the server asks for a longer one than
        this policy waits out."""
        if retry_after is None:
            return self.backoff(retry)
        if retry_after > self.max_retry_after_s:
            return None
        return max(0.0, retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After value: delta-seconds or an HTTP date (RFC 9110); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))
