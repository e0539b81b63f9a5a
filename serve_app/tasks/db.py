"""The SQL database under the task store: one small interface, SQLite and PostgreSQL behind it.

The task store's SQL is written once, with `?` placeholders and portable types; a `Database`
runs it in transactions and hides what differs:
- SQLite (one machine): one file in WAL mode, every replica on the node opens it; a transaction
  takes the write lock up front (`BEGIN IMMEDIATE`), so a claim is atomic across processes. Reads
  go through a second, query-only connection in deferred transactions: WAL readers never wait
  for the writer, so a poll or a readiness probe answers while another process writes.
- PostgreSQL (a cluster): a connection pool; claims lock rows with `FOR UPDATE SKIP LOCKED`,
  so runners on any node claim disjoint tasks without waiting on each other, and admission
  (queue bound, idempotency key) is serialised with a transaction-scoped advisory lock. Reads
  run in READ ONLY, REPEATABLE READ transactions: one snapshot for all their statements.

Every method is synchronous and thread-safe; async code calls it through `asyncio.to_thread`.
A transaction that changes a task says so (`Tx.changed`): the database announces it when the
transaction commits (serve_app.tasks.notify), and counts its writing transactions (`writes`).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serve_app.errors import ConfigurationError
from serve_app.tasks.notify import CHANNEL, Listener, NodeBus, NodeBusListener, PostgresListener

Row = dict[str, Any]

_ADMISSION_LOCK_ID = 0x1A6E5E  # any constant: the one advisory lock admission takes on PostgreSQL


class Tx(ABC):
    """One open transaction."""

    def __init__(self) -> None:
        self.changed_ids: list[str] = []
        self.wrote = False

    def changed(self, *task_ids: str) -> None:
        """These tasks changed in this transaction: announce them once it commits."""
        self.changed_ids.extend(task_ids)

    @abstractmethod
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and return its rows as dicts."""

    @abstractmethod
    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return how many rows it changed."""

    @abstractmethod
    def run_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter tuple."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        found = self.rows(sql, params)
        return found[0] if found else None


class Database(ABC):
    """Transactions over one SQL database; `dialect` says which."""

    writes = 0  # transactions that wrote, since this process opened the database
    dialect: str
    skip_locked: str
    """Appended to a claiming SELECT: row locks that other claimers skip (empty where the whole
    transaction is already exclusive)."""

    @abstractmethod
    @contextmanager
    def tx(self) -> Iterator[Tx]:
        """A read-write transaction: committed when the block ends, rolled back on an exception."""

    @abstractmethod
    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """A read-only transaction: every query in it sees one consistent state of the database, and
        it takes no write lock (it neither waits for writers nor holds them up)."""

    @abstractmethod
    def lock_admission(self, tx: Tx) -> None:
        """Serialise admission checks (count, then insert) for the rest of `tx`."""

    @abstractmethod
    def close(self) -> None: ...

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One query's rows, in a read-only transaction (`snapshot`)."""
        with self.snapshot() as tx:
            return tx.rows(sql, params)

    def ping(self) -> None:
        self.read("SELECT 1 AS ok")

    @abstractmethod
    def listener(self) -> Listener:
        """What hears this database's task changes in one process (serve_app.tasks.notify)."""


# --- SQLite ----------------------------------------------------------------------------------------


class _SqliteTx(Tx):
    def __init__(self, cur: sqlite3.Cursor) -> None:
        super().__init__()
        self.cur = cur

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in self.cur.execute(sql, tuple(params)).fetchall()]

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.wrote = True
        return self.cur.execute(sql, tuple(params)).rowcount

    def run_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        self.wrote = True
        self.cur.executemany(sql, [tuple(p) for p in params])


class SqliteDatabase(Database):
    """One SQLite file (WAL) shared by the processes of one node."""

    dialect = "sqlite"
    skip_locked = ""  # BEGIN IMMEDIATE already makes the transaction exclusive

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.bus = NodeBus(self.path)
        self._lock = threading.Lock()
        self._conn = self._connect(busy_timeout_s)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        # Reads have their own connection (and lock): they never queue behind a write of this
        # process that is waiting for another process's write lock.
        self._read_lock = threading.Lock()
        self._reader = self._connect(busy_timeout_s)
        self._reader.execute("PRAGMA query_only=1")

    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row  # `timeout` is the busy timeout: how long a lock is waited for
        return conn

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            tx = _SqliteTx(cur)
            try:
                yield tx
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
                self.writes += tx.wrote
            finally:
                cur.close()
        if tx.changed_ids:
            self.bus.publish(tx.changed_ids)

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """A deferred transaction on the query-only connection: in WAL mode its first read fixes
        the snapshot every later read sees, and no lock a writer needs is taken."""
        with self._read_lock:
            cur = self._reader.cursor()
            cur.execute("BEGIN DEFERRED")
            try:
                yield _SqliteTx(cur)
            finally:
                if self._reader.in_transaction:  # nothing to commit
                    cur.execute("ROLLBACK")
                cur.close()

    def lock_admission(self, tx: Tx) -> None:
        """Nothing to do: the IMMEDIATE transaction holds the database's write lock."""

    def listener(self) -> Listener:
        return NodeBusListener(self.path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        with self._read_lock:
            self._reader.close()
        self.bus.close()


# --- PostgreSQL ----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\?")


def _pg_sql(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (the store's SQL has no literal `%` or `?`)."""
    return _PLACEHOLDER.sub("%s", sql)


class _PgTx(Tx):
    def __init__(self, cur: Any) -> None:
        super().__init__()
        self.cur = cur

    def changed(self, *task_ids: str) -> None:
        """Delivered by PostgreSQL to every LISTENing connection when the transaction commits."""
        for task_id in dict.fromkeys(task_ids):
            self.cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, task_id))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.cur.execute(_pg_sql(sql), tuple(params))
        return list(self.cur.fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.wrote = True
        self.cur.execute(_pg_sql(sql), tuple(params))
        return int(self.cur.rowcount)

    def run_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            self.wrote = True
            self.cur.executemany(_pg_sql(sql), [tuple(p) for p in params])


class PostgresDatabase(Database):
    """A psycopg 3 connection pool on one PostgreSQL database shared by every node."""

    dialect = "postgres"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 8, timeout_s: float = 30.0) -> None:
        try:
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency of the package
            raise ConfigurationError("The PostgreSQL task store needs psycopg and psycopg-pool.") from exc
        self.dsn = dsn
        self._pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            kwargs={"row_factory": dict_row, "autocommit": False},
            open=False,
            name="imagegen-tasks",
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except Exception as exc:
            self._pool.close()
            raise ConfigurationError(f"Cannot connect to the PostgreSQL task store: {type(exc).__name__}.") from exc

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            tx = _PgTx(cur)
            yield tx
        self.writes += tx.wrote

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """READ ONLY and REPEATABLE READ: all its statements read one snapshot (READ COMMITTED,
        the default, takes a new one per statement); plain reads take no row lock."""
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield _PgTx(cur)

    def lock_admission(self, tx: Tx) -> None:
        tx.rows("SELECT pg_advisory_xact_lock(?) AS locked", (_ADMISSION_LOCK_ID,))

    def listener(self) -> Listener:
        return PostgresListener(self.dsn)

    def close(self) -> None:
        self._pool.close()
