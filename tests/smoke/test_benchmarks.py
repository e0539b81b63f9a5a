"""Each benchmark runs end to end with its --smoke settings and writes the JSON it promises.

Benchmarks are not timed tests: nothing here asserts a speed, only that the script exits 0, writes
`<name>-<timestamp>.json` and `<name>-latest.json`, and that the JSON has the expected keys.
Run with `pytest tests/smoke` (the scripts start their own short-lived Ray clusters and servers on
127.0.0.1; a few minutes for all of them on a 2-core machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testbed.processes import kill_orphaned_haproxy

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMON_KEYS = {"benchmark", "started_at", "duration_s", "argv", "smoke", "settings", "machine", "results", "tables"}
MACHINE_KEYS = {"cpu_count", "torch_version", "device_name", "git_sha", "ray_version"}

# benchmark -> keys its `results` must have
EXPECTED: dict[str, set[str]] = {
    "serve_overhead": {"latency", "added", "peak_rps", "peak_rps_max", "throughput_rps", "startup_s"},
    "batching": {"plain", "serve", "serve_startup_s"},
    "edit_batching": {"plain", "serve", "serve_startup_s"},
    "load_sweep": {"rates", "target", "startup_s"},
    "lora_switch": {"requests", "ops", "mixed", "max_resident"},
    "cold_start": {"runs"},
    "gpu_throughput": {"models", "peak_tflops", "device_name"},
    "task_store": {"sqlite"},
    "peers": {"rates", "peer_startup_s", "app_startup_s"},
    "backends": {"providers"},
    "texture_cache": {"sizes"},
    "scale_up": {"runs", "autoscaling_config", "startup_s"},
    "gpu_session": {"model", "floor", "peers", "peak_tflops", "cold_start"},
    "hostile": {"quiet", "one_caller", "many_callers", "memory", "slowloris", "startup_s"},
    "ingress_path": {"tree", "routes"},
    "lanes": {"workers", "lanes", "processes"},
    "allocator": {"runs"},
}


def run_smoke(name: str, out: Path, timeout_s: float = 240) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    kill_orphaned_haproxy()  # an earlier Serve app's, holding HAProxy's fixed stats ports
    env.update(RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    latest = out / f"{name}-latest.json"
    assert latest.is_file(), f"no {latest}; files: {sorted(p.name for p in out.iterdir())}"
    stamped = [p for p in out.glob(f"{name}-*.json") if p.name != latest.name]
    assert len(stamped) == 1, stamped
    data = json.loads(latest.read_text(encoding="utf-8"))
    assert data == json.loads(stamped[0].read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_smoke(name: str, tmp_path: Path) -> None:
    data = run_smoke(name, tmp_path)
    assert COMMON_KEYS <= data.keys(), COMMON_KEYS - data.keys()
    assert data["benchmark"] == name and data["smoke"] is True
    assert MACHINE_KEYS <= data["machine"].keys()
    assert data["machine"]["cpu_count"] >= 1
    assert EXPECTED[name] <= data["results"].keys(), EXPECTED[name] - data["results"].keys()
    assert data["tables"] and all(table["rows"] for table in data["tables"])
    check = globals().get(f"_check_{name}")
    if check is not None:
        check(data["results"])


def _check_serve_overhead(results: dict[str, Any]) -> None:
    for route in ("noop", "hop", "model", "chain"):
        assert results["latency"][route]["bare"]["n"] > 0
        assert results["latency"][route]["serve-tuned"]["n"] > 0
    assert {"per_hop", "per_hop_in_chain"} <= results["added"]["serve-tuned"].keys()


def _check_ingress_path(results: dict[str, Any]) -> None:
    statuses = {label: route["statuses"] for label, route in results["routes"].items()}
    assert list(statuses.values()) == [[404], [400], [200]], statuses
    assert all(route["n"] > 0 for route in results["routes"].values())


def _check_lanes(results: dict[str, Any]) -> None:
    assert len(results["lanes"]) == len(results["processes"]) == 1
    assert all(rate > 0 for rate in results["lanes"] + results["processes"])


def _check_allocator(results: dict[str, Any]) -> None:
    (by_keep,) = results["runs"].values()
    assert [r["configured"] for r in by_keep["0"] + by_keep["1024"]] == [False, True]
    assert all(r["ms_per_batch"] > 0 for r in by_keep["0"] + by_keep["1024"])


def _check_scale_up(results: dict[str, Any]) -> None:
    (run,) = results["runs"]
    assert "error" not in run, run
    assert 0 < run["starting_s"] <= run["running_s"] <= run["taking_traffic_s"]
    assert results["autoscaling_config"]["max_replicas"] >= 2


def _check_hostile(results: dict[str, Any]) -> None:
    """One caller's streams past its cap are 429; probes answer while streams are open; the
    trickled upload is answered 408 (not left to the client's own limit)."""
    one = results["one_caller"]
    assert one["codes"].get("429", 0) == one["streams"] - 8 and one["codes"].get("200") == 8  # per_caller 8
    for phase in ("one_caller", "many_callers"):
        assert {route: stats["codes"] for route, stats in results[phase]["probes"].items()} == {
            "healthcheck": [200],
            "info": [200],
            "submit": [202],
        }
    assert results["memory"]["codes"] and "0" not in results["memory"]["codes"]
    assert "408" in results["slowloris"]["answer"], results["slowloris"]


def _check_gpu_session(results: dict[str, Any]) -> None:
    """The GPU script's CPU rehearsal: a saved SD folder both targets loaded, and their numbers."""
    assert "error" not in results["peers"], results["peers"]
    targets = {rate["target"] for rate in results["peers"]["rates"]}
    # the app as shipped, and with its bound in time at the SLO
    assert targets == {"ray-doc-example", "imagegen-serve", "imagegen-serve wait<=30s"}
    assert all(rate["done"] == rate["requests"] for rate in results["peers"]["rates"])
    assert results["floor"]["flops_per_image"] > 0
    cold = results["cold_start"]  # the laptop profile's start, on this machine's cores
    assert "error" not in cold and cold["cpus"] >= 1, cold
    (run,) = cold["runs"]
    assert run["to_healthy_s"] > 0 and run["first_task_status"] == "done", run


def _check_batching(results: dict[str, Any]) -> None:
    assert set(results["plain"]) == set(results["serve"]) == {"1", "2"}
    for size in ("1", "2"):
        assert results["plain"][size]["images_per_s"] > 0
        assert results["serve"][size]["mean_observed_batch"] >= 1


_check_edit_batching = _check_batching


def _check_load_sweep(results: dict[str, Any]) -> None:
    (rate,) = results["rates"]
    assert {"offered_rps", "completed_rps", "e2e", "errors", "rejected_503", "goodput_rps"} <= rate.keys()
    assert rate["completed"] + rate["errors"] + rate["rejected_503"] >= rate["requests"]
    assert {"p50_ms", "p90_ms", "p99_ms"} <= rate["e2e"].keys()


def _check_lora_switch(results: dict[str, Any]) -> None:
    assert set(results["requests"]) == {"no_switch", "resident_switch", "load"}
    assert {"load_lora_weights", "set_adapters", "delete_adapters"} <= results["ops"].keys()
    assert [m["adapters"] for m in results["mixed"]][:2] == [1, 2]


def _check_cold_start(results: dict[str, Any]) -> None:
    (run,) = results["runs"]
    assert run["preset"] == "tiny" and "error" not in run, run
    assert run["to_healthy_s"] > 0 and run["to_first_task_s"] >= run["to_healthy_s"]
    assert run["first_task_status"] == "done"


def _check_task_store(results: dict[str, Any]) -> None:
    for kind, runs in results.items():
        assert [r["runners"] for r in runs] == [1, 8], kind
        assert all(r["claimed_once"] and r["claims_per_s"] > 0 for r in runs), kind


def _check_gpu_throughput(results: dict[str, Any]) -> None:
    model = results["models"]["sd15"]
    assert model["flops_per_image"] > 0 and model["flops"]["unet_forward_cfg"] > 0
    assert model["runs"] and model["runs"][0]["images_per_s"] > 0 and model["runs"][0]["tuning"] == "default"


def _check_backends(results: dict[str, Any]) -> None:
    assert set(results["providers"]) == {"huggingface", "openai", "stability", "replicate", "kling", "gemini"}
    for paths in results["providers"].values():
        assert all(path["as_expected"] for path in paths.values()), paths
