"""Shared helpers for the benchmarks: stats, tables, result files, machine info, Ray/Serve lifecycles, load.

Every benchmark builds a `BenchRun`, prints its tables with `print_table` and writes it with
`write_results` (`<out>/<name>-<timestamp>.json` and `<out>/<name>-latest.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from testbed.harness import deploy_config, free_port, wait_http_ok
from testbed.processes import kill_orphaned_haproxy

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagegen-serve-bench"

# --- statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


class LatencyStats(BaseModel):
    """Summary of a latency sample, in milliseconds."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """LatencyStats of a sample given in seconds (all nan when empty)."""
    ms = [s * 1e3 for s in seconds]
    mean = sum(ms) / len(ms) if ms else math.nan
    return LatencyStats(
        n=len(ms),
        mean_ms=mean,
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        min_ms=min(ms) if ms else math.nan,
        max_ms=max(ms) if ms else math.nan,
    )


# --- machine info and result files ---------------------------------------------------------------


class MachineInfo(BaseModel):
    """Where a benchmark ran."""

    hostname: str
    platform: str
    python: str
    cpu_count: int | None
    cpus_usable: int | None
    load_avg_1m: float | None
    memory_gib: float | None
    torch_version: str | None
    torch_threads: int | None
    device: str
    device_name: str
    cuda_version: str | None
    ray_version: str | None
    diffusers_version: str | None
    git_sha: str | None
    git_dirty: bool | None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        return None
    return None


def device_name(device: str = "cpu") -> str:
    """A readable name of `device` (the GPU's name, or the CPU model)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(torch.device(device)))
        return "cuda (not available)"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def machine_info(device: str = "cpu") -> MachineInfo:
    """CPU count, torch/ray/diffusers versions, device name and git sha of this run."""
    torch_version = torch_threads = cuda_version = None
    try:
        import torch

        torch_version = torch.__version__
        torch_threads = torch.get_num_threads()
        cuda_version = torch.version.cuda
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    status = _git("status", "--porcelain", "--untracked-files=no")
    return MachineInfo(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        load_avg_1m=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        memory_gib=_memory_gib(),
        torch_version=torch_version,
        torch_threads=torch_threads,
        device=device,
        device_name=device_name(device),
        cuda_version=cuda_version,
        ray_version=_version("ray"),
        diffusers_version=_version("diffusers"),
        git_sha=_git("rev-parse", "HEAD"),
        git_dirty=None if status is None else bool(status),
    )


class Table(BaseModel):
    """A printed table, kept in the JSON too."""

    title: str
    columns: list[str]
    rows: list[list[Any]]


class BenchRun(BaseModel):
    """What every benchmark writes: settings, machine, raw results, the printed tables."""

    benchmark: str
    started_at: str = Field(description="ISO time (UTC) the run started.")
    duration_s: float = 0.0
    argv: list[str] = Field(default_factory=list)
    smoke: bool = False
    settings: dict[str, Any] = Field(default_factory=dict)
    machine: MachineInfo
    results: dict[str, Any] = Field(default_factory=dict)
    tables: list[Table] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict, description="What was not run, and why.")
    notes: list[str] = Field(default_factory=list)


