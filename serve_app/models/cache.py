"""Model folders built once per cache and shared by every replica on the node.

A builder writes into a private temp folder beside the target, marks it complete, and renames it
into place; a process that loses the race uses the winner's folder, and a folder from an older
build version (or torn by a crash before its marker) is moved aside and rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".tiny-build.json"
BUILD_VERSION = 1


def is_complete(folder: Path) -> bool:
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("version") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, building it with `build(tmp_folder)` and an atomic rename if missing."""
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # 1. Build in a private folder on the same filesystem, then mark it complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared by every replica
    try:
        started = time.perf_counter()
        build(tmp)
        marker = {"version": BUILD_VERSION, "built_at": time.time()}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
        # 2. A stale or half-written target (older version, crash before the marker) is moved aside.
        if target.exists() and not is_complete(target):
            stale = target.with_name(f".{target.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            except OSError:
                pass  # another process moved it first
        # 3. Atomic rename; if another process won the race, use its folder.
        try:
            os.rename(tmp, target)
            logger.info("built %s in %.1fs", target, time.perf_counter() - started)
        except OSError:
            if not is_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
