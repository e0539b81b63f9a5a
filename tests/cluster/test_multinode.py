"""The cluster profile on a real 3-node Ray cluster on this machine (`ray.cluster_utils.Cluster`).

A head node runs the ingress, the runner and the small models; two worker nodes carry a custom
`fake_gpu` resource that stands in for a GPU, and the Generator asks for it, so one Generator
replica lands on each worker. Tasks live in a real PostgreSQL and images in a real S3 (SeaweedFS),
both on 127.0.0.1: nothing is node-local. Mid-run one worker node is removed; every task must
still end done (retried on the other node) with an image URL that resolves.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from testbed.harness import deploy_config, free_port, load_serve_config, wait_http_ok
from testbed.postgres import PostgresServer
from testbed.processes import kill_orphaned_haproxy
from testbed.seaweed import SeaweedServer

pytestmark = pytest.mark.integration

TASKS = 8
STEPS = 150


def _cluster_config(port: int, data_dir: Path, seaweed: SeaweedServer) -> dict[str, Any]:
    """serve_config.cluster.yaml as an operator would deploy it, with three test changes: the tiny
    preset, SeaweedFS as the S3 endpoint, and `fake_gpu` instead of `num_gpus` for the Generator."""
    config = copy.deepcopy(load_serve_config("serve_config.cluster.yaml"))
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {**config["http_options"], "host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["args"].update(
        preset="tiny",
        data_dir=str(data_dir),
        public_base_url=f"http://127.0.0.1:{port}",
        fetch={"allow_hosts": ["127.0.0.1"]},
        shopping={"provider": "catalog"},
    )
    app["args"]["storage"].update(endpoint_url=seaweed.endpoint_url, bucket="cluster", create_bucket=True)
    app["args"]["tasks"].update(lease_s=6, sweep_interval_s=0.5, dispatch_grace_s=2, pool_max_size=4)
    app["args"]["retries"].update(base_delay_s=0.5, max_delay_s=2, max_attempts=6)
    for deployment in app["deployments"]:
        deployment["graceful_shutdown_wait_loop_s"] = 0.1
        deployment["graceful_shutdown_timeout_s"] = 1
        if deployment["name"] == "Generator":
            deployment.pop("autoscaling_config")
            # 4 in flight per replica, and a replica waits (up to 5 s) to fill its batch of 4: the 8
            # tasks become exactly one batch of 4 on each node.
            batching = {"max_batch_size": 4, "batch_wait_timeout_s": 5}
            deployment.update(num_replicas=2, max_ongoing_requests=4, user_config=batching)
            deployment["ray_actor_options"] = {"num_cpus": 0.5, "resources": {"fake_gpu": 1}}
        else:
            deployment["num_replicas"] = 1
            deployment["ray_actor_options"] = {"num_cpus": 0.1, "resources": {"head": 0.01}}
    return config


def test_a_lost_worker_node_costs_a_retry_not_a_task(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    import ray._private.services as ray_services
    from ray import serve
    from ray.cluster_utils import Cluster

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="igs-cl-", dir="/tmp"))
    seaweed = SeaweedServer(root / "seaweed")
    seaweed.start()
    postgres_server.truncate()
    # Replicas read these from their node's environment, as on a real cluster.
    os.environ.update(
        RAY_AUTH_MODE="disabled",
        IMAGEGEN_TASKS_DSN=postgres_server.dsn,
        AWS_ACCESS_KEY_ID=seaweed.access_key,
        AWS_SECRET_ACCESS_KEY=seaweed.secret_key,
        IMAGEGEN_TORCH_THREADS="1",
    )
    loopback = {"node_ip_address": "127.0.0.1"}  # every node, and all traffic between them, on 127.0.0.1
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"head": 1}, "include_dashboard": False, **loopback},
    )
    workers = [cluster.add_node(num_cpus=1, resources={"fake_gpu": 1}, **loopback) for _ in range(2)]
    try:
        # ray.init turns a 127.0.0.1 address into this host's routable one; keep the driver on
        # loopback too, so no byte of this fault test leaves 127.0.0.1.
        monkeypatch.setattr(ray_services, "resolve_ip_for_localhost", lambda host: host)
        ray.init(address=cluster.address, namespace="serve", log_to_driver=False, _node_ip_address="127.0.0.1")
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        deploy_config(_cluster_config(port, root / "data", seaweed))
        wait_http_ok(f"{base_url}/healthcheck", timeout_s=240)

        # Both Generator replicas are up, one on each worker node.
        from ray._private import state as ray_state

        nodes = {
            actor["Address"]["NodeID"]
            for actor in ray_state.actors(actor_state_name="ALIVE").values()
            if "#Generator#" in (actor.get("Name") or "")
        }
        assert nodes == {w.node_id for w in workers}, "one Generator replica per fake-GPU node"

        # The cluster profile requires API keys: make one as an operator would, with the CLI
        # against the same PostgreSQL task store, from the config that was deployed.
        config_file = root / "deployed.yaml"
        config_file.write_text(yaml.safe_dump(_cluster_config(port, root / "data", seaweed)))
        made = subprocess.run(
            [sys.executable, "-m", "serve_app.keys", "--config", str(config_file), "create", "multinode-test"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        key = made.stdout.strip()
        assert httpx.post(f"{base_url}/v1/generate", json={"prompt": "desk"}, timeout=30).status_code == 401

        with httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            info = client.get("/info").json()
            backends = info["backends"]
            assert (backends["task_store"], backends["storage"]) == ("postgres", "s3")
            assert info["auth"]["api_keys"] == "required" and key not in json.dumps(info)
            ids = [
                client.post(
                    "/v1/generate", json={"prompt": f"desk {i}", "num_inference_steps": STEPS, "seed": i}
                ).json()["task_id"]
                for i in range(TASKS)
            ]
            # One batch of 4 per node: once all 8 are denoising, the node removed below has 4 in flight.
            deadline, generating = time.monotonic() + 180, 0
            while time.monotonic() < deadline and generating < TASKS:
                bodies = [client.get(f"/v1/result/{i}").json() for i in ids]
                generating = sum(1 for b in bodies if (b.get("progress") or {}).get("step"))
                time.sleep(0.2)
            states = [(b["status"], b.get("progress"), b.get("error_code"), b.get("message")) for b in bodies]
            assert generating == TASKS, f"only {generating} of {TASKS} tasks were generating at once: {states}"
            cluster.remove_node(workers[0])
            removed_at = time.monotonic()

            results: dict[str, dict[str, Any]] = {}
            deadline = time.monotonic() + 240
            while len(results) < TASKS and time.monotonic() < deadline:
                for task_id in ids:
                    if task_id not in results:
                        body = client.get(f"/v1/result/{task_id}").json()
                        if body["status"] in ("done", "failed"):
                            results[task_id] = body
                time.sleep(0.3)
            assert len(results) == TASKS, f"stuck tasks after a node loss: {set(ids) - set(results)}"
            assert [results[i]["status"] for i in ids] == ["done"] * TASKS, [r.get("message") for r in results.values()]
            retried = [r for r in results.values() if r.get("retries")]
            assert len(retried) == TASKS // 2, "exactly the 4 tasks on the lost node were retried on the other one"
            assert all(entry["stage"] == "generate" for r in retried for entry in r["retries"])
            for body in results.values():
                image = httpx.get(body["processed_image_url"], timeout=10)  # presigned S3 URL
                assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        print(
            f"\nmulti-node: {TASKS} tasks, {len(retried)} retried after the node loss, all done "
            f"{time.monotonic() - removed_at:.1f}s after it; whole test {time.monotonic() - started:.1f}s"
        )
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            kill_orphaned_haproxy()
            seaweed.stop()
            for key in ("IMAGEGEN_TASKS_DSN",):
                os.environ.pop(key, None)
            shutil.rmtree(root, ignore_errors=True)
