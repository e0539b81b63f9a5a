"""The UNet traced with TorchScript, one graph per input shape: the CPU's compiled path
(a preset's `tuning.trace_unet`).

On CPU the UNet is most of an image's time, and eager PyTorch pays Python and dispatch for each
of its ~2,500 ops per call; a traced graph runs the same ops without the Python: 20% less time
per call on the tiny UNet at 64x64 (44 -> 35 ms for 2 rows, 78 -> 65 ms for 4; one torch
thread), and the same numbers up to float rounding (1e-6 on the tiny model). `torch.compile`
needs a C++ toolchain and minutes per shape on a laptop; a trace takes about half a CPU-second.

- A graph is traced per input shape (rows, latent size, prompt length, dtypes), the first time
  that shape is seen, on a background thread, then run twice (TorchScript optimises a graph on
  its first calls) before any request uses it. Until then, and for a shape whose trace failed,
  the call runs eagerly: no request waits for a trace. `background=False` traces in the
  caller's thread instead (tests, warm-up).
- The graph is the base model's: it shares the UNet's weight tensors but not its Python-level
  switches (the active LoRA and its scale, seamless tiling). The caller passes `base=True` only
  while no adapter is active and tiling is off; otherwise the call runs eagerly. A trace is also
  thrown away when the engine's state changed while it was being made (`state_version`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

logger = logging.getLogger(__name__)

# The tracer notes every Python branch it fixes for a shape (a graph per shape is the design).
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)

ShapeKey = tuple[Any, ...]
MAX_GRAPHS = 16  # distinct shapes kept; past that, new shapes run eagerly


class _Call(torch.nn.Module):
    """The UNet call the step loop makes, as a module with positional tensor inputs."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timesteps, encoder_hidden_states=hidden, return_dict=False)[0]


def shape_key(sample: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor) -> ShapeKey:
    return tuple((tuple(t.shape), t.dtype, t.device) for t in (sample, timesteps, hidden))


class TracedUNet:
    """Runs `unet(sample, timesteps, encoder_hidden_states=hidden)` through a traced graph when one
    is ready for the shape, eagerly otherwise. `state_version()` is the engine's counter of
    adapter/tiling changes; call with the engine's `lock` held, as the step does."""

    def __init__(
        self,
        unet: torch.nn.Module,
        lock: threading.RLock,
        state_version: Callable[[], int],
        background: bool = True,
        max_graphs: int = MAX_GRAPHS,
    ) -> None:
        self._module = _Call(unet).eval()
        self._lock = lock
        self._state_version = state_version
        self._background = background
        self._max_graphs = max_graphs
        self._graphs: dict[ShapeKey, torch.jit.ScriptModule] = {}
        self._failed: set[ShapeKey] = set()
        self._pending: dict[ShapeKey, Future[None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.eager_calls = 0
        self.traced_calls = 0

    @property
    def shapes(self) -> int:
        """Shapes with a graph ready."""
        return len(self._graphs)

    @torch.no_grad()
    def __call__(self, sample: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor, base: bool) -> torch.Tensor:
        if base:
            key = shape_key(sample, timesteps, hidden)
            graph = self._graphs.get(key)
            if graph is not None:
                self.traced_calls += 1
                return graph(sample, timesteps, hidden)
            if self._wanted(key):
                inputs = (sample.clone(), timesteps.clone(), hidden.clone())
                self._start(key, inputs, self._state_version())
                graph = self._graphs.get(key)  # traced in this thread (background=False)
                if graph is not None:
                    self.traced_calls += 1
                    return graph(sample, timesteps, hidden)
        self.eager_calls += 1
        return self._module(sample, timesteps, hidden)

    def prepare(self, sample: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor) -> None:
        """Start the trace of these base-model inputs' shape (before traffic, on the background
        thread even when `background` is off); a no-op when it is made, failed or under way."""
        key = shape_key(sample, timesteps, hidden)
        if key not in self._graphs and self._wanted(key):
            inputs = (sample.clone(), timesteps.clone(), hidden.clone())
            self._start(key, inputs, self._state_version(), background=True)

    def wait(self) -> None:
        """Until every trace started so far has finished (tests, warm-up)."""
        for future in list(self._pending.values()):
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _wanted(self, key: ShapeKey) -> bool:
        return (
            key not in self._failed
            and key not in self._pending
            and len(self._graphs) + len(self._pending) < self._max_graphs
        )

    def _start(
        self, key: ShapeKey, inputs: tuple[torch.Tensor, ...], version: int, background: bool | None = None
    ) -> None:
        if not (self._background if background is None else background):
            self._trace(key, inputs, version)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unet-trace")
        future = self._pool.submit(self._trace, key, inputs, version)
        self._pending[key] = future
        future.add_done_callback(lambda _: self._pending.pop(key, None))

    @torch.no_grad()
    def _trace(self, key: ShapeKey, inputs: tuple[torch.Tensor, ...], version: int) -> None:
        """Trace `key`'s graph from the base state at `version` (read by the caller under the lock)."""
        try:
            graph = torch.jit.trace(self._module, inputs, check_trace=False)
            for _ in range(2):  # TorchScript profiles, then optimises, on a graph's first calls
                graph(*inputs)
        except Exception:  # this shape stays eager; the model still serves
            logger.warning("tracing the UNet for shape %s failed; it runs eagerly", key, exc_info=True)
            self._failed.add(key)
            return
        with self._lock:
            if self._state_version() != version:  # an adapter or tiling changed mid-trace: try again later
                logger.info("UNet trace for %s discarded: the pipeline state changed while tracing", key)
                return
            self._graphs[key] = graph
        logger.info("UNet traced for shape %s (%d shape(s) ready)", key, len(self._graphs))
