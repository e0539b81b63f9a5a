"""What each cloud image backend's client adds, per path, against its provider's local stub.

    python -m benchmarks.backends [--repeats 20] [--smoke]

For every provider (Hugging Face, OpenAI, Stability, Replicate, KLING, Gemini) and every path the
contract suite tests, the wall time of one `generate()` against the stub server on 127.0.0.1:
the client's own cost (request building, HTTP round trips, polling round trips, PNG re-encoding,
error mapping) without the provider's generation time. Backoff sleeps and the rate limiter run
on a fake clock (the waits a real 429 or "model is loading" costs are Retry-After, by design),
and Replicate/KLING poll every 0 s, so the numbers are the client's overhead alone. Each path
also records the error code it ended with, which must be the contract's.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import serve_app.backends.providers  # noqa: F401 - registers every backend
from benchmarks.common import base_parser, latency_stats, new_run, print_table, write_results
from serve_app.backends.registry import REGISTERED
from serve_app.errors import AppError
from serve_app.stages import GenerationSpec
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.provider_base import backend_case

NAME = "backends"
# path -> (stub rule, times, the outcome the contract expects)
PATHS: dict[str, tuple[str | None, int | None, str]] = {
    "ok": (None, None, "ok"),
    "429 then ok": ("rate_limit", 1, "ok"),
    "503 then ok": ("loading", 1, "ok"),
    "429 past retries": ("rate_limit", None, "RATE_LIMITED"),
    "key rejected": ("unauthorized", None, "BACKEND_AUTH_FAILED"),
    "refused": ("bad_request", None, "UPSTREAM_REJECTED"),
    "server error": ("server_error", None, "UPSTREAM_ERROR"),
    "malformed": ("malformed", None, "UPSTREAM_BAD_RESPONSE"),
}
SPEC = GenerationSpec(
    prompt="a cozy wooden desk, morning light",
    negative_prompt="blurry",
    num_inference_steps=20,
    guidance_scale=7.0,
    height=512,
    width=512,
    seed=7,
)


async def _one(backend: Any, stub: Any, rule: str | None, times: int | None) -> tuple[float, str]:
    stub.reset()
    if rule is not None:
        stub.add_rule(rule, times=times, retry_after="1")
    started = time.perf_counter()
    try:
        await backend.generate(SPEC)
        outcome = "ok"
    except AppError as exc:
        outcome = exc.error_code
    return time.perf_counter() - started, outcome


async def _run(repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in REGISTERED:
        case = backend_case(name)
        os.environ.update(case.env)
        with case.stub() as stub:
            clock = FakeClock()
            cfg = case.config(stub.base_url).model_copy(update={"max_retries": 2, "poll_interval_s": 0.001})
            # One client per provider, as a replica keeps one: its connection pool is warm after the first call.
            backend = case.backend(cfg, clock=clock, sleep=clock.sleep)
            await _one(backend, stub, None, None)
            paths: dict[str, Any] = {}
            for path, (rule, times, expected) in PATHS.items():
                samples, outcomes = [], set()
                for _ in range(repeats):
                    seconds, outcome = await _one(backend, stub, rule, times)
                    samples.append(seconds)
                    outcomes.add(outcome)
                paths[path] = {
                    "latency": latency_stats(samples).model_dump(),
                    "outcomes": sorted(outcomes),
                    "expected": expected,
                    "as_expected": outcomes == {expected},
                }
            await backend.aclose()
            results[name] = paths
    return results


def main() -> None:
    parser = base_parser(__doc__ or NAME)
    parser.add_argument("--repeats", type=int, default=20, help="generate() calls per provider and path")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 2
    run = new_run(NAME, args)
    started = time.perf_counter()
    run.results = {"providers": asyncio.run(_run(args.repeats))}
    rows = [
        [name, path, data["latency"]["p50_ms"], data["latency"]["p90_ms"], ",".join(data["outcomes"])]
        for name, paths in run.results["providers"].items()
        for path, data in paths.items()
    ]
    print_table(
        "Cloud backends against their stubs: client overhead per path",
        ["provider", "path", "p50 ms", "p90 ms", "outcome"],
        rows,
        run,
    )
    wrong = [
        f"{name} {path}: {data['outcomes']}"
        for name, paths in run.results["providers"].items()
        for path, data in paths.items()
        if not data["as_expected"]
    ]
    write_results(run, args.out, started)
    if wrong:
        raise SystemExit("paths that did not end as the contract says: " + "; ".join(wrong))


if __name__ == "__main__":
    main()
