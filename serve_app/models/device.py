"""Device, dtype and thread settings for model replicas.

Presets say `device: auto` and `dtype: auto` so one YAML runs on a GPU node and on a laptop;
these helpers turn that into concrete torch values.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import platform

import torch

from serve_app.errors import ConfigurationError
from serve_app.settings import get_settings

logger = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` -> cuda if available, else mps, else cpu; otherwise the named device, checked."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise ConfigurationError(f"Unknown device {spec!r}.") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(f"Device {spec!r} requested but CUDA is not available.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigurationError(f"Device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) exist.")
    if device.type == "mps" and not _mps_available():
        raise ConfigurationError("Device 'mps' requested but MPS is not available.")
    return device


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """`auto` -> float16 on CUDA, float32 elsewhere; an explicit dtype is honoured where it works.

    float16 on CPU is refused: many CPU kernels lack it and the ones that have it are slow.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if spec not in _DTYPES:
        raise ConfigurationError(f"Unknown dtype {spec!r}; use auto, float32, float16 or bfloat16.")
    dtype = _DTYPES[spec]
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigurationError("dtype float16 is not supported on CPU; use auto, float32 or bfloat16.")
    return dtype


def configure_torch_threads() -> int:
    """Give torch the configured number of threads and return it.

    Ray sets OMP_NUM_THREADS=1 in replicas, which would leave a model replica on one core.
    """
    threads = torch_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        logger.info("torch threads set to %d", threads)
    return threads


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MAX_KEEP_MB = 2047  # the most bytes an int holds, in MiB


def configure_replica_process() -> int:
    """A model replica's process settings, at its start: torch's threads (returned) and the allocator."""
    configure_allocator()
    return configure_torch_threads()


def configure_allocator(keep_mb: int | None = None) -> bool:
    """Keep up to `keep_mb` (IMAGEGEN_MALLOC_KEEP_MB, 1024 by default) of freed memory in this
    process for the next batch; True when set.

    glibc hands large freed blocks back to the OS at once (mmap'd blocks, and the heap's top past its
    trim threshold), so a pipeline call that frees its activations faults them in again on the next:
    the Editor's InstructPix2Pix call took 33k page faults and 51 ms of kernel CPU per batch of two
    tiny images, and 4-7% more time (`python -m benchmarks.allocator`). The step loop keeps its
    tensors and barely faults either way. The price: a resident size that stays at the replica's
    peak plus up to `keep_mb`. A no-op where the C library is not glibc.
    """
    keep_mb = get_settings().imagegen_malloc_keep_mb if keep_mb is None else keep_mb
    if keep_mb <= 0 or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if keep_mb > MAX_KEEP_MB:
        raise ConfigurationError(
            f"IMAGEGEN_MALLOC_KEEP_MB must be at most {MAX_KEEP_MB} (an int of bytes), not {keep_mb}."
        )
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    keep = keep_mb * 1024 * 1024
    # Setting any one turns glibc's adaptive thresholds off, so set all three: blocks up to the mmap
    # threshold (at most 32 MiB, mallopt(3)) come from the heap, whose top is trimmed only past
    # `keep`, and which grows by a quarter of it at a time.
    settings = {M_MMAP_THRESHOLD: min(keep, 32 * 1024 * 1024), M_TRIM_THRESHOLD: keep, M_TOP_PAD: keep // 4}
    accepted = [libc.mallopt(param, value) == 1 for param, value in settings.items()]  # every one, no short cut
    done = all(accepted)
    if done:
        logger.info("the allocator keeps up to %d MiB of freed memory for reuse", keep_mb)
    else:
        logger.warning("mallopt refused a setting; the allocator keeps some of its defaults")
    return done


def gpu_share_report(what: str, allocated_bytes: int, share: float | None, total_bytes: int) -> tuple[bool, str]:
    """Whether a replica's model fits the GPU share Ray gave it, and a line saying so.

    `share` is the replica's `num_gpus` (None or 0: a whole GPU is assumed); the weights should
    leave room for activations, so more than 80% of the share is reported as not fitting.
    """
    budget = (share if share and share < 1 else 1.0) * total_bytes
    fits = allocated_bytes <= 0.8 * budget
    gib = 1024**3
    line = (
        f"{what}: weights take {allocated_bytes / gib:.2f} GiB of a {budget / gib:.2f} GiB share "
        f"({share or 1:g} of {total_bytes / gib:.1f} GiB)"
    )
    if not fits:
        line += "; this leaves too little for activations: raise num_gpus in the serve config or use a smaller model"
    return fits, line


def log_gpu_share(what: str, device: torch.device) -> None:
    """Log how much of this replica's GPU share its model takes (CUDA only; at replica start)."""
    if device.type != "cuda":
        return
    try:
        import ray

        share = ray.get_runtime_context().get_assigned_resources().get("GPU")
    except Exception:  # not in a Ray worker (tests, scripts)
        share = None
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    fits, line = gpu_share_report(what, torch.cuda.memory_allocated(index), share, total)
    (logger.info if fits else logger.error)(line)


def torch_threads() -> int:
    """Threads a model replica should give torch: IMAGEGEN_TORCH_THREADS, else the CPUs Ray reserved
    for the replica (num_cpus in serve_config.yaml, rounded up), else all cores.

    Giving every replica all cores oversubscribes a small box: with two model replicas on 2 cores,
    each running 2 OpenMP threads, a tiny denoising step took 4.9 s instead of 0.07 s (see
    benchmarks/load_sweep). The reservation is what the operator budgeted for the replica.
    """
    configured = get_settings().imagegen_torch_threads
    if configured:
        return configured
    reserved = _reserved_cpus()
    if reserved:
        return max(1, math.ceil(reserved))
    return max(1, os.cpu_count() or 1)


def _reserved_cpus() -> float | None:
    try:
        import ray

        if not ray.is_initialized():
            return None
        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)) or None
    except Exception:  # outside a Ray worker, or an older runtime context API
        return None
