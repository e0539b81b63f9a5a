"""Free TCP ports on 127.0.0.1 for the servers tests and benchmarks start, chosen below the
kernel's ephemeral range.

A port the kernel hands out for `bind(("127.0.0.1", 0))` comes from the ephemeral range
(`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 here), the same range every outgoing
connection's local port and every other `bind(0)` draws from. Between choosing such a port and the
server binding it, Ray's own processes starting up (gRPC clients, agents) can take it, and the
server fails with "Address already in use" (seen once in CI: HAProxy's frontend). Ports from
20000 up to the start of the ephemeral range are above Ray's worker ports (10002-19999) and are
never handed out by the kernel, so only another explicit choice could take one.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20000  # above Ray's default worker ports (min/max_worker_port 10002-19999)


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now, outside the ephemeral range when it leaves room."""
    top = _ephemeral_start()
    chosen: list[int] = []
    if top - LOWEST >= 1000:
        for port in random.sample(range(LOWEST, top), k=min(top - LOWEST, 200 + count)):
            if len(chosen) == count:
                return chosen
            if _bindable(port):
                chosen.append(port)
    while len(chosen) < count:  # no room below the ephemeral range: the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in chosen:
            chosen.append(port)
    return chosen


def free_port() -> int:
    """One port free on 127.0.0.1 now (see `free_ports`)."""
    return free_ports(1)[0]
