"""Fixtures shared by the unit tests: the tiny models' cache and torch threads, the tiny translator,
the Naver stub, a fake clock, and the painting Generator stand-in of the in-process flows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from testbed.harness import PaintingStages
from testbed.stubs.fake_clock import FakeClock
from testbed.stubs.naver_stub import NaverStub
from testbed.stubs.provider_base import ProviderStub

if TYPE_CHECKING:
    from serve_app.models.translation import TranslationEngine


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a shared, oversubscribed CPU, multi-threaded kernels stall for seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny-model cache for the session, so each tiny model is built once."""
    return tmp_path_factory.getbasetemp() / "tiny-model-cache"


@pytest.fixture(scope="session")
def tiny_translator(tiny_cache_dir: Path) -> TranslationEngine:
    """The tiny random-weight Marian (Korean -> random English words), built once per session."""
    from serve_app.models.translation import TranslationEngine
    from serve_app.presets import load_preset

    return TranslationEngine(load_preset("tiny").translator, tiny_cache_dir, device="cpu")


@pytest.fixture
def stub() -> Iterator[NaverStub]:
    """A Naver Shopping stub server on 127.0.0.1 for one test."""
    with NaverStub() as running:
        yield running


@pytest.fixture
def case_stub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderStub]:
    """The stub of the test module's `CASE` (a cloud backend's contract case), started, with the
    backend's key(s) set in the environment."""
    with request.module.CASE.running(monkeypatch) as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock whose sleep advances time at once (backoffs cost no wall time)."""
    return FakeClock()


@pytest.fixture
def stages() -> PaintingStages:
    """The Generator's stand-in for in-process flows: paints one PNG per spec and records the specs."""
    return PaintingStages()
