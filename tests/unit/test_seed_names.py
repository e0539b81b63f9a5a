"""The seeds' names for the app's environment variables: read as aliases (the first one set wins, an
empty or blank one counts as unset), used where the value is used (the Hugging Face token, S3's
bucket and region, Cloudinary's cloud name), and named, never shown, by GET /info."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_app.backends.config import BackendsConfig
from serve_app.backends.registry import REGISTERED
from serve_app.errors import ConfigurationError
from serve_app.ingress import app
from serve_app.settings import SEED_NAMES, Settings, env_choice, spelled
from serve_app.storage import build_store
from serve_app.storage.config import CloudinaryStorageConfig, S3StorageConfig
from tests.support.ingress import ingress_context

SEED_VARIABLES = ["HF_TOKEN", "S3_BUCKET_NAME", "AWS_REGION", "CLOUDINARY_CLOUD_NAME"]

#: Every name the seeds use, with the setting it feeds (grep the seeds: texture-generator-upgrade.md,
#: image-generation-storage-guide.md, enhancement-api-options.md, scene-image-service-readme.md).
SEEDS = [
    ("HUGGING_FACE_API_TOKEN", "hf_token"),
    ("HUGGINGFACE_TOKEN", "hf_token"),
    ("HF_API_KEY", "hf_token"),
    ("S3_BUCKET_NAME", "s3_bucket"),
    ("AWS_REGION", "s3_region"),
    ("CLOUDINARY_CLOUD_NAME", "cloudinary_cloud_name"),
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for names in SEED_NAMES.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)


def _value(settings: Settings, field: str) -> str | None:
    value = getattr(settings, field)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


@pytest.mark.parametrize(("name", "field"), SEEDS)
def test_each_seed_name_is_read_and_named_in_the_environment_report(
    monkeypatch: pytest.MonkeyPatch, name: str, field: str
) -> None:
    monkeypatch.setenv(name, "value-of-" + name)
    assert _value(Settings(), field) == "value-of-" + name
    report = Settings.environment()
    assert report[field]["variable"] == name and name in report[field]["names"]
    assert "value-of-" not in str(report), "names only"


def test_the_apps_own_name_wins_and_an_empty_or_blank_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_API_KEY", "hf_last")
    monkeypatch.setenv("HUGGINGFACE_TOKEN", "   ")
    monkeypatch.setenv("HUGGING_FACE_API_TOKEN", "")
    assert _value(Settings(), "hf_token") == "hf_last" and env_choice("HF_TOKEN") == ("HF_API_KEY", "hf_last")
    assert Settings.environment()["hf_token"]["variable"] == "HF_API_KEY"
    monkeypatch.setenv("HF_TOKEN", "hf_own")
    assert _value(Settings(), "hf_token") == "hf_own" and env_choice("HF_TOKEN") == ("HF_TOKEN", "hf_own")
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_API_KEY", " ")
    assert Settings().hf_token is None and Settings.environment()["hf_token"]["variable"] is None


def test_a_missing_token_names_every_name_it_is_read_by(monkeypatch: pytest.MonkeyPatch) -> None:
    assert spelled("HF_TOKEN") == "$HF_TOKEN (or $HUGGING_FACE_API_TOKEN, $HUGGINGFACE_TOKEN, $HF_API_KEY)"
    backend = REGISTERED["huggingface"].cls(BackendsConfig().cloud("huggingface"))
    status = backend.status()
    assert not status.configured and status.reason is not None and "$HUGGINGFACE_TOKEN" in status.reason
    monkeypatch.setenv("HUGGINGFACE_TOKEN", "hf_x")
    assert backend.status().configured and backend.api_key == "hf_x"


def test_s3_takes_the_bucket_and_region_from_the_seeds_names(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = S3StorageConfig(endpoint_url="http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match=r"storage.bucket or \$S3_BUCKET_NAME"):
        build_store(cfg, Settings())
    monkeypatch.setenv("S3_BUCKET_NAME", "scene-images")
    monkeypatch.setenv("AWS_REGION", "ap-northeast-2")
    store = build_store(cfg, Settings())
    assert (store.config.bucket, store.config.region) == ("scene-images", "ap-northeast-2")  # type: ignore[attr-defined]
    assert store.client.meta.region_name == "ap-northeast-2"  # type: ignore[attr-defined]
    given = build_store(cfg.model_copy(update={"bucket": "yaml-bucket", "region": "eu-west-1"}), Settings())
    assert (given.config.bucket, given.config.region) == ("yaml-bucket", "eu-west-1"), "the YAML wins"  # type: ignore[attr-defined]
    monkeypatch.delenv("AWS_REGION")
    assert build_store(cfg, Settings()).config.region == "us-east-1"  # type: ignore[attr-defined]


def test_cloudinary_takes_the_cloud_name_from_the_seeds_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDINARY_API_KEY", "k")
    monkeypatch.setenv("CLOUDINARY_API_SECRET", "s")
    with pytest.raises(ConfigurationError, match=r"\$CLOUDINARY_CLOUD_NAME"):
        build_store(CloudinaryStorageConfig(), Settings())
    monkeypatch.setenv("CLOUDINARY_CLOUD_NAME", "not a name!")
    with pytest.raises(ConfigurationError, match="letters, digits"):
        build_store(CloudinaryStorageConfig(), Settings())
    monkeypatch.setenv("CLOUDINARY_CLOUD_NAME", "demo-cloud")
    store = build_store(CloudinaryStorageConfig(), Settings())
    assert store.config.cloud_name == "demo-cloud"  # type: ignore[attr-defined]
    assert "/v1_1/demo-cloud/" in store._api("image", "upload")  # type: ignore[attr-defined]


def test_info_says_which_variable_was_used_never_its_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUGGING_FACE_API_TOKEN", "hf_secret_value")
    monkeypatch.setenv("AWS_REGION", "ap-northeast-2")
    with ingress_context(tmp_path, {}):
        response = TestClient(app).get("/info")
    environment = response.json()["environment"]
    assert environment["hf_token"] == {
        "variable": "HUGGING_FACE_API_TOKEN",
        "names": ["HF_TOKEN", "HUGGING_FACE_API_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_KEY"],
    }
    assert environment["s3_region"]["variable"] == "AWS_REGION" and environment["s3_bucket"]["variable"] is None
    assert "hf_secret_value" not in response.text and "ap-northeast-2" not in response.text
    hugging_face = next(b for b in response.json()["backends"]["image"] if b["name"] == "huggingface")
    assert hugging_face["configured"] is True and hugging_face["provider"] == "hf-inference"
