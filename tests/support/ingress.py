"""The ingress app in-process, for unit tests: fakes of what the Serve graph gives it (handles, the
controller's replica states, metrics), and request bodies. `make_context` installs the context;
undo with `set_context(None)`, or use `ingress_context`, which does both."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from serve_app.api.deps import DeploymentView, IngressContext, ReplicaStates, set_context
from testbed.harness import in_process_context


class FakeMethod:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)

        async def answer() -> None:
            if self.fail:
                raise RuntimeError("not ready")

        return answer()


class FakeHandle:
    def __init__(self, fail: bool = False, deployment_name: str = "Generator") -> None:
        self.run = FakeMethod()
        self.check_health = FakeMethod(fail)
        self.app_name, self.deployment_name = "imagegen", deployment_name


class FakeReplicaStates:
    """What the Serve controller reports: replicas per state of each (app, deployment)."""

    def __init__(self) -> None:
        self.states: ReplicaStates = {("imagegen", "Generator"): DeploymentView("HEALTHY", {"RUNNING": 1})}
        self.error: Exception | None = None

    async def __call__(self) -> ReplicaStates:
        if self.error is not None:
            raise self.error
        return self.states


class FakeMetrics:
    def __init__(self) -> None:
        self.rejections: list[tuple[int, str]] = []
        self.submits = 0

    def submitted(self, kind: str) -> None:
        self.submits += 1

    def rejected(self, status: int, error_code: str) -> None:
        self.rejections.append((status, error_code))


def make_context(data_dir: Path, tasks: dict[str, Any], **more_args: Any) -> IngressContext:
    """The ingress's context (testbed.harness.in_process_context) with a fake runner, probes and
    metrics; installed as the app's context (undo with `set_context(None)`). `more_args` are
    further serve-config args (auth, admission, ...)."""
    return in_process_context(
        data_dir,
        FakeHandle(),
        probes={"generator": FakeHandle()},
        replica_states=FakeReplicaStates(),
        metrics=FakeMetrics(),
        tasks=tasks,
        **more_args,
    )


@contextmanager
def ingress_context(data_dir: Path, tasks: dict[str, Any], **more_args: Any) -> Iterator[IngressContext]:
    """`make_context` for a with-block (a fixture's yield): the app's context is unset on leaving it,
    so no test sees another's."""
    try:
        yield make_context(data_dir, tasks, **more_args)
    finally:
        set_context(None)  # type: ignore[arg-type]


def png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand (name None: a part without a name)."""
    chunks = []
    for name, filename, data in parts:
        disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}
