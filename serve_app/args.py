"""The sections of serve_config.yaml's `args:` that are not a product's (`CoreArgs`).

Each section's model lives beside the code it configures; this module only puts them together.
`serve_app.config.AppArgs` adds each registered product's section. Replica counts, CPU/GPU shares
and autoscaling are not here: they live only in serve_config.yaml. Secrets are not here either:
they come from the environment (`serve_app.settings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self, TypeVar

from pydantic import BaseModel, Field, model_validator

from serve_app.api.config import (
    AdmissionConfig,
    AuthConfig,
    CorsConfig,
    HealthConfig,
    LongRequestsConfig,
    OpenAICompatConfig,
)
from serve_app.backends.config import BackendsConfig
from serve_app.net import FetchPolicy
from serve_app.presets import GenerationLimits, Preset
from serve_app.retry import RetryConfig
from serve_app.shopping.config import ShoppingConfig
from serve_app.storage.config import (
    CloudinaryStorageConfig,
    GoogleDriveStorageConfig,
    ImgurStorageConfig,
    LocalStorageConfig,
    S3StorageConfig,
    StorageConfig,
)
from serve_app.tasks.config import RetentionConfig, TasksConfig
from serve_app.webhooks import WebhookConfig
from serve_app.writing.config import PromptWriterConfig

C = TypeVar("C", bound=BaseModel)


class CoreArgs(BaseModel):
    """Every section of serve_config.yaml's `args:` but the products' own (`AppArgs` adds those).

    The ingress, the runner and the products read their arguments through this type; a product's
    own section comes from `product_config`, so no module below the registry names `AppArgs`."""

    preset: str = Field(default="tiny", description="Preset name under configs/presets or a YAML path.")
    data_dir: str = Field(default="./var", description="Task DB, local images, model cache.")
    public_base_url: str = Field(
        default="http://127.0.0.1:8000", description="How clients reach the ingress (local files, catalog images)."
    )
    model_cache_dir: str | None = Field(default=None, description="Tiny models; <data_dir>/models.")
    storage: StorageConfig = Field(default_factory=LocalStorageConfig, discriminator="kind")
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    webhooks: WebhookConfig = Field(default_factory=WebhookConfig)
    fetch: FetchPolicy = Field(default_factory=FetchPolicy)
    shopping: ShoppingConfig = Field(default_factory=ShoppingConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    cors: CorsConfig = Field(default_factory=CorsConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    openai: OpenAICompatConfig = Field(default_factory=OpenAICompatConfig)
    long_requests: LongRequestsConfig = Field(default_factory=LongRequestsConfig)
    backends: BackendsConfig = Field(default_factory=BackendsConfig)
    prompt_writer: PromptWriterConfig = Field(default_factory=PromptWriterConfig)
    limits: GenerationLimits | None = Field(default=None, description="Override the preset's limits.")

    @model_validator(mode="after")
    def _keys_keep_images_private(self) -> Self:
        if self.auth.enabled and isinstance(self.storage, S3StorageConfig) and self.storage.url_mode == "public":
            raise ValueError(
                "auth.enabled with storage.url_mode 'public' would show every key's images to anyone holding "
                "a URL; use url_mode 'presigned' (time-limited URLs handed only to the task's key)."
            )
        if self.auth.enabled and isinstance(self.storage, CloudinaryStorageConfig) and self.storage.url_mode == "cdn":
            raise ValueError(
                "auth.enabled with Cloudinary storage.url_mode 'cdn' would give every key's images URLs that never "
                "expire, open to anyone holding one; use url_mode 'expiring' (signed URLs valid for url_expiry_s)."
            )
        if self.auth.enabled and isinstance(self.storage, ImgurStorageConfig):
            raise ValueError(
                "auth.enabled with storage.kind 'imgur' would show every key's images to anyone holding a link: "
                "Imgur images are public (unlisted by link) and never expire; use google_drive, s3 (presigned), "
                "cloudinary (expiring) or local storage."
            )
        if self.tasks.store == "postgres" and isinstance(self.storage, ImgurStorageConfig):
            raise ValueError(
                "storage.kind 'imgur' keeps its deletehashes and records in a ledger on one node, which the other "
                "nodes of a cluster (tasks.store postgres) cannot see or delete from; use s3, cloudinary or "
                "google_drive there."
            )
        return self

    def resolved(self) -> Self:
        """Absolute paths, so every replica agrees wherever its working directory is."""
        data_dir = Path(self.data_dir).expanduser().resolve()
        tasks = self.tasks.model_copy(
            update={"db_path": str(Path(self.tasks.db_path or data_dir / "tasks.db").expanduser().resolve())}
        )
        storage = self.storage
        if isinstance(storage, LocalStorageConfig):
            root = Path(storage.root or data_dir / "images").expanduser().resolve()
            base = storage.public_base_url or self.public_base_url
            storage = storage.model_copy(update={"root": str(root), "public_base_url": base.rstrip("/")})
        elif isinstance(storage, GoogleDriveStorageConfig):
            base = storage.public_base_url or self.public_base_url
            storage = storage.model_copy(update={"public_base_url": base.rstrip("/")})
        elif isinstance(storage, ImgurStorageConfig):
            ledger = Path(storage.ledger_path or data_dir / "imgur.db").expanduser().resolve()
            storage = storage.model_copy(update={"ledger_path": str(ledger)})
        cache = Path(self.model_cache_dir or data_dir / "models").expanduser().resolve()
        return self.model_copy(
            update={"data_dir": str(data_dir), "tasks": tasks, "storage": storage, "model_cache_dir": str(cache)}
        )

    def effective_limits(self, preset: Preset) -> GenerationLimits:
        return self.limits or preset.limits

    def product_config(self, cls: type[C]) -> C:
        """A product's own section (its config model), as `AppArgs` holds it."""
        for value in self.__dict__.values():
            if isinstance(value, cls):
                return value
        raise LookupError(f"no {cls.__name__} in these args (is its product registered?)")
