"""The TaskWorker as the runner deployment builds it: what one task costs the task store."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from serve_app.flows.kit import FlowDeps
from serve_app.presets import load_preset
from serve_app.products.images.flow import ImageFlow
from serve_app.requests import GenerateRequest
from serve_app.storage.config import LocalStorageConfig
from serve_app.storage.local import LocalImageStore
from serve_app.tasks import SqliteDatabase, TaskStore
from serve_app.tasks.config import TasksConfig
from serve_app.tasks.worker import TaskWorker
from testbed.harness import PaintingStages


class FrozenClock:
    """A clock that does not move: every step lands inside one progress interval."""

    def __call__(self) -> float:
        return 100.0


async def _one_image_task(tmp_path: Path, steps: int, progress_interval_s: float) -> tuple[str, int, TaskStore]:
    store = TaskStore(SqliteDatabase(tmp_path / "tasks.db"))
    images = LocalImageStore(LocalStorageConfig(root=str(tmp_path / "images"), public_base_url="http://t"))
    preset = load_preset("tiny")
    request = GenerateRequest(prompt="a desk", num_inference_steps=steps, height=64, width=64, seed=3)
    store.create("t1", kind="image", request=request.resolve(preset, preset.limits).model_dump(mode="json"))
    worker = TaskWorker(
        tasks=store,
        images=images,
        flows={"image": ImageFlow(FlowDeps(PaintingStages(), images))},  # type: ignore[arg-type]
        cfg=TasksConfig(progress_interval_s=progress_interval_s),
        clock=FrozenClock(),
    )
    before = store.db.writes
    status = await worker.run("t1")
    return status, store.db.writes - before, store


async def test_a_tasks_steps_are_written_coalesced(tmp_path: Path) -> None:
    """Claim, the generating stage, its last step, storing, completion: 5 writes for a 20-step image
    whatever its step count (every step written: 4 + 20)."""
    status, writes, store = await _one_image_task(tmp_path, steps=20, progress_interval_s=0.5)
    assert status == "done"
    assert writes == 5
    record = store.get("t1")
    assert record is not None and record.status == "done" and record.result and record.result["images"]


async def test_without_coalescing_every_step_is_a_write(tmp_path: Path) -> None:
    status, writes, _ = await _one_image_task(tmp_path, steps=20, progress_interval_s=0.0)
    assert status == "done" and writes == 4 + 20


class GatedStages(PaintingStages):
    """A Generator that paints once `gate` opens, and says when it started."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.gate = asyncio.Event(), asyncio.Event()

    async def generate(self, spec: Any, on_step: Any) -> Any:
        self.started.set()
        await self.gate.wait()
        return await super().generate(spec, on_step)


async def test_a_caller_that_goes_away_does_not_stop_the_task_it_pushed(tmp_path: Path) -> None:
    """Serve cancels the runner's `run` call when the HTTP request that pushed it is cancelled (a
    waiting client that disconnected): only that wait ends; the task runs on to `done`, once."""
    store = TaskStore(SqliteDatabase(tmp_path / "tasks.db"))
    images = LocalImageStore(LocalStorageConfig(root=str(tmp_path / "images"), public_base_url="http://t"))
    preset = load_preset("tiny")
    request = GenerateRequest(prompt="a desk", num_inference_steps=4, height=64, width=64, seed=3)
    store.create("t1", kind="image", request=request.resolve(preset, preset.limits).model_dump(mode="json"))
    stages = GatedStages()
    worker = TaskWorker(
        tasks=store,
        images=images,
        flows={"image": ImageFlow(FlowDeps(stages, images))},  # type: ignore[arg-type]
        cfg=TasksConfig(),
    )
    call = asyncio.get_running_loop().create_task(worker.run("t1"))
    await asyncio.wait_for(stages.started.wait(), 30)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    stages.gate.set()
    for _ in range(600):  # a bound on a hang, not a speed check
        record = store.get("t1")
        if record is not None and record.status in ("done", "failed"):
            break
        await asyncio.sleep(0.05)
    assert record is not None and record.status == "done", record
    assert record.attempts == 1


async def test_a_long_retention_sweep_does_not_hold_the_heartbeats(tmp_path: Path) -> None:
    """A sweep that takes longer than a lease (a backlog, a big bucket) runs beside the maintenance
    passes that renew this runner's leases; inline, it held them and other runners reaped live tasks."""
    from serve_app.tasks.config import RetentionConfig

    store = TaskStore(SqliteDatabase(tmp_path / "tasks.db"))
    images = LocalImageStore(LocalStorageConfig(root=str(tmp_path / "images"), public_base_url="http://t"))
    worker = TaskWorker(
        tasks=store,
        images=images,
        flows={},
        cfg=TasksConfig(sweep_interval_s=0.01),
        retention=RetentionConfig(sweep_interval_s=0.01),
    )
    gate, sweeps, passes = asyncio.Event(), [0], [0]

    async def slow_sweep() -> None:
        sweeps[0] += 1
        await gate.wait()

    real_pass = worker._maintenance_pass

    async def counted_pass() -> None:
        passes[0] += 1
        await real_pass()

    worker.retention.sweep = slow_sweep  # type: ignore[method-assign]
    worker._maintenance_pass = counted_pass  # type: ignore[method-assign]
    worker.start()
    try:
        for _ in range(600):  # a bound on a stall, not a speed check
            if sweeps[0] >= 1 and passes[0] >= 5:
                break
            await asyncio.sleep(0.01)
        assert sweeps[0] == 1, "a second sweep started while the first ran"
        assert passes[0] >= 5, "the maintenance passes stopped while the sweep ran"
    finally:
        gate.set()
        assert worker._maintenance is not None
        worker._maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker._maintenance


async def test_a_cancel_that_lands_during_the_final_write_does_not_cut_it_short(tmp_path: Path) -> None:
    """The flow has returned and its completion is being written when the client's cancel arrives:
    the task is done, and `run` says so (before, the cancel escaped the worker mid-write)."""
    import threading

    store = TaskStore(SqliteDatabase(tmp_path / "tasks.db"))
    images = LocalImageStore(LocalStorageConfig(root=str(tmp_path / "images"), public_base_url="http://t"))
    preset = load_preset("tiny")
    request = GenerateRequest(prompt="a desk", num_inference_steps=2, height=64, width=64, seed=3)
    store.create("t1", kind="image", request=request.resolve(preset, preset.limits).model_dump(mode="json"))
    worker = TaskWorker(
        tasks=store,
        images=images,
        flows={"image": ImageFlow(FlowDeps(PaintingStages(), images))},  # type: ignore[arg-type]
        cfg=TasksConfig(),
    )
    loop = asyncio.get_running_loop()
    complete = store.queue.complete

    def cancelled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        handled = threading.Event()
        loop.call_soon_threadsafe(worker._stop_running, "t1", "cancelled")
        loop.call_soon_threadsafe(handled.set)  # after the stop, on the loop
        handled.wait(30)
        return complete(*args, **kwargs)

    store.queue.complete = cancelled_meanwhile  # type: ignore[method-assign]
    assert await worker.run("t1") == "done"
    record = store.require("t1")
    assert record.status == "done"
