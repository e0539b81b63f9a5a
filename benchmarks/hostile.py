"""A hostile caller against the running app: many event streams, huge-but-small image uploads, a slowloris.

    python -m benchmarks.hostile [--streams 70 --edits 24] [--smoke]

Starts the app in-process (serve_config.yaml, the tiny preset, local storage, a free port on
127.0.0.1; the long-request caps and budgets at their defaults unless flags say otherwise) and,
on 127.0.0.1 only, bounded in count and time:

1. streams: `--slow-tasks` long tasks are queued; then `--streams` `GET /v1/tasks/{id}/events`
   streams are opened on one of them, half with Ray's `x-request-timeout-seconds: 0`: first all
   from one caller (the per-caller cap answers the rest 429), then each from its own address
   (`X-Forwarded-For`, the app trusting 127.0.0.1 as its proxy: the global cap answers past it
   503). While the streams are open, `/healthcheck`, `/info` and `POST /v1/generate` are timed
   (`--probes` each), and the same before any stream opened.
2. memory: the Ingress replica's RSS before, at its peak during, and `--settle-s` after
   `--edits` concurrent `POST /v1/edits` (each from its own address) of one PNG that is small
   compressed and large decoded (`--side` x `--side`, one colour).
3. slowloris: a multipart upload whose body trickles one byte per second; the time until the
   server answers (408) or closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image

from benchmarks.common import (
    REPO_ROOT,
    app_workspace,
    base_parser,
    bench_run,
    latency_stats,
    print_table,
    running_app,
)
from testbed.harness import generator_replicas, local_app_config

NAME = "hostile"
APP = "imagegen"


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=70, help="event streams opened at once")
    parser.add_argument("--slow-tasks", type=int, default=12, help="long tasks queued first")
    parser.add_argument("--probes", type=int, default=10, help="timed calls per probe route and phase")
    parser.add_argument("--edits", type=int, default=24, help="concurrent POST /v1/edits")
    parser.add_argument("--side", type=int, default=4096, help="width and height of the edits' image")
    parser.add_argument("--settle-s", type=float, default=10.0, help="RSS 'after' is read this long after the edits")
    parser.add_argument("--body-timeout-s", type=float, default=None, help="long_requests.body_timeout_s")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "serve_config.yaml", help="serve config to start")
    args = parser.parse_args()
    if args.smoke:
        args.streams, args.slow_tasks, args.probes, args.edits = 12, 2, 3, 6
        args.side, args.settle_s, args.body_timeout_s = 2048, 2.0, args.body_timeout_s or 3.0
    return args


def one_colour_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 180, 160)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def ingress_pids() -> list[int]:
    from testbed.replicas import replica_names, replica_pid

    return [replica_pid(name, timeout_s=10) for name in replica_names(APP, "Ingress")]


def rss_mib(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss / 2**20
    return total


async def timed(call: Any) -> tuple[float, int]:
    started = time.perf_counter()
    try:
        response = await call()
        status = response.status_code
    except httpx.HTTPError:
        status = 0
    return time.perf_counter() - started, status


async def probe(http: httpx.AsyncClient, n: int) -> dict[str, Any]:
    """`n` calls each of /healthcheck, /info and a submit, one after another; latency and codes."""
    routes = {
        "healthcheck": lambda: http.get("/healthcheck", timeout=30),
        "info": lambda: http.get("/info", timeout=30),
        "submit": lambda: http.post("/v1/generate", json={"prompt": "a probe", "num_inference_steps": 2}, timeout=30),
    }
    out: dict[str, Any] = {}
    for name, call in routes.items():
        seconds, codes = [], []
        for _ in range(n):
            took, status = await timed(call)
            seconds.append(took)
            codes.append(status)
        out[name] = {**latency_stats(seconds).model_dump(), "codes": sorted(set(codes))}
    return out


async def open_stream(url: str, task_id: str, headers: dict[str, str], opened: list[int]) -> None:
    """Open one event stream and hold it until cancelled; its status goes into `opened`."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120.0, connect=30.0)) as http:
        try:
            async with http.stream("GET", f"/v1/tasks/{task_id}/events", headers=headers) as response:
                opened.append(response.status_code)
                if response.status_code == 200:
                    async for _ in response.aiter_raw():
                        pass
        except httpx.HTTPError:
            opened.append(0)


async def stream_phase(url: str, args: Any, task_id: str, distinct: bool) -> dict[str, Any]:
    opened: list[int] = []
    streams = []
    for i in range(args.streams):
        headers = {"x-request-timeout-seconds": "0"} if i % 2 else {}
        if distinct:
            headers["X-Forwarded-For"] = f"10.1.{i // 250}.{i % 250 + 1}"
        streams.append(asyncio.create_task(open_stream(url, task_id, headers, opened)))
    for _ in range(600):  # every stream answered (held or refused), within 60 s
        if len(opened) >= args.streams:
            break
        await asyncio.sleep(0.1)
    async with httpx.AsyncClient(base_url=url) as http:
        probes = await probe(http, args.probes)
    for stream in streams:
        stream.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    codes: dict[str, int] = {}
    for status in opened:
        codes[str(status)] = codes.get(str(status), 0) + 1
    return {"streams": args.streams, "codes": codes, "probes": probes}


