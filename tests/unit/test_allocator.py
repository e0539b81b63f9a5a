"""configure_allocator: a model replica keeps freed memory for its next batch instead of faulting
it in again. Each case runs in its own interpreter (the setting is process-wide and permanent)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)

# 20 rounds of sixteen 1 MiB blocks written and freed together, as a denoising step's activations
# are: the page faults they cost (minor faults: pages the kernel had to hand the process again).
PROBE = """
import ctypes, resource, sys
from serve_app.models.device import configure_allocator
print(configure_allocator(int(sys.argv[1])))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 1024 * 1024
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    blocks = [libc.malloc(size) for _ in range(16)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in blocks:
        libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(keep_mb: int) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(keep_mb)], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_freed_blocks_are_reused_without_faulting_them_in_again() -> None:
    configured, faults = probe(64)
    assert configured == "True"
    # The first round faults its 16 MiB (4096 pages) in; the 19 after it reuse them.
    assert faults < 2 * 4096


def test_off_keeps_the_c_librarys_defaults() -> None:
    configured, faults = probe(0)
    assert configured == "False"
    # glibc trims the heap's freed top back to the OS after each round: every round faults it in again.
    assert faults > 10 * 4096


def test_a_keep_past_an_int_of_bytes_is_refused_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """mallopt takes an int: 16384 MiB would wrap to 0 (trim at every free, worse than the defaults)."""
    from pydantic import ValidationError

    from serve_app.errors import ConfigurationError
    from serve_app.models.device import MAX_KEEP_MB, configure_allocator
    from serve_app.settings import Settings

    with pytest.raises(ConfigurationError, match="at most 2047"):
        configure_allocator(MAX_KEEP_MB + 1)
    monkeypatch.setenv("IMAGEGEN_MALLOC_KEEP_MB", "16384")
    with pytest.raises(ValidationError):
        Settings()
