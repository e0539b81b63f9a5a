"""Google Drive and Imgur stores wired to their stubs, for the storage contract suite and each
store's own tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serve_app.settings import Settings
from serve_app.storage.config import GoogleDriveStorageConfig, ImgurStorageConfig
from serve_app.storage.google_drive import GoogleDriveImageStore
from serve_app.storage.imgur import ImgurImageStore
from testbed.stubs.google_drive_stub import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, GoogleDriveStub
from testbed.stubs.imgur_stub import CLIENT_ID as IMGUR_CLIENT_ID
from testbed.stubs.imgur_stub import ImgurStub


def drive_oauth_settings(**overrides: Any) -> Settings:
    """Settings with the stub's OAuth client and refresh token (as from the environment)."""
    values = {
        "google_drive_client_id": CLIENT_ID,
        "google_drive_client_secret": CLIENT_SECRET,
        "google_drive_refresh_token": REFRESH_TOKEN,
        **overrides,
    }
    return Settings(**values)


def drive_service_account_settings(stub: GoogleDriveStub, **info: str) -> Settings:
    """Settings with the stub's service account key in GOOGLE_DRIVE_SERVICE_ACCOUNT_JSON."""
    return Settings(google_drive_service_account_json=json.dumps({**stub.service_account_info(), **info}))


def drive_store(
    stub: GoogleDriveStub,
    settings: Settings | None = None,
    clock: Callable[[], float] = time.time,
    **config: Any,
) -> GoogleDriveImageStore:
    """A Drive store on the stub; `folder_id` defaults to a new folder of its own."""
    config.setdefault("folder_id", stub.add_folder("imagegen"))
    cfg = GoogleDriveStorageConfig.model_validate(
        {
            "api_base_url": stub.base_url,
            "token_url": f"{stub.base_url}/token",
            "public_base_url": "http://api.test",
            **config,
        }
    )
    return GoogleDriveImageStore(cfg, settings or drive_oauth_settings(), clock=clock)


def imgur_store(stub: ImgurStub, ledger: Path, client_id: str = IMGUR_CLIENT_ID, **config: Any) -> ImgurImageStore:
    cfg = ImgurStorageConfig.model_validate({"api_base_url": stub.base_url, "ledger_path": str(ledger), **config})
    return ImgurImageStore(cfg, Settings(imgur_client_id=client_id))
