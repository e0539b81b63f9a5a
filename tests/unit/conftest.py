"""Fixtures shared by the unit tests that build and run the tiny models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


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
