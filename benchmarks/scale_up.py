"""How long a new Generator replica takes to serve traffic once load makes the autoscaler add one.

    python -m benchmarks.scale_up [--tasks 12 --steps 150 --size 128 --repeats 2] [--smoke]

The app runs in-process from serve_config.yaml with its Generator's autoscaling delays and
target, from 1 replica up to 2 (the laptop profile itself runs 2 from the start). Each repeat
waits for the Generator to be back at one replica, submits `--tasks` long text-to-image tasks at
once, and polls every `--poll-s`: the Serve controller's replica states (`serve.status()`), and
each new replica actor's own count of requests in flight (`get_num_ongoing_requests`, what
Serve's router probes). Reported, from the burst: when a second replica is first seen STARTING
(the autoscaler's decision, after its delay), RUNNING (healthy, in the routing table), and first
holding a request (taking traffic). The tasks are then cancelled.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from benchmarks.common import (
    app_workspace,
    base_parser,
    bench_run,
    print_table,
    running_app,
)
from testbed.harness import generator_replicas, local_app_config

NAME = "scale_up"
APP, DEPLOYMENT = "imagegen", "Generator"  # serve_config.yaml's application


def parse_args() -> Any:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=12, help="long tasks submitted at once")
    parser.add_argument("--steps", type=int, default=150, help="denoising steps per task (keeps replicas busy)")
    parser.add_argument("--size", type=int, default=128, help="image side")
    parser.add_argument("--repeats", type=int, default=2, help="scale-ups measured")
    parser.add_argument("--poll-s", type=float, default=0.2, help="polling period")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="give up on a scale-up after this")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1
    return args


def _states() -> dict[str, int]:
    from ray import serve

    deployment = serve.status().applications[APP].deployments[DEPLOYMENT]
    return {str(state): int(count) for state, count in deployment.replica_states.items()}


def _replica_names() -> set[str]:
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{DEPLOYMENT}#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}


def _ongoing(name: str) -> int:
    import ray

    try:
        actor = ray.get_actor(name, namespace="serve")
        return int(ray.get(actor.get_num_ongoing_requests.remote(), timeout=5))
    except Exception:  # not started yet, or gone: no traffic seen
        return 0


def _wait_for(predicate: Any, timeout_s: float, poll_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


def one_scale_up(client: httpx.Client, args: Any) -> dict[str, Any]:
    if not _wait_for(lambda: _states().get("RUNNING", 0) == 1 and len(_replica_names()) == 1, 180, 0.5):
        return {"error": f"the Generator did not return to one replica: {_states()}"}
    before = _replica_names()
    body = {"num_inference_steps": args.steps, "height": args.size, "width": args.size}
    started = time.perf_counter()
    tasks = [
        client.post("/v1/generate", json={**body, "prompt": f"scale {i}"}).json()["task_id"] for i in range(args.tasks)
    ]
    submitted_s = time.perf_counter() - started
    seen: dict[str, float] = {}
    try:
        while time.perf_counter() - started < args.max_seconds and "taking_traffic_s" not in seen:
            now = time.perf_counter() - started
            states = _states()
            if states.get("STARTING", 0) + states.get("RUNNING", 0) >= 2 or len(_replica_names()) >= 2:
                seen.setdefault("starting_s", now)
            if states.get("RUNNING", 0) >= 2:
                seen.setdefault("running_s", now)
                if any(_ongoing(name) > 0 for name in _replica_names() - before):
                    seen["taking_traffic_s"] = time.perf_counter() - started
            time.sleep(args.poll_s)
    finally:
        for task_id in tasks:
            client.delete(f"/v1/tasks/{task_id}")
    out: dict[str, Any] = {"submitted_s": submitted_s, **seen}
    if "taking_traffic_s" not in seen:
        out["error"] = f"no new replica took traffic within {args.max_seconds:g}s (states {_states()})"
    return out


def main() -> None:
    args = parse_args()
    with bench_run(NAME, args) as run:
        with app_workspace("igb-su-") as ws:
            config = generator_replicas(local_app_config(ws.port, ws.data_dir), 1, 2)  # its delays, from 1
            generator = next(d for d in config["applications"][0]["deployments"] if d["name"] == DEPLOYMENT)
            run.results["autoscaling_config"] = generator["autoscaling_config"]
            with running_app(config, ws.port, run, "igb-sur-") as url:
                with httpx.Client(base_url=url, timeout=30) as client:
                    runs = []
                    for i in range(args.repeats):
                        runs.append(one_scale_up(client, args))
                        print(f"scale-up {i + 1}/{args.repeats}: {runs[-1]}", flush=True)
        run.results["runs"] = runs
        rows = [
            [i + 1, r.get("starting_s"), r.get("running_s"), r.get("taking_traffic_s"), r.get("error", "")[:50]]
            for i, r in enumerate(runs)
        ]
        print_table(
            f"Generator scale-up 1 -> 2 ({args.tasks} tasks of {args.steps} steps at {args.size}², "
            "seconds from the burst)",
            ["run", "2nd replica starting", "RUNNING", "taking traffic", "error"],
            rows,
            run,
        )


if __name__ == "__main__":
    main()
