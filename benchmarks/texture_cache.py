"""The texture cache's hit latency: `POST /v1/textures` answered from the content-addressed cache.

    python -m benchmarks.texture_cache [--requests 200 --textures 1 8] [--smoke]

The ingress app runs in-process (FastAPI's TestClient: no Serve proxy, no network) with its real
SQLite task store and local storage, so the figures are the route's own work on a hit: validate,
build each texture's prompt, hash it, one `SELECT` on `texture_cache`, refresh the URLs, answer.
A miss is also timed for scale: the same route making a task that a stand-in Generator (it paints
a solid PNG, no model) runs to the end, so it is the durable task path without a model; a real
miss adds the Generator's time (see the batching benchmark). Serve's proxy adds its per-hop cost
on top of both (see serve_overhead).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import base_parser, latency_stats, new_run, print_table, write_results

NAME = "texture_cache"
MATERIALS = ["nylon", "wool", "denim", "leather", "silk", "velvet", "linen", "cotton"]
COLOURS = ["navy blue", "beige", "black", "olive", "ivory", "burgundy", "grey", "camel"]


def _textures(count: int, salt: int) -> list[dict[str, str]]:
    """`count` textures no other request of the run asks for (the salt is in the colour)."""
    return [
        {"product_type": "jacket", "material": MATERIALS[i % 8], "colour": f"{COLOURS[i % 8]} {count}-{salt}"}
        for i in range(count)
    ]


def _measure(requests: int, sizes: list[int]) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from serve_app.api.deps import set_context
    from serve_app.backends import BackendRegistry
    from serve_app.flows.kit import FlowDeps
    from serve_app.ingress import app
    from serve_app.products.textures.flow import TextureFlow
    from testbed.harness import PaintingStages, WorkerRunner, in_process_context

    root = Path(tempfile.mkdtemp(prefix="igb-tc-", dir="/tmp"))
    # The stand-in Generator makes every texture: the shipped chain tries FLUX.1-dev on Hugging Face
    # first, which with a token in the environment would be a network call per miss.
    chains = {"texture": ["local"]}
    ctx = in_process_context(
        root, None, tasks={"max_active": 64}, openai={"poll_s": 0.005}, backends={"chains": chains}
    )
    registry = BackendRegistry(ctx.args.backends, "painter")
    deps = FlowDeps(PaintingStages(), ctx.images, backends=registry)  # type: ignore[arg-type]
    ctx.runner = WorkerRunner(ctx, {"texture": TextureFlow(deps, cache=ctx.tasks)})  # type: ignore[assignment]
    results: dict[str, Any] = {}
    try:
        with TestClient(app) as client:
            for size in sizes:
                misses, hits = [], []
                for salt in range(max(1, requests // 10)):
                    body = {"textures": _textures(size, salt), "num_inference_steps": 2}
                    started = time.perf_counter()
                    answer = client.post("/v1/textures", json=body)
                    misses.append(time.perf_counter() - started)
                    assert answer.status_code == 200 and answer.json()["cache_hits"] == 0, answer.text
                    for _ in range(10):
                        started = time.perf_counter()
                        answer = client.post("/v1/textures", json=body)
                        hits.append(time.perf_counter() - started)
                        assert answer.headers.get("x-cache") == "hit", answer.text
                results[str(size)] = {
                    "hit": latency_stats(hits).model_dump(),
                    "miss_without_model": latency_stats(misses).model_dump(),
                }
    finally:
        set_context(None)  # type: ignore[arg-type]
    return results


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--requests", type=int, default=200, help="hits per size (a tenth as many misses)")
    parser.add_argument("--textures", type=int, nargs="+", default=[1, 8], help="textures per request")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.textures = 20, [1, 2]
    run = new_run(NAME, args)
    started = time.perf_counter()
    run.results = {"sizes": _measure(args.requests, args.textures)}
    rows = [
        [
            size,
            data["hit"]["n"],
            data["hit"]["p50_ms"],
            data["hit"]["p90_ms"],
            data["hit"]["p99_ms"],
            data["miss_without_model"]["p50_ms"],
        ]
        for size, data in run.results["sizes"].items()
    ]
    print_table(
        "POST /v1/textures in-process: cache hits vs a miss through the task path (no model)",
        ["textures/request", "hits", "hit p50 ms", "hit p90 ms", "hit p99 ms", "miss p50 ms (no model)"],
        rows,
        run,
    )
    write_results(run, args.out, started)


if __name__ == "__main__":
    main()
