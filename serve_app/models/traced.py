"""The UNet traced with TorchScript, one graph per input shape: the CPU's compiled path
(a preset's `tuning.trace_unet`).

On CPU the UNet is most of an image's time, and eager PyTorch pays Python and dispatch for each
of its ~2,500 ops per call; a traced graph runs the same ops without the Python: 20% less time
per call on the tiny UNet at 64x64 (44 -> 35 ms for 2 rows, 78 -> 65 ms for 4; one torch
thread), and the same numbers up to float rounding (1e-6 on the tiny model). A trace takes about
half a CPU-second. `torch.compile` (inductor, `tuning.compile`) runs that call in 28 ms but took
44 s to compile one shape on this 2-core machine (needs a C++ compiler): minutes of replica start
for the shapes step batching runs, where a scale-up has seconds.

- A graph is traced per input shape (rows, latent size, prompt length, dtypes) that `prepare`
  names: the Generator names its preset's default size at each batch size it can run, at
  replica start. The trace runs on a background thread, then the graph runs twice (TorchScript
  optimises a graph on its first calls) before any request uses it. Until then, for any other
  shape, and for a shape whose trace failed, the call runs eagerly: no request waits for a trace,
  and no trace competes with a burst for the CPU (tracing on first use did: a first scale-up
  took 8.9-9.9 s instead of 6.6-6.7, benchmarks.scale_up).
- The graph is the base model's: it shares the UNet's weight tensors but not its Python-level
  switches (the active LoRA and its scale, seamless tiling). The caller passes `base=True` only
  while no adapter is active and tiling is off; otherwise the call runs eagerly. A trace is also
  thrown away when the engine's state changed before or while it was being made (`state_version`),
  and made again from the next base-model call of that shape (three times at most).
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
MAX_RETRIES = 3  # traces of one shape thrown away by state changes before it stays eager


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
        max_graphs: int = MAX_GRAPHS,
    ) -> None:
        self._module = _Call(unet).eval()
        self._lock = lock
        self._state_version = state_version
        self._max_graphs = max_graphs
        self._graphs: dict[ShapeKey, torch.jit.ScriptModule] = {}
        self._failed: set[ShapeKey] = set()
        self._pending: dict[ShapeKey, Future[None]] = {}
        # Shapes whose trace was thrown away (the state changed meanwhile): traced again from the next
        # base-model call of that shape, MAX_RETRIES times at most (`_discarded` counts them).
        self._retry: set[ShapeKey] = set()
        self._discarded: dict[ShapeKey, int] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.eager_calls = 0
        self.traced_calls = 0

    @property
    def shapes(self) -> int:
        """Shapes with a graph ready."""
        return len(self._graphs)

    @torch.no_grad()
    def __call__(self, sample: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor, base: bool) -> torch.Tensor:
        graph = None
        if base:
            key = shape_key(sample, timesteps, hidden)
            graph = self._graphs.get(key)
            if graph is None and key in self._retry and key not in self._pending:
                self._retry.discard(key)
                self.prepare(sample, timesteps, hidden)
        if graph is not None:
            self.traced_calls += 1
            return graph(sample, timesteps, hidden)
        self.eager_calls += 1
        return self._module(sample, timesteps, hidden)

    def prepare(self, sample: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor) -> None:
        """Start tracing these base-model inputs' shape on the background thread; a no-op when its
        graph is made, failed or under way, or `max_graphs` are."""
        key = shape_key(sample, timesteps, hidden)
        if key in self._graphs or key in self._failed or key in self._pending:
            return
        if len(self._graphs) + len(self._pending) >= self._max_graphs:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unet-trace")
        inputs = (sample.clone(), timesteps.clone(), hidden.clone())
        future = self._pool.submit(self._trace, key, inputs, self._state_version())
        self._pending[key] = future
        future.add_done_callback(lambda _: self._pending.pop(key, None))

    def wait(self) -> None:
        """Until every trace started so far has finished (tests, benchmarks)."""
        for key, future in list(self._pending.items()):
            future.result()
            if self._pending.get(key) is future:  # its done callback may not have run yet
                del self._pending[key]

    def _discard(self, key: ShapeKey, why: str) -> None:
        """A trace thrown away because the engine's state changed: traced again from the next base
        call of its shape, up to MAX_RETRIES times."""
        discarded = self._discarded[key] = self._discarded.get(key, 0) + 1
        if discarded <= MAX_RETRIES:
            self._retry.add(key)
        then = "traced again at its next base call" if discarded <= MAX_RETRIES else "eager from now on"
        logger.info("UNet trace for %s discarded (%s); %s", key, why, then)

    @torch.no_grad()
    def _trace(self, key: ShapeKey, inputs: tuple[torch.Tensor, ...], version: int) -> None:
        """Trace `key`'s graph from the base state at `version` (read by `prepare` under the lock)."""
        if self._state_version() != version:  # changed while it waited its turn: not worth the CPU
            self._discard(key, "the pipeline state changed before it started")
            return
        try:
            graph = torch.jit.trace(self._module, inputs, check_trace=False)
            for _ in range(2):  # TorchScript profiles, then optimises, on a graph's first calls
                graph(*inputs)
        except Exception:  # this shape stays eager; the model still serves
            logger.warning("tracing the UNet for shape %s failed; it runs eagerly", key, exc_info=True)
            self._failed.add(key)
            return
        with self._lock:
            if self._state_version() != version:  # an adapter or tiling changed mid-trace
                self._discard(key, "the pipeline state changed while tracing")
                return
            self._graphs[key] = graph
        logger.info("UNet traced for shape %s (%d shape(s) ready)", key, len(self._graphs))
