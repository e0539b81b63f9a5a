"""Start the real Serve app once for the integration tests, from serve_config.yaml, and talk HTTP to it.

What `serve run serve_config.yaml` does (serve_start + deploy_apps of the YAML's schema), minus the
dashboard, with test args merged in. Two applications share one Serve instance:
- `main` at /: local storage, offline catalog, a tiny preset whose desk threshold is 0 (always a
  desk, so the whole graph runs), short leases so a dead worker is noticed quickly;
- `s3` at /s3: S3 storage on a real SeaweedFS, the Naver provider against the stub server, a
  desk threshold above 1 (never a desk: the shopping-only fallback branch).
No webhook secret is configured, as on a fresh clone: each application makes its own on first start
in its data directory (`ServeApp.webhook_secret` reads it), and signs its webhooks with it.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.webhook_secret import SECRET_FILE
from testbed.harness import deploy_config, free_port, generator_replicas, load_serve_config, preset_file, wait_http_ok
from testbed.processes import kill_orphaned_haproxy
from testbed.seaweed import SeaweedServer
from testbed.stubs.naver_stub import NaverStub
from testbed.stubs.provider_base import BackendCase, ProviderStub

NAVER_ID, NAVER_SECRET = "test-client-id", "test-client-secret"
S3_BUCKET = "imagegen-test"


@dataclass
class ServeApp:
    base_url: str
    s3_url: str
    data_dir: Path
    seaweed: SeaweedServer
    naver: NaverStub
    config: dict[str, Any]
    providers: dict[str, ProviderStub]  # cloud image provider stubs by backend name (kling, huggingface, gemini)
    metrics_url: str = ""  # Ray's Prometheus endpoint (app and Serve metrics, every 10 s)

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, **{"timeout": 30.0, **kw})

    def webhook_secret(self, app: str = "main") -> str:
        """The secret `app` made on first start in its data directory (none is configured)."""
        return (self.data_dir / app / SECRET_FILE).read_text(encoding="ascii").strip()


def _provider_cases() -> dict[str, BackendCase]:
    from testbed.stubs.gemini_stub import CASE as GEMINI
    from testbed.stubs.huggingface_stub import CASE as HUGGINGFACE
    from testbed.stubs.kling_stub import CASE as KLING
    from testbed.stubs.openai_stub import CASE as OPENAI

    return {"kling": KLING, "huggingface": HUGGINGFACE, "openai": OPENAI, "gemini": GEMINI}


def _backend_args(cases: dict[str, BackendCase], stubs: dict[str, ProviderStub]) -> dict[str, Any]:
    """Each provider pointed at its stub, retrying and polling fast."""
    fast = {"max_retries": 1, "backoff_base_s": 0.1, "backoff_max_s": 0.5, "poll_interval_s": 0.2, "timeout_s": 10}
    return {
        name: case.config(stubs[name].base_url).model_copy(update=fast).model_dump(mode="json")
        for name, case in cases.items()
    }


def _test_config(
    port: int,
    data_dir: Path,
    seaweed: SeaweedServer,
    naver: NaverStub,
    providers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config = load_serve_config()
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    base = config["applications"][0]
    for deployment in base["deployments"]:
        deployment["graceful_shutdown_wait_loop_s"] = 0.1
        deployment["graceful_shutdown_timeout_s"] = 1
        deployment["health_check_period_s"] = 2
        deployment["health_check_timeout_s"] = 30
    base_url = f"http://127.0.0.1:{port}"

    main = copy.deepcopy(base)
    main["name"] = "main"
    main["args"].update(
        preset=str(preset_file(data_dir, desk_threshold=0.0, name="tiny-always-desk")),
        data_dir=str(data_dir / "main"),
        public_base_url=base_url,
        fetch={"allow_hosts": ["127.0.0.1"], "timeout_s": 5.0},
        tasks={
            "lease_s": 4.0,
            "max_attempts": 2,
            "sweep_interval_s": 0.5,
            "dispatch_grace_s": 2.0,
            "max_active": 24,
            "retry_after_s": 3,
        },
        webhooks={"max_attempts": 4, "base_delay_s": 0.2, "max_delay_s": 1.0, "timeout_s": 5.0},
        shopping={"provider": "catalog"},
        # Scenes: KLING (its stub) first, the Generator when it fails; articles on the Generator.
        backends={
            **(providers or {}),
            "chains": {
                "scene_internal": ["local"],
                "scene_external": ["kling", "local"],
                "article": ["local"],
                "edit": ["local", "openai:gpt-image-1"],  # edits: the Editor, OpenAI's edits (its stub) on failure
                # Compose: Gemini (its stub), OpenAI's multi-image edit (its stub) when it fails.
                "compose": ["gemini", "openai:gpt-image-1"],
            },
        },
    )

    s3 = copy.deepcopy(base)
    s3["name"] = "s3"
    s3["route_prefix"] = "/s3"
    s3["args"].update(
        preset=str(preset_file(data_dir, desk_threshold=1.01, name="tiny-never-desk")),
        data_dir=str(data_dir / "s3"),
        public_base_url=f"{base_url}/s3",
        storage=seaweed.storage_config(S3_BUCKET),
        fetch={"allow_hosts": ["127.0.0.1"], "timeout_s": 5.0},
        tasks={"lease_s": 4.0, "sweep_interval_s": 0.5, "dispatch_grace_s": 2.0, "max_active": 24},
        shopping={
            "provider": "naver",
            "naver_base_url": naver.base_url,
            "cache_ttl_s": 0,
            "timeout_s": 2.0,
            "max_retries": 3,
        },
        # Articles from Hugging Face (its stub) only, stored on S3: the cloud path end to end.
        backends={**(providers or {}), "chains": {"article": ["huggingface"]}},
    )
    for deployment in s3["deployments"]:
        if deployment["name"] == "Generator":
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = 1
    config["applications"] = [main, s3]
    # The laptop profile runs two Generator processes from the start (one per core): main's here
    # autoscales from one to two, so test_autoscaling sees the autoscaler act, and the suite's
    # shared app starts one model replica fewer (s3's has no autoscaling: one replica).
    return generator_replicas(config, 1, 2)


@pytest.fixture(scope="package")
def serve_app() -> Iterator[ServeApp]:
    """Started once, for the whole tests/integration package, and stopped when it is done (so the
    benchmark smoke tests that follow get the machine to themselves)."""
    import ray
    from ray import serve

    # Short paths: Ray's unix sockets must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="igs-", dir="/tmp"))
    data_dir = root / "data"
    data_dir.mkdir()
    os.environ.pop("IMAGEGEN_WEBHOOK_SECRET", None)  # as on a fresh clone: the apps make their own
    os.environ.update(
        RAY_AUTH_MODE="disabled",
        NAVER_CLIENT_ID=NAVER_ID,
        NAVER_CLIENT_SECRET=NAVER_SECRET,
        IMAGEGEN_TORCH_THREADS="1",
    )
    seaweed = SeaweedServer(root / "seaweed")
    seaweed.start()
    os.environ.update(AWS_ACCESS_KEY_ID=seaweed.access_key, AWS_SECRET_ACCESS_KEY=seaweed.secret_key)
    naver = NaverStub(client_id=NAVER_ID, client_secret=NAVER_SECRET)
    naver.start()
    cases = _provider_cases()
    providers = {name: case.stub().start() for name, case in cases.items()}
    for case in cases.values():
        os.environ.update(case.env)

    port = free_port()
    metrics_port = free_port()
    config = _test_config(port, data_dir, seaweed, naver, _backend_args(cases, providers))
    ray.init(
        namespace="serve",
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(root / "ray"),
        _metrics_export_port=metrics_port,  # the metrics agent runs without the dashboard too
        _system_config={"metrics_report_interval_ms": 2000},  # Ray's 10 s default slows the metrics test
        log_to_driver=os.environ.get("IMAGEGEN_TEST_LOGS") == "1",
    )
    try:
        deploy_config(config)
        base_url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base_url}/healthcheck", timeout_s=240)
        wait_http_ok(f"{base_url}/s3/healthcheck", timeout_s=120)
        yield ServeApp(
            base_url=base_url,
            s3_url=f"{base_url}/s3",
            data_dir=data_dir,
            seaweed=seaweed,
            naver=naver,
            config=config,
            providers=providers,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        )
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            kill_orphaned_haproxy()
            naver.stop()
            for stub in providers.values():
                stub.stop()
            seaweed.stop()
            shutil.rmtree(root, ignore_errors=True)


def wait_for_task(client: httpx.Client, task_id: str, timeout_s: float = 120.0, prefix: str = "") -> dict[str, Any]:
    """Poll until the task ends; fail the test (not hang) past the timeout."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"{prefix}/v1/result/{task_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish in {timeout_s}s; last state: {body}")


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Poll `predicate` (HTTP errors count as not yet) until it is true; fail, not hang, past the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
