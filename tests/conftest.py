"""Fixtures shared by every test tier: one PostgreSQL server per session, started on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from testbed.postgres import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1. Skipped (with the reason) where none can be started, unless
    IMAGEGEN_REQUIRE_POSTGRES=1 (CI sets it), where that is a failure instead."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        if os.environ.get("IMAGEGEN_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but cannot start: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield server
    finally:
        server.stop()
