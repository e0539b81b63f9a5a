"""Decoded pixels an ingress replica holds at once, and giving freed image memory back to the OS.

An upload's compressed bytes say little about its memory: a 49 KB PNG of one colour can be
4096 x 4096, 48 MiB once decoded to RGB (and a copy or two while it is converted). The upload byte
budget (`admission.upload_bytes_in_flight`) bounds what is received; this bounds what is decoded:
every decode of a request's image (an upload or a fetched `initial_image_url`) first reserves its
pixel count, read from the image's header, from `admission.decoded_pixels_in_flight`. A decode
waits up to `admission.decode_wait_s` for room, then gets 503 DECODES_BUSY with Retry-After; the
pixels go back when the decode's caller is done with the image, whatever happened. No decoded image
outlives its route's intake: the routes keep the bytes and the size, never the picture, across a
wait.

glibc keeps freed heap memory for reuse, and after a large block is freed it raises its threshold
for mmap, so later 16-48 MiB image buffers come from the heap and stay in the process once freed.
`tune_malloc` (the ingress replica's start) fixes the threshold at 1 MiB, so image buffers are
mapped and unmapped, and `trim` asks glibc to hand back what is free once no decode is running.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from PIL import Image, UnidentifiedImageError

from serve_app.errors import QueueFull

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 1024 * 1024


def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold (large buffers are unmapped when freed); False where not glibc."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim() -> None:
    """Give the heap's free memory back to the OS (glibc's malloc_trim); nothing elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def header_pixels(data: bytes) -> int:
    """Width x height from the image's header (nothing decoded); 0 when it has none we can read
    (the decode itself then refuses it)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 0
    return max(0, width) * max(0, height)


class PixelBudget:
    """Decoded pixels one ingress replica holds at once; one event loop per replica, no lock."""

    POLL_S = 0.02  # how often a waiting decode looks for room (only while the budget is full)

    def __init__(self, total_pixels: int, wait_s: float, retry_after_s: int) -> None:
        self.total = total_pixels
        self.used = 0
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s

    def _fits(self, pixels: int) -> bool:
        return self.used + pixels <= self.total or self.used == 0  # one image alone always fits

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Reserve `pixels` for the block (waiting up to `wait_s` for room); given back on exit."""
        deadline = time.monotonic() + self.wait_s
        while not self._fits(pixels):
            if time.monotonic() >= deadline:
                raise QueueFull(
                    "This server is decoding as many images as it can hold; retry later.",
                    error_code="DECODES_BUSY",
                    retry_after_s=self.retry_after_s,
                )
            await asyncio.sleep(self.POLL_S)
        self.used += pixels
        try:
            yield
        finally:
            self.used -= pixels
            if self.used == 0:
                await asyncio.to_thread(trim)
