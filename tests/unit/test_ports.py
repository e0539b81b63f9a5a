"""testbed.ports: ports for local servers, chosen where the kernel's ephemeral ports never land."""

from __future__ import annotations

import socket

import pytest

from testbed import ports


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    chosen = ports.free_ports(5)
    assert len(set(chosen)) == 5
    assert all(ports.LOWEST <= port < ports._ephemeral_start() for port in chosen)
    for port in chosen:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports, "LOWEST", taken)
        monkeypatch.setattr(ports, "_ephemeral_start", lambda: taken + 1000)
        monkeypatch.setattr(ports.random, "sample", lambda population, k: list(population)[:k])
        assert taken not in ports.free_ports(3), "the held port is skipped, the next ones taken"
