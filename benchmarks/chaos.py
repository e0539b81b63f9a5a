"""Overload and fault figures: 5x saturation, kill -9 of each replica kind, a storage outage, a webhook receiver down.

    python -m benchmarks.chaos [--phases overload kill storage webhook] [--kill Ingress Generator ...] [--smoke]

Starts the app in-process (like load_sweep without --url: a private Ray cluster without dashboard,
serve_config.yaml with a temp data_dir and a free port on 127.0.0.1), with S3 storage on a real
SeaweedFS, the tiny preset with every photo a desk (the whole graph runs), a small queue bound
(`--max-active`) and short leases. Phases, each bounded in count and time:

1. overload: the unloaded latency (tasks one at a time); saturation = tasks done per second by a
   closed loop of `--max-active` clients (the queue is full but never over its bound); then Poisson
   arrivals at `--factor` x saturation for `--overload-s`: share of 503s and of those with
   Retry-After, time to the first 503, latency of the accepted requests vs unloaded, and the peak
   RSS of every replica process (sampled with psutil throughout).
2. kill: per replica kind, a bounded run of desk tasks; halfway, every replica of that kind gets
   SIGKILL. Tasks end done / failed with a code / stuck (still queued or processing after
   `--settle-s`); stuck must be 0. Also the time until Serve has replaced the replica and the
   service is healthy, and whether a task submitted after that is done.
3. storage: tasks arrive before, during and after a SeaweedFS outage (stopped, then started again
   on the same port and data): submits refused, tasks done / failed by code / stuck; time from the
   restart to a healthy service; new submits after recovery.
4. webhook: tasks with a webhook_url whose receiver is down (its port refuses connections) when they
   end; it comes back after `--webhook-down-s` and answers 503 + Retry-After once per task, then
   204: delivered or not, attempts (from the task store), the `webhook-id` of every attempt it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import os
import random
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks._desk import PROMPT, form_fields
from benchmarks.common import (
    DEFAULT_CACHE_DIR,
    REPO_ROOT,
    BenchRun,
    base_parser,
    bench_run,
    fmt,
    latency_stats,
    print_table,
    running_app,
    short_tmpdir,
)
from testbed.harness import desk_photo, free_port, generator_replicas, local_app_config, preset_file

NAME = "chaos"
APP = "imagegen"
KINDS = ("Ingress", "TaskRunner", "Captioner", "DeskClassifier", "Generator", "ShoppingSearch", "Translator")
# The Translator's kill phase: desk prompts with a word the glossary lacks, so each task calls it.
KOREAN_PROMPT = "쿼카가 있는 아늑한 책상"
PHASES = ("overload", "kill", "storage", "webhook")
FINAL = ("done", "failed")
WEBHOOK_SECRET = "whsec_" + "Y2hhb3MtYmVuY2htYXJrLXdlYmhvb2stc2VjcmV0"  # base64("chaos-benchmark-webhook-secret")
S3_BUCKET = "imagegen-chaos"


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="what to run, in order")
    parser.add_argument("--kill", nargs="+", choices=KINDS, default=list(KINDS), help="replica kinds to kill -9")
    parser.add_argument("--max-active", type=int, default=12, help="tasks.max_active: the queue bound (503 past it)")
    parser.add_argument("--retry-after-s", type=int, default=2, help="tasks.retry_after_s")
    parser.add_argument("--lease-s", type=float, default=4.0, help="tasks.lease_s: a dead runner's tasks wait this")
    parser.add_argument("--steps", type=int, default=8, help="num_inference_steps of the overload phase's tasks")
    parser.add_argument("--kill-steps", type=int, default=40, help="steps of the kill phase's tasks (longer runs)")
    parser.add_argument("--size", type=int, default=64, help="height and width of each request")
    parser.add_argument("--baseline-tasks", type=int, default=10, help="unloaded: tasks run one at a time")
    parser.add_argument("--sat-tasks", type=int, default=48, help="saturation: tasks of the closed loop")
    parser.add_argument("--sat-max-s", type=float, default=90.0, help="saturation: longest closed-loop run")
    parser.add_argument("--factor", type=float, default=5.0, help="overload: offered rate = factor x saturation")
    parser.add_argument("--overload-s", type=float, default=20.0, help="overload: arrival window")
    parser.add_argument("--overload-max", type=int, default=600, help="overload: at most this many arrivals")
    parser.add_argument("--kill-tasks", type=int, default=10, help="kill: arrivals per replica kind")
    parser.add_argument("--kill-load", type=float, default=0.5, help="kill: arrival rate as a share of saturation")
    parser.add_argument("--outage-s", type=float, default=10.0, help="storage: how long SeaweedFS is down")
    parser.add_argument("--outage-margin-s", type=float, default=5.0, help="storage: arrivals before and after it")
    parser.add_argument("--webhook-tasks", type=int, default=3, help="webhook: tasks with a webhook_url")
    parser.add_argument("--webhook-down-s", type=float, default=5.0, help="webhook: receiver down this long")
    parser.add_argument("--settle-s", type=float, default=180.0, help="not ended this long after a fault: stuck")
    parser.add_argument("--poll-interval-s", type=float, default=0.25, help="GET /v1/result period per task")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "serve_config.yaml", help="serve config to start")
    parser.add_argument("--torch-threads", type=int, default=None, help="IMAGEGEN_TORCH_THREADS of the replicas")
    parser.add_argument("--model-cache-dir", type=Path, default=DEFAULT_CACHE_DIR / "models", help="tiny model cache")
    args = parser.parse_args()
    if args.smoke:
        args.max_active, args.steps, args.kill_steps = 4, 2, 8
        args.baseline_tasks, args.sat_tasks, args.sat_max_s = 2, 6, 30.0
        args.overload_s, args.overload_max = 3.0, 30
        args.kill_tasks, args.outage_s, args.outage_margin_s = 4, 3.0, 1.5
        args.webhook_tasks, args.webhook_down_s, args.settle_s = 1, 2.0, 120.0
        if args.kill == list(KINDS):
            args.kill = ["TaskRunner", "Captioner"]
        args.torch_threads = args.torch_threads or 1
    return args


# --- pure helpers (unit-tested) --------------------------------------------------------------------


def arrival_offsets(rate: float, window_s: float, max_n: int, seed: int | str) -> list[float]:
    """Poisson arrival times (seconds from the start) at `rate`/s inside `window_s`, at most `max_n`."""
    if rate <= 0 or window_s <= 0 or max_n <= 0:
        return []
    rng = random.Random(seed)
    offsets: list[float] = []
    at = rng.expovariate(rate)
    while at < window_s and len(offsets) < max_n:
        offsets.append(at)
        at += rng.expovariate(rate)
    return offsets


@dataclass
class Task:
    """One submit and what became of it. Times are perf_counter seconds."""

    kind: str  # desk (multipart with a photo) | text (JSON, text-to-image)
    started: float
    submit_s: float | None = None
    submit_status: int | None = None  # None: no HTTP answer (submit_error says why)
    submit_error: str | None = None  # error_code of a non-202, or the transport error
    retry_after: str | None = None
    task_id: str | None = None
    status: str | None = None  # last seen: queued | processing | done | failed
    attempts: int = 1  # runs of the task (a lost runner's task is run again)
    error_code: str | None = None
    generation_skipped: str | None = None
    retries: int = 0
    ended: float | None = None  # when done/failed was first seen
    body: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def accepted(self) -> bool:
        return self.submit_status == 202 and self.task_id is not None

    @property
    def e2e_s(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def outcome(self) -> str:
        """rejected | done | fallback (done, generation skipped) | failed:<code> | failed:NO_CODE | stuck."""
        if not self.accepted:
            return "rejected"
        if self.status == "done":
            return "fallback" if self.generation_skipped else "done"
        if self.status == "failed":
            return f"failed:{self.error_code or 'NO_CODE'}"
        return "stuck"

    def raw(self, t0: float) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at_s": round(self.started - t0, 3),
            "submit_ms": None if self.submit_s is None else round(self.submit_s * 1e3, 1),
            "submit_status": self.submit_status,
            "submit_error": self.submit_error,
            "retry_after": self.retry_after,
            "task_id": self.task_id,
            "outcome": self.outcome,
            "e2e_s": None if self.e2e_s is None else round(self.e2e_s, 3),
            "retries": self.retries,
            "attempts": self.attempts,
        }


def refusals(tasks: Sequence[Task]) -> dict[str, int]:
    """Submits not accepted, by `status:error_code` (status None: no HTTP answer)."""
    return dict(sorted(Counter(f"{t.submit_status}:{t.submit_error}" for t in tasks if not t.accepted).items()))


def outcome_counts(tasks: Sequence[Task]) -> dict[str, Any]:
    """Accepted tasks by how they ended; `stuck` (queued/processing at the deadline) must be 0."""
    accepted = [t for t in tasks if t.accepted]
    outcomes = Counter(t.outcome for t in accepted)
    failed = {k.split(":", 1)[1]: v for k, v in outcomes.items() if k.startswith("failed:")}
    return {
        "submitted": len(tasks),
        "accepted": len(accepted),
        "done": outcomes.get("done", 0) + outcomes.get("fallback", 0),
        "fallback": outcomes.get("fallback", 0),
        "failed": sum(failed.values()),
        "failed_codes": dict(sorted(failed.items())),
        "failed_without_code": failed.get("NO_CODE", 0),
        "stuck": outcomes.get("stuck", 0),
        "rejected_503": sum(1 for t in tasks if t.submit_status == 503),
        "retried": sum(1 for t in accepted if t.retries or t.attempts > 1),
        "refused": refusals(tasks),
    }


def shed_summary(tasks: Sequence[Task], t0: float, window_s: float) -> dict[str, Any]:
    """Load shedding under overload: 503 share, Retry-After share, first 503, latencies of the accepted."""
    offered = len(tasks)
    shed = [t for t in tasks if t.submit_status == 503]
    with_retry_after = [t for t in shed if t.retry_after and t.retry_after.strip().isdigit()]
    first = min((t.started + (t.submit_s or 0.0) - t0 for t in shed), default=math.nan)
    accepted = [t for t in tasks if t.accepted]
    done = [t for t in accepted if t.status == "done" and t.e2e_s is not None]
    other = [t for t in tasks if not t.accepted and t.submit_status != 503]
    last_arrival = max((t.started - t0 for t in tasks), default=0.0)
    return {
        "offered": offered,
        "offered_rps": offered / max(window_s, last_arrival) if offered else 0.0,
        "accepted": len(accepted),
        "rejected_503": len(shed),
        "share_503": len(shed) / offered if offered else math.nan,
        "with_retry_after": len(with_retry_after),
        "share_503_with_retry_after": len(with_retry_after) / len(shed) if shed else math.nan,
        "retry_after_values": sorted({t.retry_after for t in shed if t.retry_after}),
        "error_codes_503": dict(Counter(t.submit_error for t in shed)),
        "other_rejections": dict(Counter(f"{t.submit_status}:{t.submit_error}" for t in other)),
        "first_503_s": first,
        "accepted_before_first_503": sum(
            1 for t in accepted if not shed or t.started + (t.submit_s or 0.0) - t0 <= first
        ),
        "submit_accepted": latency_stats([t.submit_s for t in accepted if t.submit_s is not None]).model_dump(),
        "submit_503": latency_stats([t.submit_s for t in shed if t.submit_s is not None]).model_dump(),
        "e2e_done": latency_stats([t.e2e_s for t in done if t.e2e_s is not None]).model_dump(),
    }


# --- HTTP: submit and follow -----------------------------------------------------------------------


class Client:
    """Submits tasks and follows them to an end (or a deadline), tolerating a dead ingress."""

    def __init__(self, http: httpx.AsyncClient, args: Any, photo: bytes) -> None:
        self.http = http
        self.args = args
        self.photo = photo

    async def submit(
        self, kind: str, steps: int, seed: int, webhook_url: str | None = None, prompt: str = PROMPT
    ) -> Task:
        task = Task(kind=kind, started=time.perf_counter())
        try:
            if kind == "desk":
                fields = {**form_fields(steps, self.args.size, seed=seed), "prompt": prompt}
                if webhook_url:
                    fields["webhook_url"] = webhook_url
                response = await self.http.post(
                    "/v1/generate", data=fields, files={"image": ("desk.jpg", self.photo, "image/jpeg")}
                )
            else:
                body: dict[str, Any] = {
                    "prompt": prompt,
                    "num_inference_steps": steps,
                    "height": self.args.size,
                    "width": self.args.size,
                    "seed": seed,
                    "user_id": "chaos",
                }
                if webhook_url:
                    body["webhook_url"] = webhook_url
                response = await self.http.post("/v1/generate", json=body)
        except httpx.HTTPError as exc:
            task.submit_s = time.perf_counter() - task.started
            task.submit_error = type(exc).__name__
            return task
        task.submit_s = time.perf_counter() - task.started
        task.submit_status = response.status_code
        task.retry_after = response.headers.get("retry-after")
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code == 202 and isinstance(payload, dict) and payload.get("task_id"):
            task.task_id = payload["task_id"]
            task.status = payload.get("status", "queued")
        else:
            task.submit_error = (payload.get("error_code") if isinstance(payload, dict) else None) or "no_code"
        return task

    async def follow(self, task: Task, deadline: Callable[[], float]) -> Task:
        """Poll until the task ends or `deadline()` (perf_counter; it may move, e.g. once a fault
        happened) passes; keeps the last state seen."""
        if not task.accepted:
            return task
        while True:
            try:
                response = await self.http.get(f"/v1/result/{task.task_id}")
                if response.status_code == 200:
                    body = response.json()
                    task.status = body.get("status")
                    if task.status in FINAL:
                        task.ended = time.perf_counter()
                        task.error_code = body.get("error_code")
                        task.generation_skipped = body.get("generation_skipped")
                        task.retries = len(body.get("retries") or [])
                        task.attempts = int(body.get("attempts") or 1)
                        task.body = body
                        return task
            except (httpx.HTTPError, ValueError):
                pass  # the ingress may be down: keep polling until the deadline
            if time.perf_counter() >= deadline():
                return task
            await asyncio.sleep(self.args.poll_interval_s)

    async def run(self, kind: str, steps: int, seed: int, deadline: Callable[[], float], prompt: str = PROMPT) -> Task:
        task = await self.submit(kind, steps, seed, prompt=prompt)
        return await self.follow(task, deadline)

    async def healthy(self) -> bool:
        try:
            return (await self.http.get("/healthcheck", timeout=10)).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_healthy(self, timeout_s: float) -> float | None:
        """Seconds until /healthcheck answers 200, or None past `timeout_s`."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if await self.healthy():
                return time.perf_counter() - started
            await asyncio.sleep(0.25)
        return None


