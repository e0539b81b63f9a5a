"""benchmarks.cold_start: whose CPU the start took, grouped, from two snapshots of every process."""

from __future__ import annotations

import os
from dataclasses import dataclass

from benchmarks.cold_start import cpu_groups, cpu_spent
from benchmarks.common import process_role


@dataclass
class FakeProcess:
    cmd: list[str]
    exe: str = "python"
    pid: int = 1

    def name(self) -> str:
        return self.exe

    def cmdline(self) -> list[str]:
        return self.cmd


def test_a_replica_is_its_deployment_whatever_method_it_runs_and_a_daemon_is_named() -> None:
    starting = FakeProcess(["ray::ServeReplica:imagegen:Generator.initialize_and_get_metadata"])
    assert process_role(starting) == "Generator"
    assert process_role(FakeProcess(["ray::ServeReplica:imagegen:Generator"])) == "Generator"
    assert process_role(FakeProcess(["ray::ServeController.listen_for_change"])) == "ServeController"
    assert process_role(FakeProcess(["/venv/bin/gcs_server", "--port=1"])) == "gcs_server"
    assert process_role(FakeProcess(["sleep", "9"], exe="sleep")) == "sleep"
    assert process_role(FakeProcess(["python", "-m", "x"], pid=os.getpid())) == "the load generator (this process)"


def test_the_cpu_a_start_took_is_the_growth_between_snapshots_grouped_by_who() -> None:
    before = {"Generator": 0.0, "gcs_server": 1.0, "kworker": 3.0}
    after = {"Generator": 6.0, "Captioner": 2.5, "Ingress": 1.25, "gcs_server": 1.5, "kworker": 3.01, "new": 0.5}
    spent = cpu_spent(before, after)
    assert spent == {"Generator": 6.0, "Captioner": 2.5, "Ingress": 1.25, "gcs_server": 0.5, "new": 0.5}
    assert list(spent) == ["Generator", "Captioner", "Ingress", "gcs_server", "new"]  # largest first; 0.01 dropped
    assert cpu_groups(spent) == (10.75, 8.5, 1.25, 1.0)