def new_run(name: str, args: argparse.Namespace, device: str = "cpu") -> BenchRun:
    """A BenchRun for `name` with the parsed options as its settings."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    # Serve's request-path switches (scripts/serve_env.sh) change what is measured: keep them.
    settings["ray_serve_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("RAY_SERVE_")}
    return BenchRun(
        benchmark=name,
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        argv=sys.argv[1:],
        smoke=bool(getattr(args, "smoke", False)),
        settings=settings,
        machine=machine_info(device),
    )


def _json_safe(value: Any) -> Any:
    """nan/inf as None, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_results(run: BenchRun, out_dir: Path | str, started: float | None = None) -> Path:
    """Write `<out_dir>/<name>-<timestamp>.json` and `<name>-latest.json`; return the first."""
    import json

    if started is not None:
        run.duration_s = round(time.perf_counter() - started, 2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = json.dumps(_json_safe(run.model_dump(mode="json")), indent=2, allow_nan=False) + "\n"
    path = out / f"{run.benchmark}-{stamp}.json"
    path.write_text(text, encoding="utf-8")
    (out / f"{run.benchmark}-latest.json").write_text(text, encoding="utf-8")
    print(f"\nresults: {path}")
    return path


@contextlib.contextmanager
def bench_run(name: str, args: argparse.Namespace, device: str = "cpu", *, quiet: bool = True) -> Iterator[BenchRun]:
    """The BenchRun of a benchmark's main(): `quiet` silences the model libraries first
    (quiet_libraries), the run is timed from here, and written to `args.out` (write_results) when the
    block ends without an error."""
    if quiet:
        quiet_libraries()
    started = time.perf_counter()
    run = new_run(name, args, device)
    yield run
    write_results(run, args.out, started)


def fmt(value: Any) -> str:
    """A table cell: floats with 3 significant-ish digits, None/nan as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], run: BenchRun | None = None) -> None:
    """Print an aligned text table (and keep it in `run.tables`)."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    print(line)
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
    if run is not None:
        run.tables.append(Table(title=title, columns=list(columns), rows=[list(r) for r in rows]))


def base_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every benchmark has: --smoke and --out."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="smallest settings (CI smoke test; numbers meaningless)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON results")
    return parser


def quiet_libraries() -> None:
    """Silence the transformers/diffusers warnings and progress bars (here and in child processes)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


# --- processes, ports, temp dirs -----------------------------------------------------------------


def short_tmpdir(prefix: str) -> Path:
    """A fresh folder directly under /tmp (Ray's unix socket paths must stay under 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass(frozen=True)
class Workspace:
    """An in-process app's private folder (`root`), its `data_dir` and the free port it serves on."""

    root: Path
    data_dir: Path
    port: int


@contextlib.contextmanager
def app_workspace(prefix: str) -> Iterator[Workspace]:
    """A `short_tmpdir` with an empty data/ folder and a free port on 127.0.0.1; removed at the end."""
    root = short_tmpdir(prefix)
    try:
        data_dir = root / "data"
        data_dir.mkdir()
        yield Workspace(root, data_dir, free_port())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pids_mentioning(marker: str) -> list[int]:
    """Ids of live processes whose command line contains `marker` (e.g. our private Ray temp dir)."""
    pids = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def kill_pids(pids: Sequence[int], grace_s: float = 3.0) -> None:
    """SIGTERM the given processes, then SIGKILL what is left after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
    """Send `sig` to a child we started, wait, SIGKILL it past `timeout_s`; return its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for Ray and child processes: auth off, never attach to someone else's cluster."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=path)
    env.update(extra)
    return env


def process_role(proc: Any) -> str:
    """A process's role: a Serve replica's deployment, a Ray daemon, or its executable's name."""
    name = proc.name()
    cmdline = " ".join(proc.cmdline())
    if cmdline.startswith("ray::"):
        return cmdline.split()[0].removeprefix("ray::").split(":")[-1].split(".")[0]
    for daemon in ("raylet", "gcs_server", "haproxy", "dashboard", "log_monitor", "monitor.py"):
        if daemon in cmdline:
            return daemon
    return "the load generator (this process)" if proc.pid == os.getpid() else name


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of every process on the machine, summed by role
    (`process_role`). Processes that have exited are not counted."""
    import psutil

    totals: dict[str, float] = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            label = process_role(proc)
            totals[label] = totals.get(label, 0.0) + times.user + times.system
    return totals


# --- Ray and Serve ---------------------------------------------------------------------------------


@contextlib.contextmanager
def local_ray(prefix: str = "igb-", num_cpus: int | None = None, env: dict[str, str] | None = None) -> Iterator[Path]:
    """A private, short-lived Ray cluster (no dashboard, own temp dir); Serve and Ray are shut down after.

    Yields the temp dir. Processes left behind that mention it are killed by pid at the end.
    """
    import ray

    root = short_tmpdir(prefix)
    os.environ.update(bench_env(**(env or {})))
    os.environ.pop("RAY_ADDRESS", None)
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus or max(4, os.cpu_count() or 1),
            include_dashboard=False,
            namespace="serve",
            _temp_dir=str(root / "ray"),
            log_to_driver=os.environ.get("BENCH_RAY_LOGS") == "1",
            configure_logging=False,
        )
        if os.environ.get("BENCH_RAY_LOGS") != "1":
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
        yield root
    finally:  # every step even if an earlier one fails (e.g. the raylet died)
        from ray import serve

        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        kill_pids(pids_mentioning(str(root)))
        kill_orphaned_haproxy()
        shutil.rmtree(root, ignore_errors=True)


def deploy_and_wait(config: dict[str, Any], port: int, run: BenchRun, timeout_s: float = 300) -> str:
    """Deploy `config` into the running Ray cluster, wait until /healthcheck answers 200, and record
    the time that took as `run.results["startup_s"]`. Returns the app's base URL."""
    t0 = time.perf_counter()
    deploy_config(config)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/healthcheck", timeout_s=timeout_s)
    run.results["startup_s"] = time.perf_counter() - t0
    print(f"app healthy after {run.results['startup_s']:.1f}s")
    return url


@contextlib.contextmanager
def running_app(
    config: dict[str, Any], port: int, run: BenchRun, prefix: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`config` served by a private Ray cluster (`local_ray(prefix, env=env)`), healthy: yields its
    base URL (`deploy_and_wait`); Serve and Ray are shut down after."""
    with local_ray(prefix, env=env):
        yield deploy_and_wait(config, port, run)


def start_serve(port: int | None, **http: Any) -> None:
    """Start Serve with its proxy on 127.0.0.1:`port`, or with no proxy at all (handles only) when None."""
    from ray import serve

    serve.start(
        proxy_location="HeadOnly" if port is not None else "Disabled",
        http_options={"host": "127.0.0.1", "port": port or free_port(), **http},
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )


def run_with_handle(handle: Any, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """`asyncio.run(work(h))`, with `h` a new handle to `handle`'s deployment made on that loop and
    shut down before it closes. Under RAY_SERVE_THROUGHPUT_OPTIMIZED (scripts/serve_env.sh) a
    handle's router runs on the loop that first used it, so the cached handle serve.run returns
    cannot serve a second asyncio.run."""
    from ray.serve.handle import DeploymentHandle

    async def main() -> Any:
        fresh = DeploymentHandle(handle.deployment_name, app_name=handle.app_name)
        try:
            return await work(fresh)
        finally:
            await fresh.shutdown_async()

    return asyncio.run(main())


# --- load generation -------------------------------------------------------------------------------


@dataclass
class LoadOutcome:
    """What a closed-loop load run measured."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) - self.statuses.get("200", 0)

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else math.nan


async def closed_loop(
    call: Callable[[], Awaitable[int]],
    concurrency: int,
    total: int,
    max_seconds: float = 60.0,
) -> LoadOutcome:
    """Run `total` calls with `concurrency` in flight (bounded by `max_seconds`); `call` returns a status.

    Only successful (200) calls are counted in the latencies; other statuses and exceptions are counted.
    """
    outcome = LoadOutcome()
    remaining = total
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            try:
                status = await call()
            except Exception as exc:  # a benchmark counts errors, it does not stop on them
                outcome.statuses[type(exc).__name__] += 1
                continue
            outcome.statuses[str(status)] += 1
            if status == 200:
                outcome.latencies_s.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    outcome.elapsed_s = time.perf_counter() - started
    return outcome
