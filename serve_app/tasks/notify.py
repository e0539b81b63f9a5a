"""Task changes, pushed: the store announces every task it changes, and a process that waits on a
task (a waiting route, an event stream) learns of it at once instead of on its next poll.

- A cluster (PostgreSQL): each changing transaction runs `pg_notify('imagegen_tasks', task_id)`,
  delivered when it commits to every connection that LISTENs (`PostgresListener`).
- One machine (SQLite): after the commit the store sends the task ids as a datagram to every
  listener of that database on this node (`NodeBus`: Unix datagram sockets in a directory named
  after the database file; no file of the database's own).

`TaskChanges` is one process's waiters by task id. Pushes can be lost (a listener reconnecting, a
full socket buffer), so a waiter reads the task again at least every `fallback_s` anyway: polling
stays only as that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

CHANNEL = "imagegen_tasks"
DATAGRAM_BYTES = 65536  # the most one NodeBus datagram carries (and a listener reads at once)
Deliver = Callable[[str], None]


class TaskChanges:
    """The tasks this process waits on, and an event per waiter set when its task changes."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.pushed = 0  # notifications received (for tests and benchmarks)

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever `task_id` changes while the block runs; clear it after each wake.
        Watch before reading the task, so no change between the read and the wait is missed."""
        event = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[task_id]

    def deliver(self, task_id: str) -> None:
        """A change of `task_id` (call on the event loop)."""
        self.pushed += 1
        for event in self._waiters.get(task_id, ()):
            event.set()

    @staticmethod
    async def wait(event: asyncio.Event, timeout_s: float) -> bool:
        """Wait for a change at most `timeout_s`; True when one came. The event is cleared."""
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            return False
        finally:
            event.clear()
        return True


class Listener(Protocol):
    async def start(self, deliver: Deliver) -> None: ...
    async def close(self) -> None: ...


# --- one machine: Unix datagram sockets ------------------------------------------------------------


def bus_dir(db_path: str | Path) -> Path:
    """Where the listeners of one SQLite task store bind their sockets: a short path (socket paths
    are limited to ~100 bytes) named after the database file, so apps on one machine stay apart."""
    digest = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"imagegen-tasks-{digest}"


class NodeBus:
    """The sending side: a datagram of changed task ids to every listener of the database."""

    def __init__(self, db_path: str | Path) -> None:
        self.dir = bus_dir(db_path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def publish(self, task_ids: Iterable[str]) -> None:
        payloads = list(datagrams(dict.fromkeys(task_ids)))
        if not payloads:
            return
        try:
            paths = list(self.dir.glob("*.sock"))
        except OSError:
            return
        for path in paths:
            for payload in payloads:
                try:
                    self._sock.sendto(payload, str(path))
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        path.unlink()  # a listener that is gone
                    break
                except OSError:
                    break  # its buffer is full: it reads the task on its fallback poll

    def close(self) -> None:
        self._sock.close()


def datagrams(task_ids: Iterable[str], limit: int = DATAGRAM_BYTES) -> Iterator[bytes]:
    """Task ids, newline-separated, in datagrams of at most `limit` bytes each (a listener reads
    one datagram at a time into a buffer of that size: a longer one would be cut mid-id)."""
    chunk: list[bytes] = []
    size = 0
    for task_id in task_ids:
        encoded = task_id.encode()
        if chunk and size + 1 + len(encoded) > limit:
            yield b"\n".join(chunk)
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded) + (1 if size else 0)
    if chunk:
        yield b"\n".join(chunk)


class NodeBusListener:
    """The receiving side: one socket per process, read on the event loop. Every `recheck_s` it
    checks that its socket file is still there, and binds again when it is not (a /tmp cleaner such
    as systemd-tmpfiles removes files untouched for days; until then pushes fall back to polling)."""

    def __init__(self, db_path: str | Path, recheck_s: float = 10.0) -> None:
        self.dir = bus_dir(db_path)
        self.path = self.dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self.recheck_s = recheck_s
        self.rebinds = 0  # for tests and logs
        self._sock: socket.socket | None = None
        self._bound: tuple[int, int] | None = None  # the socket file's (device, inode)
        self._deliver: Deliver | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._bind()
        self._watch = asyncio.get_running_loop().create_task(self._keep_bound())

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()  # on the loop that reads it, before anything is opened
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a file left where this listener's socket was
            sock.bind(str(self.path))
            st = os.stat(self.path)
        except OSError:
            sock.close()
            raise
        self._drop_socket()
        self._sock, self._bound = sock, (st.st_dev, st.st_ino)
        loop.add_reader(sock.fileno(), self._readable, sock)

    def _readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(DATAGRAM_BYTES)
            except OSError:  # nothing more to read now (BlockingIOError), or the socket closed
                return
            for task_id in data.decode(errors="replace").split("\n"):
                if task_id and self._deliver is not None:
                    self._deliver(task_id)

    def ensure_bound(self) -> bool:
        """Bind again when the socket file is gone (or is no longer this socket's); True when it did."""
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._bound:
                return False
        except FileNotFoundError:
            pass
        self._bind()
        self.rebinds += 1
        logger.warning("task notifications: the socket %s was gone; bound it again", self.path)
        return True

    async def _keep_bound(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_s)
            try:
                self.ensure_bound()
            except OSError as exc:  # waiters poll meanwhile; the next check tries again
                logger.warning("task notifications: cannot bind %s again: %s", self.path, exc)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
            self._watch = None
        self._drop_socket()
        with contextlib.suppress(OSError):
            self.path.unlink()


# --- a cluster: PostgreSQL LISTEN/NOTIFY -------------------------------------------------------------


class PostgresListener:
    """One LISTEN connection per process; reconnects with backoff (waiters poll meanwhile)."""

    def __init__(self, dsn: str, max_backoff_s: float = 10.0) -> None:
        self.dsn = dsn
        self.max_backoff_s = max_backoff_s
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self, deliver: Deliver) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(deliver))

    async def _listen(self, deliver: Deliver) -> None:
        import psycopg

        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    backoff = 0.5
                    async for notice in conn.notifies():
                        deliver(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarting, a network blip
                logger.warning("task notifications lost their connection (%s); waiters poll meanwhile", exc)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
