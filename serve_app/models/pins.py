"""Pins on LoRA adapters: the batches running on each one, and the unloads that wait for them.

Serve's multiplexer evicts its least recently used adapter to load another. With both batching
paths live at once (a live switch of `batching`: the step loop's batch and a static call), the
adapter it evicts may be one a running batch still needs; the unload then waits for the last pin.
"""

from __future__ import annotations

import threading


class Pins:
    """Pin counts per adapter name and the unloads deferred until a name's last pin goes; never
    waits on anything but its own short lock, so an event loop may call it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._deferred: set[str] = set()

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1

    def drop(self, name: str) -> bool:
        """One pin less; True when it was the last and an unload waits for it."""
        with self._lock:
            if name not in self._counts:
                raise RuntimeError(f"LoRA adapter {name!r} has no pin to drop")  # a pin dropped twice
            left = self._counts[name] - 1
            if left > 0:
                self._counts[name] = left
                return False
            del self._counts[name]
            return name in self._deferred

    def defer(self, name: str) -> bool:
        """An unload of `name` now: True (deferred until the last pin) while it is pinned."""
        with self._lock:
            if self._counts.get(name):
                self._deferred.add(name)
                return True
            self._deferred.discard(name)
            return False

    def cancel(self, name: str) -> None:
        """`name` was loaded again: an unload deferred before no longer stands."""
        with self._lock:
            self._deferred.discard(name)

    def due(self, name: str) -> bool:
        """Whether the unload deferred for `name` is to run now (it still stands, and no pin is left)."""
        with self._lock:
            if name in self._deferred and not self._counts.get(name):
                self._deferred.discard(name)
                return True
            return False