def within(seconds: float) -> Callable[[], float]:
    """A fixed deadline `seconds` from now."""
    at = time.perf_counter() + seconds
    return lambda: at


async def arrivals(
    offsets: Sequence[float],
    start: Callable[[int], Any],
    at: Callable[[int, float], Any] | None = None,
    until: Callable[[], bool] | None = None,
) -> tuple[float, list[Any]]:
    """Start `start(i)` (a coroutine) at each offset; `at(i, t0)` runs (awaited) before arrival i;
    arrivals stop early once `until()` is true. Returns the start time and the started asyncio tasks."""
    t0 = time.perf_counter()
    started = []
    for index, offset in enumerate(offsets):
        if at is not None:
            await at(index, t0)
        await asyncio.sleep(max(0.0, t0 + offset - time.perf_counter()))
        if until is not None and until():
            break
        started.append(asyncio.create_task(start(index)))
    return t0, started


# --- replica processes: pids and peak RSS ----------------------------------------------------------


def replica_processes(app: str = APP, known: dict[str, tuple[str, int]] | None = None) -> dict[str, tuple[str, int]]:
    """Every live replica of `app`: actor name -> (deployment, pid); pids in `known` are not asked again."""
    from testbed.replicas import replica_names, replica_pid

    known = known or {}
    found = {}
    for kind in KINDS:
        for name in replica_names(app, kind):
            if name in known:
                found[name] = known[name]
                continue
            with contextlib.suppress(Exception):  # a replica dying right now
                found[name] = (kind, replica_pid(name, timeout_s=10))
    return found


