"""NodeBus (SQLite on one node): task ids in datagrams a listener reads whole, however many change
at once (a reaper's sweep), and a listener that cannot bind leaves no socket behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serve_app.tasks.notify import DATAGRAM_BYTES, NodeBus, NodeBusListener, datagrams


def test_ids_are_packed_in_datagrams_that_never_cut_one() -> None:
    ids = [f"task-{i:06d}-{'x' * 24}" for i in range(5000)]  # 36 bytes each: ~180 KB in all
    packed = list(datagrams(ids))
    assert len(packed) > 1 and all(len(p) <= DATAGRAM_BYTES for p in packed)
    assert [i for p in packed for i in p.decode().split("\n")] == ids
    assert list(datagrams([])) == []


async def test_a_sweep_of_thousands_of_tasks_reaches_a_listener_whole(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    got: list[str] = []
    listener = NodeBusListener(db)
    await listener.start(got.append)
    bus = NodeBus(db)
    ids = [f"task-{i:06d}-{'y' * 24}" for i in range(3000)]
    try:
        bus.publish(ids)
        for _ in range(600):  # a bound on a lost push, not a speed check
            if len(got) >= len(ids):
                break
            await asyncio.sleep(0.05)
    finally:
        bus.close()
        await listener.close()
    assert got == ids


async def test_a_listener_that_cannot_bind_closes_its_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    made: list[socket.socket] = []
    real = socket.socket

    def tracked(*args: object) -> socket.socket:
        made.append(real(*args))  # type: ignore[arg-type]
        return made[-1]

    listener = NodeBusListener(tmp_path / "tasks.db")
    listener.path = tmp_path / "no-such-dir" / "x.sock"  # bind fails: the folder does not exist
    monkeypatch.setattr(socket, "socket", tracked)
    with pytest.raises(OSError):
        await listener.start(lambda _: None)
    assert made and all(s.fileno() == -1 for s in made), "the socket was left open"


async def test_a_listener_whose_socket_file_was_removed_binds_again(tmp_path: Path) -> None:
    """A /tmp cleaner removed the bus folder: pushes stopped reaching the listener (its waiters fell
    back to polling for good). Its check binds it again, and pushes reach it."""
    import shutil

    db = tmp_path / "tasks.db"
    got: list[str] = []
    listener = NodeBusListener(db, recheck_s=3600)  # the test runs the check itself
    await listener.start(got.append)
    bus = NodeBus(db)

    async def pushed(task_id: str) -> bool:
        bus.publish([task_id])
        for _ in range(200):  # a bound on a lost push, not a speed check
            if task_id in got:
                return True
            await asyncio.sleep(0.01)
        return False

    try:
        assert await pushed("before") and not listener.ensure_bound(), "bound: nothing to do"
        shutil.rmtree(listener.dir)
        bus.publish(["lost"])  # no socket file: nobody to send to
        old = listener._sock
        assert old is not None and listener.ensure_bound() and listener.rebinds == 1
        assert old.fileno() == -1, "the old socket was closed"
        assert await pushed("after")
    finally:
        bus.close()
        await listener.close()
    assert got == ["before", "after"] and not listener.path.exists()
