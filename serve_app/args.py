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
from serve_app.storage.config import LocalStorageConfig, StorageConfig, resolve_storage, storage_refusal
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
        refusal = storage_refusal(self.storage, keys_on=self.auth.enabled, shared_tasks=self.tasks.store == "postgres")
        if refusal:
            raise ValueError(refusal)
        return self

    def resolved(self) -> Self:
        """Absolute paths, so every replica agrees wherever its working directory is."""
        data_dir = Path(self.data_dir).expanduser().resolve()
        tasks = self.tasks.model_copy(
            update={"db_path": str(Path(self.tasks.db_path or data_dir / "tasks.db").expanduser().resolve())}
        )
        storage = resolve_storage(self.storage, data_dir, self.public_base_url)
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
