"""Client-side async token bucket: keeps one replica's calls to a provider under its rate limit.

Naver's search API answers 429 above about 10 calls per second per application. All concurrent
lookups of a replica share one bucket, so a burst of items queues here instead of being refused.
"""

from __future__ import annotations

import asyncio
import time

from serve_app.shopping.base import Clock, Sleep


class AsyncTokenBucket:
    """`rate` tokens per second, at most `burst` stored; `acquire()` waits for a token.

    With the default `burst=1` calls are spaced at least `1/rate` apart, so no one-second window
    ever sees more than `rate` of them. Waiters are served in arrival order (asyncio.Lock is FIFO).
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()
        self._lock = asyncio.Lock()
        self.acquired = 0
        self.waited_s = 0.0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Take one token, sleeping until one is available."""
        async with self._lock:
            while True:
                self._refill(self._clock())
                # A hair of tolerance so float rounding never costs an extra near-zero sleep.
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    self.acquired += 1
                    return
                wait = (1.0 - self._tokens) / self.rate
                self.waited_s += wait
                await self._sleep(wait)