class RssSampler:
    """Samples the RSS of every replica process every `interval_s` (a thread); keeps first and peak."""

    def __init__(self, interval_s: float = 0.5, refresh_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self.replicas: dict[str, tuple[str, int]] = {}
        self.first: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        import psutil

        last_refresh = -math.inf
        while not self._stop.is_set():
            if time.monotonic() - last_refresh >= self.refresh_s:
                with contextlib.suppress(Exception):
                    self.replicas.update(replica_processes(known=self.replicas))
                last_refresh = time.monotonic()
            for name, (_, pid) in list(self.replicas.items()):
                try:
                    rss = psutil.Process(pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.first.setdefault(name, rss)
                self.peak[name] = max(self.peak.get(name, 0.0), rss)
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def report(self) -> list[dict[str, Any]]:
        rows = []
        for name, (kind, pid) in sorted(self.replicas.items(), key=lambda kv: (KINDS.index(kv[1][0]), kv[0])):
            if name in self.peak:
                rows.append(
                    {
                        "deployment": kind,
                        "replica": name.rsplit("#", 1)[-1],
                        "pid": pid,
                        "first_mib": round(self.first[name], 1),
                        "peak_mib": round(self.peak[name], 1),
                    }
                )
        return rows


# --- phases ----------------------------------------------------------------------------------------


async def phase_overload(client: Client, args: Any) -> dict[str, Any]:
    # 1. Unloaded: one task at a time.
    baseline = []
    base_started = time.perf_counter()
    for index in range(args.baseline_tasks):
        baseline.append(await client.run("desk", args.steps, index, within(args.settle_s)))
    base_span = time.perf_counter() - base_started
    unloaded = {
        "done_rps": sum(1 for t in baseline if t.status == "done") / base_span,
        "tasks": outcome_counts(baseline),
        "submit": latency_stats([t.submit_s for t in baseline if t.accepted and t.submit_s]).model_dump(),
        "e2e_done": latency_stats([t.e2e_s for t in baseline if t.status == "done" and t.e2e_s]).model_dump(),
    }
    print(f"unloaded: e2e p50 {unloaded['e2e_done']['p50_ms'] / 1e3:.2f}s over {len(baseline)} tasks")

    with RssSampler() as rss:
        # 2. Saturation: a closed loop of max_active clients (full queue, never over the bound).
        remaining = args.sat_tasks
        closed: list[Task] = []
        sat_started = time.perf_counter()
        sat_deadline = sat_started + args.sat_max_s

        async def worker(worker_id: int) -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < sat_deadline:
                remaining -= 1
                task = await client.run("desk", args.steps, 1000 + remaining, lambda: sat_deadline + args.settle_s)
                closed.append(task)
                if task.submit_status == 503:  # not expected at this concurrency; honour it if it happens
                    await asyncio.sleep(float(task.retry_after or args.retry_after_s))

        await asyncio.gather(*(worker(i) for i in range(args.max_active)))
        sat_span = time.perf_counter() - sat_started
        done = [t for t in closed if t.status == "done"]
        saturation = len(done) / sat_span if sat_span > 0 else math.nan
        sat = {
            "concurrency": args.max_active,
            "span_s": sat_span,
            "done_rps": saturation,
            "tasks": outcome_counts(closed),
            "submit": latency_stats([t.submit_s for t in closed if t.accepted and t.submit_s]).model_dump(),
            "e2e_done": latency_stats([t.e2e_s for t in done if t.e2e_s]).model_dump(),
        }
        print(f"saturation: {saturation:.2f} tasks/s done with {args.max_active} in flight")

        # 3. Overload: Poisson arrivals at factor x saturation.
        rate = args.factor * saturation
        offsets = arrival_offsets(rate, args.overload_s, args.overload_max, f"{args.seed}-overload")
        end_of_arrivals = time.perf_counter() + args.overload_s
        t0, started = await arrivals(
            offsets,
            lambda i: client.run("desk", args.steps, 5000 + i, lambda: end_of_arrivals + args.settle_s),
        )
        tasks = list(await asyncio.gather(*started))
    over_span = max((t.ended for t in tasks if t.ended is not None), default=t0) - t0
    over = {
        "target_rps": rate,
        "done_rps": sum(1 for t in tasks if t.status == "done") / over_span if over_span > 0 else math.nan,
        "window_s": args.overload_s,
        "shed": shed_summary(tasks, t0, args.overload_s),
        "tasks": outcome_counts(tasks),
        "raw": [t.raw(t0) for t in tasks],
    }
    shed = over["shed"]
    print(
        f"overload {rate:.1f}/s: {shed['offered']} offered, {shed['rejected_503']} x 503 "
        f"({shed['with_retry_after']} with Retry-After), first after {shed['first_503_s']:.2f}s"
    )
    return {
        "saturation_rps": saturation,
        "unloaded": unloaded,
        "saturation": sat,
        "overload": over,
        "rss": rss.report(),
        "rss_samples": rss.samples,
    }


async def phase_kill(client: Client, args: Any, kind: str, rate: float) -> dict[str, Any]:
    """Desk tasks arrive at `rate`; halfway, every replica of `kind` gets SIGKILL. The Translator's
    tasks have a Korean prompt with a word the glossary lacks, so each one calls it."""
    from testbed.replicas import kill_9, replaced

    prompt = KOREAN_PROMPT if kind == "Translator" else PROMPT

    offsets = arrival_offsets(rate, math.inf, args.kill_tasks, f"{args.seed}-kill-{kind}")
    deadline = time.perf_counter() + (offsets[-1] if offsets else 0.0) + args.settle_s  # moved to kill + settle
    killed: dict[str, Any] = {}

    async def maybe_kill(index: int, _t0: float) -> None:
        nonlocal deadline
        if index != len(offsets) // 2:
            return
        victims = await asyncio.to_thread(kill_9, APP, kind)
        killed.update(at=time.perf_counter(), victims=victims)
        deadline = killed["at"] + args.settle_s

    async def watch_recovery() -> float | None:
        while "at" not in killed:
            await asyncio.sleep(0.1)
        old = [name for name, _ in killed["victims"]]
        while time.perf_counter() - killed["at"] < args.settle_s:
            if await asyncio.to_thread(replaced, APP, kind, old) and await client.healthy():
                return time.perf_counter() - killed["at"]
            await asyncio.sleep(0.25)
        return None

    recovery = asyncio.create_task(watch_recovery())
    try:
        t0, started = await arrivals(
            offsets, lambda i: client.run("desk", args.kill_steps, 9000 + i, lambda: deadline, prompt), at=maybe_kill
        )
    except BaseException:
        recovery.cancel()  # the kill itself failed: nothing to watch
        raise
    tasks = list(await asyncio.gather(*started))
    recovered_s = await recovery
    # After recovery: a new task must end done.
    after = await client.run("desk", args.steps, 9999, within(args.settle_s), prompt)
    counts = outcome_counts(tasks)
    at = killed.get("at", math.inf)
    in_flight = [t for t in tasks if t.accepted and t.started < at and (t.ended is None or t.ended > at)]
    result = {
        "kind": kind,
        "in_flight_at_kill": len(in_flight),
        "rate_rps": rate,
        "killed": [{"replica": name.rsplit("#", 1)[-1], "pid": pid} for name, pid in killed.get("victims", [])],
        "killed_at_s": killed["at"] - t0 if "at" in killed else None,
        "tasks": counts,
        "recovered_s": recovered_s,
        "after": after.outcome,
        "holds": counts["stuck"] == 0 and counts["failed_without_code"] == 0 and after.outcome == "done",
        "raw": [t.raw(t0) for t in tasks],
    }
    print(
        f"kill -9 {kind}: {counts['done']} done, {counts['failed']} failed {counts['failed_codes']}, "
        f"{counts['stuck']} stuck; recovered in {recovered_s}s; after: {after.outcome}"
    )
    return result


async def phase_storage(client: Client, args: Any, seaweed: Any, rate: float) -> dict[str, Any]:
    """Tasks arrive before, during and after a SeaweedFS outage (arrivals go on until
    `--outage-margin-s` after S3 is back)."""
    window = 2 * args.outage_margin_s + args.outage_s + 120  # stop and start take their time
    offsets = arrival_offsets(rate, window, 10_000, f"{args.seed}-storage")
    marks: dict[str, float] = {}
    deadline = time.perf_counter() + window + args.settle_s  # moved to the restart + settle

    async def outage() -> None:
        nonlocal deadline
        await asyncio.sleep(args.outage_margin_s)
        marks["stopping"] = time.perf_counter()
        await asyncio.to_thread(seaweed.stop)  # SIGTERM, wait for the exit
        marks["stopped"] = time.perf_counter()
        await asyncio.sleep(max(0.0, marks["stopping"] + args.outage_s - time.perf_counter()))
        marks["restarting"] = time.perf_counter()
        await asyncio.to_thread(seaweed.start)  # until S3 takes a write
        marks["started"] = time.perf_counter()
        deadline = marks["started"] + args.settle_s

    def over() -> bool:
        return "started" in marks and time.perf_counter() >= marks["started"] + args.outage_margin_s

    async def recovery() -> float | None:
        await fault
        waited = await client.wait_healthy(args.settle_s)
        return None if waited is None else time.perf_counter() - marks["started"]

    fault = asyncio.create_task(outage())
    healthy = asyncio.create_task(recovery())
    t0, started = await arrivals(
        offsets,
        lambda i: client.run("desk" if i % 2 == 0 else "text", args.steps, 7000 + i, lambda: deadline),
        until=over,
    )
    await fault
    tasks = list(await asyncio.gather(*started))
    recovered_s = await healthy
    probes = [await client.run(kind, args.steps, 7999, within(args.settle_s)) for kind in ("desk", "text")]

    def window_of(task: Task) -> str:
        if task.started < marks["stopping"]:
            return "before"
        return "during" if task.started < marks["started"] else "after"

    windows = {w: outcome_counts([t for t in tasks if window_of(t) == w]) for w in ("before", "during", "after")}
    total = outcome_counts(tasks)
    result = {
        "rate_rps": rate,
        "down_s": marks["started"] - marks["stopping"],
        "stopped_at_s": marks["stopping"] - t0,
        "stop_s": marks["stopped"] - marks["stopping"],
        "restart_s": marks["started"] - marks["restarting"],
        "windows": windows,
        "tasks": total,
        "healthy_after_restart_s": recovered_s,
        "probes": [p.outcome for p in probes],
        "holds": total["stuck"] == 0
        and total["failed_without_code"] == 0
        and all(p.outcome in ("done", "fallback") for p in probes),
        "raw": [t.raw(t0) | {"window": window_of(t)} for t in tasks],
    }
    print(
        f"storage outage {result['down_s']:.1f}s: {total['done']} done, {total['failed']} failed "
        f"{total['failed_codes']}, {total['stuck']} stuck, refused {total['refused']}; probes {result['probes']}"
    )
    return result


def webhook_states(db_path: Path, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """webhook_status and webhook_attempts of tasks, read from the SQLite task store (read-only)."""
    if not task_ids or not db_path.is_file():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)) as db:
        marks = ",".join("?" * len(task_ids))
        rows = db.execute(
            f"SELECT task_id, webhook_status, webhook_attempts FROM tasks WHERE task_id IN ({marks})",
            list(task_ids),
        ).fetchall()
    return {row[0]: {"status": row[1], "attempts": row[2]} for row in rows}


async def phase_webhook(client: Client, args: Any, db_path: Path) -> dict[str, Any]:
    """Tasks end while their webhook receiver is down (port closed); it comes back; deliveries."""
    from testbed.webhook_receiver import WebhookReceiver

    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    submitted = [await client.submit("text", 2, 8000 + i, webhook_url=url) for i in range(args.webhook_tasks)]
    end = within(args.settle_s)
    tasks = list(await asyncio.gather(*(client.follow(t, end) for t in submitted)))
    ended = [t.ended for t in tasks if t.ended is not None]
    first_end = min(ended) if ended else time.perf_counter()
    await asyncio.sleep(max(0.0, first_end + args.webhook_down_s - time.perf_counter()))
    receiver = WebhookReceiver(secret=WEBHOOK_SECRET, port=port)
    receiver.fail_first(len(tasks), status=503, headers={"Retry-After": "1"})
    up_at = time.perf_counter()
    receiver.start()
    ids = [t.task_id for t in tasks if t.task_id]
    delivered_at: dict[str, float] = {}
    try:
        while time.perf_counter() - up_at < args.settle_s and len(delivered_at) < len(ids):
            for d in receiver.deliveries:
                task_id = d.json().get("task_id") if d.body else None
                if 200 <= d.status < 300 and task_id in ids and task_id not in delivered_at:
                    delivered_at[task_id] = time.perf_counter() - up_at
            await asyncio.sleep(0.1)
        states: dict[str, dict[str, Any]] = {}
        for _ in range(100):  # the outbox is marked right after the 2xx
            states = await asyncio.to_thread(webhook_states, db_path, ids)
            if all(s.get("status") != "pending" for s in states.values()) and len(states) == len(ids):
                break
            await asyncio.sleep(0.1)
    finally:
        receiver.stop()
    per_task = []
    for task in tasks:
        seen = [d for d in receiver.deliveries if d.body and d.json().get("task_id") == task.task_id]
        ids_seen = sorted({d.headers.get("webhook-id", "") for d in seen})
        state = states.get(task.task_id or "", {})
        per_task.append(
            {
                "task_id": task.task_id,
                "task": task.outcome,
                "delivered": task.task_id in delivered_at,
                "delivered_after_up_s": delivered_at.get(task.task_id or ""),
                "webhook_status": state.get("status"),
                "attempts": state.get("attempts"),
                "seen": len(seen),
                "seen_statuses": [d.status for d in seen],
                "webhook_ids": ids_seen,
                "same_id": len(ids_seen) == 1 and ids_seen[0] == f"msg_{task.task_id}",
                "verified": bool(seen) and all(d.verified for d in seen),
            }
        )
    result = {
        "down_s": up_at - first_end,
        "tasks": per_task,
        "delivered": sum(1 for p in per_task if p["delivered"]),
        "holds": all(p["delivered"] and p["same_id"] and p["verified"] for p in per_task),
    }
    print(f"webhook: {result['delivered']}/{len(per_task)} delivered after the receiver came back")
    return result


# --- the app ---------------------------------------------------------------------------------------


def chaos_config(args: Any, port: int, data_dir: Path, preset: str, seaweed: Any) -> dict[str, Any]:
    """serve_config.yaml with the benchmark's overrides: S3 on SeaweedFS, a small queue, short leases."""
    cache = args.model_cache_dir.expanduser().resolve()
    config = local_app_config(port, data_dir, args.config, preset=preset, model_cache_dir=cache)
    if args.smoke:
        generator_replicas(config, 1)
    app = config["applications"][0]
    app["name"] = APP
    app["args"].update(
        storage=seaweed.storage_config(S3_BUCKET),
        tasks={
            **app["args"].get("tasks", {}),
            "lease_s": args.lease_s,
            "max_attempts": 2,
            "sweep_interval_s": 0.5,
            "dispatch_grace_s": 2.0,
            "max_active": args.max_active,
            "retry_after_s": args.retry_after_s,
        },
        webhooks={"max_attempts": 12, "base_delay_s": 0.5, "max_delay_s": 4.0, "timeout_s": 5.0},
        fetch={"allow_hosts": ["127.0.0.1"], "timeout_s": 5.0},
        shopping={"provider": "catalog"},
    )
    for deployment in app.get("deployments", []):
        deployment["health_check_period_s"] = 2
        deployment["health_check_timeout_s"] = 30
        if deployment["name"] == "Translator" and "autoscaling_config" in deployment:
            # serve_config.yaml starts it from zero: one replica from the start, so there is one to kill
            deployment["autoscaling_config"].update(min_replicas=1, initial_replicas=1)
    return config


async def run_phases(url: str, args: Any, run: BenchRun, seaweed: Any, db_path: Path) -> None:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as http:
        client = Client(http, args, desk_photo())
        saturation = math.nan
        for phase in args.phases:
            if await client.wait_healthy(args.settle_s) is None:
                run.notes.append(f"{phase}: the service was not healthy before the phase started")
            try:
                if phase == "overload":
                    run.results["overload"] = await phase_overload(client, args)
                    saturation = run.results["overload"]["saturation_rps"]
                    continue
                rate = saturation if math.isfinite(saturation) and saturation > 0 else 1.0
                if phase == "kill":
                    kill_rate = min(4.0, max(0.5, args.kill_load * rate))
                    kills = run.results.setdefault("kill", {})
                    for kind in args.kill:
                        await client.wait_healthy(args.settle_s)
                        try:
                            kills[kind] = await phase_kill(client, args, kind, kill_rate)
                        except Exception as exc:  # one kind failing must not hide the others
                            kills[kind] = {"error": f"{type(exc).__name__}: {exc}"}
                elif phase == "storage":
                    run.results["storage"] = await phase_storage(client, args, seaweed, min(2.0, max(0.5, 0.5 * rate)))
                elif phase == "webhook":
                    run.results["webhook"] = await phase_webhook(client, args, db_path)
            except Exception as exc:  # record and go on with the next phase
                run.results[phase] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{phase} failed: {type(exc).__name__}: {exc}")


# --- report ----------------------------------------------------------------------------------------


def _codes(counts: dict[str, Any]) -> str:
    return " ".join(f"{code}={n}" for code, n in counts.get("failed_codes", {}).items()) or "-"


def report(run: BenchRun, args: Any) -> None:
    res = run.results
    if "overload" in res and "error" not in res["overload"]:
        over = res["overload"]
        shed = over["overload"]["shed"]
        rows = []
        for label, part in (
            ("unloaded (1 at a time)", over["unloaded"]),
            (f"saturation ({args.max_active} in flight)", over["saturation"]),
            (f"{args.factor:g}x saturation", over["overload"]),
        ):
            tasks = part["tasks"]
            is_over = part is over["overload"]
            submit = shed["submit_accepted"] if is_over else part["submit"]
            e2e = shed["e2e_done"] if is_over else part["e2e_done"]
            rows.append(
                [
                    label,
                    shed["offered_rps"] if is_over else None,
                    part.get("done_rps"),
                    tasks["submitted"],
                    tasks["accepted"],
                    tasks["rejected_503"],
                    shed["share_503"] if is_over else None,
                    shed["share_503_with_retry_after"] if is_over else None,
                    shed["first_503_s"] if is_over else None,
                    submit["p99_ms"],
                    e2e["p50_ms"] / 1e3,
                    e2e["p99_ms"] / 1e3,
                    tasks["done"],
                    tasks["failed"],
                    tasks["stuck"],
                ]
            )
        print_table(
            f"Overload: saturation {over['saturation_rps']:.2f} tasks/s, offered {args.factor:g}x for "
            f"{args.overload_s:g} s (max_active {args.max_active}, Retry-After {args.retry_after_s} s, "
            f"{args.steps} steps {args.size}x{args.size}, desk photos)",
            [
                "load",
                "offered/s",
                "done/s",
                "sent",
                "accepted",
                "503s",
                "503 share",
                "w/ Retry-After",
                "1st 503 s",
                "submit p99 ms",
                "e2e p50 s",
                "e2e p99 s",
                "done",
                "failed",
                "stuck",
            ],
            rows,
            run,
        )
        print_table(
            f"Peak RSS per replica during saturation + overload ({over['rss_samples']} samples)",
            ["deployment", "replica", "pid", "first MiB", "peak MiB"],
            [[r["deployment"], r["replica"], r["pid"], r["first_mib"], r["peak_mib"]] for r in over["rss"]],
            run,
        )
    if res.get("kill"):
        rows = []
        for kind, k in res["kill"].items():
            if "error" in k:
                rows.append([kind, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", k["error"][:40]])
                continue
            t = k["tasks"]
            rows.append(
                [
                    kind,
                    len(k["killed"]),
                    t["accepted"],
                    k["in_flight_at_kill"],
                    t["retried"],
                    t["done"] - t["fallback"],
                    t["fallback"],
                    t["failed"],
                    _codes(t),
                    t["stuck"],
                    sum(t["refused"].values()),
                    k["recovered_s"],
                    f"{k['after']} ({'holds' if k['holds'] else 'VIOLATED'})",
                ]
            )
        print_table(
            f"kill -9 mid-run ({args.kill_tasks} desk tasks per kind, {args.kill_steps} steps, killed halfway; "
            f"stuck = not ended {args.settle_s:g} s after the kill)",
            [
                "replica kind",
                "killed",
                "accepted",
                "in flight",
                "retried",
                "done",
                "fallback",
                "failed",
                "codes",
                "stuck",
                "refused",
                "recovered s",
                "task after",
            ],
            rows,
            run,
        )
    if "storage" in res and "error" not in res["storage"]:
        s = res["storage"]
        rows = [
            [
                name,
                w["submitted"],
                w["accepted"],
                " ".join(f"{k}={v}" for k, v in w["refused"].items()) or "-",
                w["done"],
                w["failed"],
                _codes(w),
                w["stuck"],
            ]
            for name, w in s["windows"].items()
        ]
        print_table(
            f"Storage outage: SeaweedFS down {s['down_s']:.1f} s mid-run; healthy "
            f"{fmt(s['healthy_after_restart_s'])} s after it was back; tasks after recovery: {', '.join(s['probes'])} "
            f"({'holds' if s['holds'] else 'VIOLATED'})",
            ["window", "sent", "accepted", "refused", "done", "failed", "codes", "stuck"],
            rows,
            run,
        )
    if "webhook" in res and "error" not in res["webhook"]:
        w = res["webhook"]
        rows = [
            [
                p["task_id"][:8] if p["task_id"] else "-",
                p["task"],
                "yes" if p["delivered"] else "NO",
                p["delivered_after_up_s"],
                p["attempts"],
                " ".join(str(s) for s in p["seen_statuses"]) or "-",
                "yes" if p["same_id"] else "NO",
                "yes" if p["verified"] else "NO",
            ]
            for p in w["tasks"]
        ]
        print_table(
            f"Webhook receiver down {w['down_s']:.1f} s after the tasks ended, then up (503 + Retry-After once, "
            f"then 204): {w['delivered']}/{len(w['tasks'])} delivered ({'holds' if w['holds'] else 'VIOLATED'})",
            ["task", "task", "delivered", "after up s", "attempts", "seen", "same webhook-id", "signed"],
            rows,
            run,
        )
    for phase in PHASES:
        if isinstance(res.get(phase), dict) and "error" in res[phase]:
            run.notes.append(f"{phase} did not complete: {res[phase]['error']}")


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args) as run:
        root = short_tmpdir("igb-ch-")
        from testbed.seaweed import SeaweedServer

        seaweed = SeaweedServer(root / "seaweed")
        try:
            seaweed.start()
            port = free_port()
            data_dir = root / "data"
            data_dir.mkdir()
            preset = str(preset_file(root, "tiny", desk_threshold=0.0))
            config = chaos_config(args, port, data_dir, preset, seaweed)
            run.results["config"] = copy.deepcopy(config["applications"][0]["args"])
            run.results["config"]["deployments"] = config["applications"][0]["deployments"]
            env = {
                "IMAGEGEN_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "AWS_ACCESS_KEY_ID": seaweed.access_key,
                "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
            }
            if args.torch_threads:
                env["IMAGEGEN_TORCH_THREADS"] = str(args.torch_threads)
            with running_app(config, port, run, "igb-chr-", env) as url:
                asyncio.run(run_phases(url, args, run, seaweed, data_dir / "tasks.db"))
        finally:
            seaweed.stop()
            shutil.rmtree(root, ignore_errors=True)
        run.notes.append(
            f"In-process server, S3 on SeaweedFS, desk threshold 0 (every photo a desk); "
            f"IMAGEGEN_TORCH_THREADS={os.environ.get('IMAGEGEN_TORCH_THREADS', 'unset')}; load generator on the "
            "same machine. 'fallback' = done with the shopping offers only (generation_skipped)."
        )
        report(run, args)


if __name__ == "__main__":
    main()
