"""What the ingress's own code costs per request: the real FastAPI app, its middleware and routes, in-process.

    python -m benchmarks.ingress_path [--requests 2000] [--smoke]

No Ray and no network: requests go to `serve_app.ingress.app` through httpx's ASGI transport, one
at a time, with the app's context built as the ingress builds it (SQLite task store, local
storage, the tiny preset). So the figures are the Python the ingress runs per request: the
middleware stack (CORS, the JSON body limit, the long-request slots), auth, validation and the
error tree, not Serve's proxy or hops (`benchmarks.serve_overhead` measures those).

Run it on two trees (e.g. `PYTHONPATH=<other checkout> python -m benchmarks.ingress_path`) for a
before/after: the routes below exist on both sides of every change since 2026-12.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import base_parser, bench_run, latency_stats, print_table

NAME = "ingress_path"
#: (label, method, path, JSON body): short routes every client calls, answered without a model.
ROUTES = (
    ("GET unknown task (404)", "GET", "/v1/result/not-a-task", None),
    ("POST /v1/generate, no prompt (400)", "POST", "/v1/generate", {"seed": 1}),
    ("GET /info", "GET", "/info", None),
)


class _NoRunner:
    """The TaskRunner handle: no route measured here hands a task off."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the benchmark's routes never call the runner ({name})")


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per route")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests per route first")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.warmup = 100, 20
    return args


def measure(args: Any) -> dict[str, Any]:
    from testbed.harness import in_process_context

    with tempfile.TemporaryDirectory(prefix="igb-ip-") as tmp:
        in_process_context(Path(tmp), _NoRunner())  # starts its storage with asyncio.run: before ours
        return asyncio.run(_requests(args))


async def _requests(args: Any) -> dict[str, Any]:
    from serve_app.ingress import app

    out: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for label, method, path, body in ROUTES:
            seconds: list[float] = []
            statuses: set[int] = set()
            for i in range(args.warmup + args.requests):
                t0 = time.perf_counter()
                response = await client.request(method, path, json=body)
                if i >= args.warmup:
                    seconds.append(time.perf_counter() - t0)
                statuses.add(response.status_code)
            out[label] = {"statuses": sorted(statuses), **latency_stats(seconds).model_dump()}
    return out


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args) as run:
        import serve_app

        run.results["tree"] = str(Path(serve_app.__file__).resolve().parents[1])
        run.results["routes"] = measure(args)
        rows = [
            [label, r["statuses"], f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['mean_ms']:.3f}"]
            for label, r in run.results["routes"].items()
        ]
        print_table("Ingress path, in-process (ms per request)", ["route", "status", "p50", "p90", "mean"], rows, run)


if __name__ == "__main__":
    main()
