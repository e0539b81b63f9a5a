"""A fake monotonic clock whose `sleep` advances time instantly, for fast, timing-free tests."""

from __future__ import annotations

import asyncio


class FakeClock:
    """Call it for the time; `await clock.sleep(s)` moves time forward by `s` and records `s`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)  # still yield, like a real sleep