async def memory_phase(url: str, args: Any, pids: list[int]) -> dict[str, Any]:
    image = one_colour_png(args.side)
    before = rss_mib(pids)
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib(pids))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    codes: list[str] = []
    limits = httpx.Limits(max_connections=args.edits + 4)
    async with httpx.AsyncClient(base_url=url, timeout=180.0, limits=limits) as http:

        async def edit(i: int) -> None:
            try:
                response = await http.post(
                    "/v1/edits",
                    data={"instruction": "make it blue", "num_inference_steps": "2"},
                    files={"image": ("big.png", image, "image/png")},
                    headers={"X-Forwarded-For": f"10.2.0.{i + 1}", "Prefer": "wait=20"},
                )
                code = response.json().get("error_code") if response.status_code >= 400 else None
                codes.append(f"{response.status_code} {code}" if code else str(response.status_code))
                if response.status_code in (200, 202, 504):
                    task_id = response.json().get("task_id")
                    if task_id:
                        await http.post(f"/v1/tasks/{task_id}/cancel")
            except (httpx.HTTPError, ValueError):
                codes.append("0")

        started = time.perf_counter()
        await asyncio.gather(*(edit(i) for i in range(args.edits)))
        took = time.perf_counter() - started
    done.set()
    await sampler
    await asyncio.sleep(args.settle_s)
    after = rss_mib(pids)
    counted: dict[str, int] = {}
    for status in codes:
        counted[status] = counted.get(status, 0) + 1
    return {
        "edits": args.edits,
        "image_bytes": len(image),
        "side": args.side,
        "codes": counted,
        "seconds": took,
        "rss_before_mib": before,
        "rss_peak_mib": peak,
        "rss_after_mib": after,
        "rise_mib": peak - before,
        "after_vs_before": after / before if before else None,
    }


def slowloris(port: int, max_s: float) -> dict[str, Any]:
    """Headers of a 100 KB multipart upload, then its body one byte a second."""
    started = time.perf_counter()
    answer = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = (
            "POST /v1/edits HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            "Content-Length: 100000\r\n\r\n"
        )
        sock.sendall(head.encode())
        sock.settimeout(1.0)
        while time.perf_counter() - started < max_s:
            try:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
            except TimeoutError:
                pass
            try:
                sock.sendall(b"-")
                sent += 1
            except OSError:
                break
    took = time.perf_counter() - started
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1") if answer else ""
    return {"cut_after_s": round(took, 2), "bytes_sent": sent, "answer": status_line or "connection closed"}


async def run_phases(url: str, port: int, args: Any, results: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as http:
        results["quiet"] = await probe(http, args.probes)
        slow, refusals = [], []
        for i in range(args.slow_tasks):
            body = {"prompt": f"a slow desk {i}", "num_inference_steps": 150, "height": 256, "width": 256}
            response = await http.post("/v1/generate", json=body)
            if response.status_code == 202:
                slow.append(response.json()["task_id"])
            else:
                refusals.append(f"{response.status_code} {response.text[:200]}")
        if not slow:
            raise RuntimeError(f"no slow task was accepted: {refusals[:2]}")
        target = slow[-1]  # the last queued: it stays queued the longest
        results["slow_tasks"] = len(slow)
        results["one_caller"] = await stream_phase(url, args, target, distinct=False)
        results["many_callers"] = await stream_phase(url, args, target, distinct=True)
        for task_id in slow:
            await http.post(f"/v1/tasks/{task_id}/cancel")
    results["memory"] = await memory_phase(url, args, ingress_pids())
    results["slowloris"] = await asyncio.to_thread(slowloris, port, (args.body_timeout_s or 60.0) + 30.0)


def report(run: Any, args: Any) -> None:
    res = run.results
    rows = []
    for phase in ("quiet", "one_caller", "many_callers"):
        probes = res[phase] if phase == "quiet" else res[phase]["probes"]
        for route, stats in probes.items():
            rows.append([phase, route, stats["p50_ms"], stats["p99_ms"], stats["max_ms"], stats["codes"]])
    print_table(
        f"Probe latency (ms), quiet and with {args.streams} event streams open",
        ["phase", "route", "p50", "p99", "max", "codes"],
        rows,
        run,
    )
    print_table(
        "Event streams opened",
        ["phase", "answers"],
        [[phase, res[phase]["codes"]] for phase in ("one_caller", "many_callers")],
        run,
    )
    mem = res["memory"]
    print_table(
        f"Ingress RSS (MiB), {mem['edits']} concurrent edits of a {mem['image_bytes'] // 1024} KB "
        f"{mem['side']}x{mem['side']} PNG",
        ["before", "peak", "after", "rise", "after/before", "answers", "seconds"],
        [
            [
                mem["rss_before_mib"],
                mem["rss_peak_mib"],
                mem["rss_after_mib"],
                mem["rise_mib"],
                mem["after_vs_before"],
                mem["codes"],
                mem["seconds"],
            ]
        ],
        run,
    )
    slow = res["slowloris"]
    row = [slow["cut_after_s"], slow["bytes_sent"], slow["answer"]]
    print_table("Slowloris", ["cut after s", "bytes sent", "answer"], [row], run)


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args) as run:
        with app_workspace("igb-ho-") as ws:
            config = local_app_config(ws.port, ws.data_dir, args.config, preset="tiny")
            if args.smoke:
                generator_replicas(config, 1)
            app_args = config["applications"][0]["args"]
            long_requests = {**app_args.get("long_requests", {}), "client_ip_header": "X-Forwarded-For"}
            if args.body_timeout_s is not None:
                long_requests["body_timeout_s"] = args.body_timeout_s
            app_args["long_requests"] = long_requests
            app_args["shopping"] = {"provider": "catalog"}
            run.results["long_requests"] = long_requests
            with running_app(config, ws.port, run, "igb-hor-") as url:
                asyncio.run(run_phases(url, ws.port, args, run.results))
        run.notes.append(
            "In-process server on 127.0.0.1, tiny preset, no API keys; the load generator on the same machine. "
            "long_requests.client_ip_header = X-Forwarded-For (127.0.0.1 is a trusted proxy by default), "
            "so the many-callers phase and the edits come from distinct addresses."
        )
        report(run, args)


if __name__ == "__main__":
    main()
