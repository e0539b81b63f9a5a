"""The webhook secret a node makes on first start: where it lives, its mode, reuse, two creators at
once, and the cluster profile that needs a configured one."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest

from serve_app.config import AppArgs
from serve_app.errors import ConfigurationError
from serve_app.settings import Settings
from serve_app.webhook_secret import SECRET_FILE, WebhookSecret, load_webhook_secret, node_secret
from serve_app.webhooks import secret_bytes, sign, verify


def _args(data_dir: Path, store: str = "sqlite") -> AppArgs:
    return AppArgs.model_validate({"data_dir": str(data_dir), "tasks": {"store": store}}).resolved()


def test_without_a_configured_secret_one_is_made_in_the_data_dir_with_mode_0600(tmp_path: Path) -> None:
    secret = load_webhook_secret(Settings(imagegen_webhook_secret=None), _args(tmp_path / "var"))
    path = tmp_path / "var" / SECRET_FILE
    assert secret.enabled and secret.source == "file" and secret.path == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == secret.value and secret.value.startswith("whsec_")
    assert len(secret_bytes(secret.value)) == 32
    body = b'{"status":"done"}'
    headers = {"webhook-id": "m", "webhook-timestamp": "100", "webhook-signature": sign(secret.value, "m", 100, body)}
    verify(secret.value, headers, body, now=100)
    assert not list(path.parent.glob(f".{SECRET_FILE}.*")), "no temporary file is left behind"


def test_the_secret_is_made_once_and_read_again_on_every_later_start(tmp_path: Path) -> None:
    first = node_secret(tmp_path / SECRET_FILE)
    assert node_secret(tmp_path / SECRET_FILE) == first
    again = load_webhook_secret(Settings(imagegen_webhook_secret=None), _args(tmp_path))
    assert again.value == first


def test_a_configured_secret_wins_and_no_file_is_made(tmp_path: Path) -> None:
    secret = load_webhook_secret(Settings(imagegen_webhook_secret="whsec_c2VjcmV0"), _args(tmp_path))
    assert (secret.value, secret.source, secret.path) == ("whsec_c2VjcmV0", "environment", None)
    assert not (tmp_path / SECRET_FILE).exists()
    assert secret.info()["secret"] == "IMAGEGEN_WEBHOOK_SECRET" and "c2VjcmV0" not in str(secret.info())


def _race(path: str, start: Any, out: Any) -> None:
    start.wait()
    out.put(node_secret(Path(path)))


def test_two_creators_at_once_end_with_one_secret(tmp_path: Path) -> None:
    """Replicas starting together: whichever links its file first wins, the others read it."""
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = tmp_path / f"race{attempt}" / SECRET_FILE
        path.parent.mkdir()
        start, out = context.Event(), context.Queue()
        workers = [context.Process(target=_race, args=(str(path), start, out)) for _ in range(4)]
        for worker in workers:
            worker.start()
        start.set()
        seen = {out.get(timeout=30) for _ in workers}
        for worker in workers:
            worker.join(timeout=30)
        assert seen == {path.read_text().strip()}, "every creator uses the one secret on disk"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_that_holds_no_secret_is_a_clear_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_text("not base64 !\n")
    with pytest.raises(ConfigurationError, match="delete it to make a new one"):
        node_secret(path, wait_s=0)


def test_the_cluster_profile_needs_a_configured_secret(tmp_path: Path) -> None:
    secret = load_webhook_secret(Settings(imagegen_webhook_secret=None), _args(tmp_path, store="postgres"))
    assert not secret.enabled and "IMAGEGEN_WEBHOOK_SECRET" in (secret.off_because or "")
    assert not (tmp_path / SECRET_FILE).exists(), "no node-local secret on a cluster"
    assert secret.info()["enabled"] is False
    configured = load_webhook_secret(Settings(imagegen_webhook_secret="whsec_c2VjcmV0"), _args(tmp_path, "postgres"))
    assert configured.enabled


def test_a_context_without_a_loaded_secret_uses_the_environments() -> None:
    assert WebhookSecret.configured(None).enabled is False
    assert WebhookSecret.configured("whsec_c2VjcmV0").source == "environment"


def test_a_data_dir_that_cannot_be_written_turns_webhooks_off_saying_why(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the data directory should be")
    secret = load_webhook_secret(Settings(imagegen_webhook_secret=None), _args(blocked / "var"))
    assert not secret.enabled and "IMAGEGEN_WEBHOOK_SECRET" in (secret.off_because or "")
