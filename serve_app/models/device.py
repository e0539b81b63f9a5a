"""Device, dtype and thread settings for model replicas.

Presets say `device: auto` and `dtype: auto` so one YAML runs on a GPU node and on a laptop;
these helpers turn that into concrete torch values.
"""

from __future__ import annotations

import logging

import torch

from serve_app.config import torch_threads
from serve_app.errors import ConfigurationError

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
