"""Token bucket: no one-second window ever sees more than `rate` acquisitions (fake clock)."""

from __future__ import annotations

import asyncio
import bisect
import math

import pytest

from serve_app.shopping.ratelimit import AsyncTokenBucket
from testbed.stubs.fake_clock import FakeClock


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """Most timestamps inside any half-open window [t, t + window)."""
    times = sorted(times)
    eps = 1e-6  # float rounding of the fake clock
    return max(bisect.bisect_left(times, t + window - eps) - i for i, t in enumerate(times))


@pytest.mark.parametrize("rate", [1.0, 2.5, 5.0, 10.0])
async def test_concurrent_acquisitions_stay_under_the_rate(rate: float) -> None:
    clock = FakeClock()
    bucket = AsyncTokenBucket(rate, clock=clock, sleep=clock.sleep)
    stamps: list[float] = []

    async def worker() -> None:
        for _ in range(6):
            await bucket.acquire()
            stamps.append(clock())

    await asyncio.gather(*(worker() for _ in range(8)))
    assert len(stamps) == 48
    # Calls are spaced 1/rate apart: a one-second window holds at most ceil(rate) of them.
    assert max_in_any_window(stamps) <= math.ceil(rate)
    # ... and it is not slower than it must be: 48 calls take about 47 / rate seconds.
    assert stamps[-1] - stamps[0] == pytest.approx(47 / rate, rel=1e-6)
    assert bucket.acquired == 48


async def test_burst_allows_that_many_at_once_then_paces() -> None:
    clock = FakeClock()
    bucket = AsyncTokenBucket(2.0, burst=3, clock=clock, sleep=clock.sleep)
    start = clock()
    stamps = []
    for _ in range(5):
        await bucket.acquire()
        stamps.append(clock() - start)
    assert stamps[:3] == [0.0, 0.0, 0.0]
    assert stamps[3:] == pytest.approx([0.5, 1.0])


async def test_idle_time_refills_but_never_beyond_burst() -> None:
    clock = FakeClock()
    bucket = AsyncTokenBucket(1.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    clock.advance(100)
    await bucket.acquire()
    assert clock.sleeps == []
    await bucket.acquire()
    assert clock.sleeps == [pytest.approx(1.0)]


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0.5)])
def test_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        AsyncTokenBucket(rate, burst=burst)
