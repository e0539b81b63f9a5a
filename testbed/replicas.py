"""Serve replicas as processes, from the Ray driver: their names, their pids, kill -9, their replacement.

For fault tests and the chaos benchmark. A replica is the named actor
`SERVE_REPLICA::<app>#<Deployment>#<id>` in the `serve` namespace; Serve replaces a dead one with a
new replica under a new id, so "replaced" means: none of the old names is left and a new one is.

    victims = kill_9("main", "Captioner")          # [(name, pid)], each sent SIGKILL
    wait_replaced("main", "Captioner", [n for n, _ in victims], timeout_s=120)
    with frozen("main", "TaskRunner"):             # SIGSTOP for the block (keep it to seconds), SIGCONT after
        ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection, Iterator

SERVE_NAMESPACE = "serve"


def replica_names(app: str, deployment: str) -> list[str]:
    """Names of the live replica actors of `app`/`deployment` (sorted)."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def replica_pid(name: str, timeout_s: float = 30.0) -> int:
    """The OS pid of a replica actor, asked of the actor itself."""
    import ray

    actor = ray.get_actor(name, namespace=SERVE_NAMESPACE)
    return int(ray.get(actor.__ray_call__.remote(lambda _replica: os.getpid()), timeout=timeout_s))


def pid_alive(pid: int) -> bool:
    """True while `pid` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_9(app: str, deployment: str, timeout_s: float = 10.0) -> list[tuple[str, int]]:
    """SIGKILL every replica process of `app`/`deployment`; wait (bounded) until they are gone.

    Returns `(name, pid)` per victim; raises if there was none or one outlived the timeout."""
    names = replica_names(app, deployment)
    if not names:
        raise RuntimeError(f"no replica of {app}/{deployment}")
    victims = [(name, replica_pid(name)) for name in names]
    for _, pid in victims:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(pid) for _, pid in victims):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app}/{deployment} replicas still alive {timeout_s}s after SIGKILL: {victims}")
        time.sleep(0.05)
    return victims


@contextlib.contextmanager
def frozen(app: str, deployment: str) -> Iterator[list[int]]:
    """Every replica process of `app`/`deployment` stopped (SIGSTOP) for the block, resumed after.

    A stalled replica: it takes calls but runs none until the block ends. Keep the block shorter
    than the deployment's health_check_timeout_s, or Serve replaces the replica."""
    pids = [replica_pid(name) for name in replica_names(app, deployment)]
    if not pids:
        raise RuntimeError(f"no replica of {app}/{deployment}")
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def replaced(app: str, deployment: str, old_names: Collection[str]) -> bool:
    """True once none of `old_names` is listed any more and at least one other replica is."""
    names = replica_names(app, deployment)
    return bool(names) and not set(names) & set(old_names)


def deployment_healthy(app: str, deployment: str) -> bool:
    """Serve's own view: the deployment is HEALTHY (every target replica running)."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return False
    return str(status.deployments[deployment].status).rsplit(".", 1)[-1] == "HEALTHY"


def wait_replaced(app: str, deployment: str, old_names: Collection[str], timeout_s: float) -> float:
    """Wait (bounded) until `old_names` are replaced and the deployment is healthy; the seconds waited."""
    started = time.monotonic()
    while not (replaced(app, deployment, old_names) and deployment_healthy(app, deployment)):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{app}/{deployment}: {list(old_names)} not replaced within {timeout_s}s")
        time.sleep(0.25)
    return time.monotonic() - started
