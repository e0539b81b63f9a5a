"""Typed configuration: the app args of serve_config.yaml, the presets in configs/, env settings.

Replica counts, CPU/GPU shares and autoscaling are not here: they live only in serve_config.yaml.
Secrets are not here either: they come from the environment (`Settings`).
"""

from __future__ import annotations

import hashlib
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serve_app.errors import ConfigurationError
from serve_app.products import Variant
from serve_app.protocol import GenerationDefaults, GenerationLimits

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "data"


# --- presets ---------------------------------------------------------------------------------


class LoraSpec(BaseModel):
    name: str = Field(description="Name clients pass as lora.name.")
    path: str = Field(description="Local file/folder, hub id, or tiny:<seed> (generated offline).")
    weight_name: str | None = Field(default=None, description="File inside a folder / hub repo.")
    trigger_words: list[str] = Field(default_factory=list, description="Added to the prompt.")
    default_scale: float = Field(default=1.0, description="Scale when the request gives none.")
    description: str = ""


class ModelSpec(BaseModel):
    model_id: str = Field(description="Hub id, local folder, or `tiny` (built offline from a config).")
    revision: str | None = None


class PipelineTuning(BaseModel):
    """How a diffusers pipeline is loaded and run: memory and speed options of a preset's model.

    Each is off (or automatic) by default, so the tiny preset and a laptop run the plain
    pipeline; `benchmarks.gpu_throughput` reports what each one does on a GPU."""

    model_config = ConfigDict(extra="forbid")

    variant: str | None = Field(
        default=None,
        description="Weight files variant to download, e.g. fp16 (half the bytes of the fp32 files; "
        "the model repo must have them).",
    )
    vae: str | None = Field(
        default=None,
        description="Another AutoencoderKL to decode with (hub id or folder), e.g. "
        "madebyollin/sdxl-vae-fp16-fix: SDXL's own VAE overflows to NaN (black images) in float16.",
    )
    vae_slicing: bool = Field(default=False, description="Decode a batch one image at a time (peak memory / batch).")
    vae_tiling: bool = Field(default=False, description="Decode large images in overlapping tiles (bounded memory).")
    safety_checker: bool = Field(
        default=True,
        description="Run the safety checker the weights ship with (SD 1.5); its verdict is a result field and a "
        "flagged image fails with CONTENT_FILTERED. false: not loaded (saves ~1.2 GB), results say not_run.",
    )
    channels_last: bool | None = Field(
        default=None, description="UNet in channels_last memory format; null: on CUDA only."
    )
    compile: Literal["off", "default", "max-autotune-no-cudagraphs"] = Field(
        default="off",
        description="torch.compile the UNet (a warm-up per batch shape on the first calls).",
    )
    compile_backend: str = Field(default="inductor", description="torch.compile backend.")
    cuda_graphs: bool = Field(
        default=False,
        description="Replay the compiled UNet as CUDA graphs (torch.compile mode reduce-overhead / max-autotune); "
        "needs compile and a CUDA device.",
    )
    fuse_lora: bool = Field(
        default=False,
        description="Merge the active LoRA into the base weights (no extra matmuls per step); a switch to "
        "another adapter unmerges first. For presets where one adapter dominates the traffic.",
    )

    @model_validator(mode="after")
    def _check(self) -> PipelineTuning:
        if self.cuda_graphs and self.compile == "off":
            raise ValueError("cuda_graphs needs compile (default or max-autotune-no-cudagraphs)")
        if self.cuda_graphs and self.compile_backend != "inductor":
            raise ValueError("cuda_graphs needs the inductor compile backend")
        return self

    def compile_mode(self) -> str | None:
        """torch.compile's mode, None when the UNet is not compiled."""
        if self.compile == "off":
            return None
        if self.cuda_graphs:
            return "max-autotune" if self.compile == "max-autotune-no-cudagraphs" else "reduce-overhead"
        return self.compile


class GeneratorModel(ModelSpec):
    family: Literal["sd", "sdxl"] = Field(default="sd", description="Pipeline family.")
    tuning: PipelineTuning = Field(default_factory=PipelineTuning)


class ClassifierModel(ModelSpec):
    desk_labels: list[str] = Field(
        default_factory=lambda: [
            "a photo of a desk setup",
            "a photo of a computer desk with a monitor and keyboard",
            "a photo of a home office workspace",
        ]
    )
    other_labels: list[str] = Field(
        default_factory=lambda: [
            "a photo of a landscape",
            "a photo of a person",
            "a photo of food",
            "a photo of an animal",
            "a photo of a street",
        ]
    )
    threshold: float = Field(default=0.5, description="is_desk when the desk labels' mass >= this.")


class Preset(BaseModel):
    name: str
    description: str = ""
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N | mps.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="auto: float16 on CUDA, float32 on CPU."
    )
    generator: GeneratorModel
    editor: GeneratorModel = Field(
        description="The instruction-edit model (InstructPix2Pix: an 8-channel UNet), `tiny` or a hub id/folder."
    )
    captioner: ModelSpec
    classifier: ClassifierModel
    loras: list[LoraSpec] = Field(default_factory=list)
    defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)
    limits: GenerationLimits = Field(default_factory=GenerationLimits)
    max_loras_per_replica: int = Field(default=3, ge=1, description="LRU size of resident adapters.")

    @model_validator(mode="after")
    def _check(self) -> Preset:
        names = [lora.name for lora in self.loras]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate LoRA names in preset {self.name}: {names}")
        if self.limits.max_side >= 8192:
            raise ValueError("limits.max_side must be below 8192")
        d = self.defaults
        if not (d.height % 8 == 0 and d.width % 8 == 0):
            raise ValueError("default height/width must be multiples of 8")
        return self

    def lora(self, name: str) -> LoraSpec | None:
        return next((lora for lora in self.loras if lora.name == name), None)


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (configs/presets/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS_DIR / "presets" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigurationError(f"Unknown preset {name_or_path!r} (no file {path}).")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Preset.model_validate(data)


def load_yaml_config(name: str) -> dict:
    """A YAML file from configs/ (vocabularies, templates)."""
    path = CONFIGS_DIR / name
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- app args (serve_config.yaml `args:`) -----------------------------------------------------


class LocalStorageConfig(BaseModel):
    kind: Literal["local"] = "local"
    root: str | None = Field(default=None, description="Folder for images; <data_dir>/images when None.")
    public_base_url: str | None = Field(
        default=None, description="Base URL the ingress serves /files/ under; the app's public_base_url when None."
    )


class S3StorageConfig(BaseModel):
    kind: Literal["s3"] = "s3"
    bucket: str
    endpoint_url: str | None = Field(default=None, description="None for AWS; SeaweedFS/MinIO/R2 URL.")
    region: str = "us-east-1"
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    url_mode: Literal["presigned", "public"] = "presigned"
    public_base_url: str | None = Field(default=None, description="Base of public URLs (CDN).")
    presign_expiry_s: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    create_bucket: bool = Field(default=False, description="Create the bucket at start (dev/test).")
    input_prefixes: list[str] = Field(
        default_factory=lambda: ["uploads/"],
        description="Key prefixes an s3://bucket/key initial image may name; any other key (another "
        "user's images, .json records) is refused. Empty: no s3:// inputs.",
    )
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    timeout_s: float = 10.0
    max_attempts: int = 3


class CloudinaryStorageConfig(BaseModel):
    """Cloudinary (seed image-generation-storage-guide.md): signed uploads, CDN delivery URLs.

    The API key and secret are never in YAML: `api_key_env` / `api_secret_env` name the variables."""

    kind: Literal["cloudinary"] = "cloudinary"
    cloud_name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$", description="The account's cloud name.")
    api_base_url: str = Field(default="https://api.cloudinary.com", description="Upload and Admin API root.")
    delivery_base_url: str = Field(default="https://res.cloudinary.com", description="Delivery (CDN) root.")
    folder: str = Field(default="", pattern=r"^[A-Za-z0-9_/-]*$", description="Public ids start with this folder.")
    api_key_env: str = "CLOUDINARY_API_KEY"
    api_secret_env: str = "CLOUDINARY_API_SECRET"
    timeout_s: float = Field(default=20.0, gt=0, le=300)


StorageConfig = LocalStorageConfig | S3StorageConfig | CloudinaryStorageConfig


class FetchPolicy(BaseModel):
    """How user-supplied URLs (images, webhooks) are fetched."""

    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts/IPs/CIDRs that may be private or loopback (tests, in-cluster services).",
    )
    max_bytes: int = Field(default=10 * 1024 * 1024, description="Largest body read.")
    timeout_s: float = Field(default=10.0, description="Total time for one fetch.")
    max_redirects: int = Field(default=3, ge=0, le=10)
    dns_timeout_s: float = Field(default=3.0, gt=0, le=60, description="Longest wait for one name lookup.")
    dns_max_concurrency: int = Field(
        default=8, ge=1, le=256, description="Lookups in flight at once, on their own threads (never the shared pool)."
    )


class TasksConfig(BaseModel):
    store: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="sqlite: one file on this machine (the embedded default). postgres: one database shared "
        "by every node of a cluster, at the DSN in the IMAGEGEN_TASKS_DSN environment variable.",
    )
    db_path: str | None = Field(default=None, description="SQLite file; <data_dir>/tasks.db when None.")
    pool_max_size: int = Field(default=8, ge=1, le=100, description="PostgreSQL connections per replica.")
    lease_s: float = Field(default=30.0, gt=0, description="A worker renews its lease this often x3.")
    max_attempts: int = Field(default=2, ge=1, description="Runs before a lost task is failed.")
    sweep_interval_s: float = Field(default=2.0, gt=0, description="Reaper period.")
    dispatch_grace_s: float = Field(default=10.0, gt=0, description="Queued this long: the reaper runs it.")
    max_active: int = Field(default=64, ge=1, description="queued+processing above this: 503.")
    retry_after_s: int = Field(default=5, ge=1)


class AdmissionConfig(BaseModel):
    """What the ingress admits, by compute cost and upload bytes, beyond the task count (tasks.max_active).

    A request's cost is height x width x num_inference_steps x images ("pixel-steps"); the preset's
    `limits.max_request_cost` bounds one request (what one Generator replica can take).
    """

    max_active_cost: int | None = Field(
        default=None,
        ge=1,
        description="Sum of the costs of queued and running tasks above which a submit gets 503 + Retry-After; "
        "None: only tasks.max_active bounds the queue.",
    )
    upload_bytes_in_flight: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Request bytes an ingress replica holds at once across all uploads being received; "
        "past it a submit gets 503 + Retry-After instead of the replica running out of memory.",
    )
    max_json_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest body of a JSON route the framework parses (scenes, articles, textures, "
        "/v1/images/generations, cancels); past it 413 before the body is buffered.",
    )


class KeyLimits(BaseModel):
    """What one API key may do; a key's own limits override `auth.default_limits` field by field."""

    max_pixel_steps_per_image: int | None = Field(
        default=None, ge=1, description="height x width x steps of one image; above it: 403 KEY_LIMIT_EXCEEDED."
    )
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Generation requests accepted per rolling minute; above: 429 RATE_LIMITED."
    )
    max_in_flight: int | None = Field(
        default=None, ge=1, description="Tasks queued or running at once; above: 429 TOO_MANY_TASKS."
    )
    max_cost_in_flight: int | None = Field(
        default=None, ge=1, description="Sum of the costs of its queued and running tasks; above: 429."
    )

    def over(self, defaults: KeyLimits) -> KeyLimits:
        """These limits, with the fields they leave unset taken from `defaults`."""
        return KeyLimits.model_validate(
            {
                name: getattr(self, name) if getattr(self, name) is not None else getattr(defaults, name)
                for name in KeyLimits.model_fields
            }
        )


class AuthConfig(BaseModel):
    """API keys: off by default. On: /v1 and /files need a key made with `python -m serve_app.keys create`."""

    enabled: bool = Field(default=False, description="Require an API key on /v1/* and /files/*.")
    default_limits: KeyLimits = Field(
        default_factory=lambda: KeyLimits(requests_per_minute=60, max_in_flight=8),
        description="Limits of a key that sets none of its own.",
    )


class RetentionConfig(BaseModel):
    """How long finished tasks and what they stored (input photo, images, .json records) are kept."""

    ttl_s: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="A finished task, its photo and its images are deleted this long after it ended.",
    )
    sweep_interval_s: float = Field(default=600.0, gt=0, description="How often a runner looks for expired tasks.")
    batch_size: int = Field(default=200, ge=1, description="Tasks deleted per sweep pass.")
    sweep_orphans: bool = Field(
        default=True,
        description="Also delete stored objects older than ttl_s that no task row names (a task that "
        "crashed between storing and recording its image).",
    )


class RetryConfig(BaseModel):
    """Calls to model deployments that fail because a replica or node died are retried like this."""

    max_attempts: int = Field(default=5, ge=1, le=20, description="Tries per stage call, the first included.")
    base_delay_s: float = Field(default=0.5, gt=0, description="Delay after the first failure; doubles each time.")
    max_delay_s: float = Field(default=8.0, gt=0, description="Longest delay between tries.")
    attempt_timeout_s: float = Field(
        default=600.0, gt=0, description="One try that takes longer (no replica can be placed) counts as failed."
    )


class WebhookConfig(BaseModel):
    """Retries of one webhook: with the defaults, 2 s doubling to 5 min over 10 attempts, a receiver
    may be down for at least 6.75 min (13.5 min nominal) and still get the result."""

    max_attempts: int = Field(default=10, ge=1)
    base_delay_s: float = Field(default=2.0, gt=0)
    max_delay_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)


class ShoppingConfig(BaseModel):
    provider: Literal["auto", "naver", "catalog"] = Field(
        default="auto", description="auto: naver when NAVER_CLIENT_ID/SECRET are set, else catalog."
    )
    naver_base_url: str = "https://openapi.naver.com"
    offers_per_item: int = Field(default=3, ge=1, le=10)
    cache_ttl_s: float = Field(default=600.0, ge=0)
    cache_max_entries: int = Field(default=2048, ge=0)
    rate_limit_per_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    fallback_to_catalog: bool = Field(
        default=False, description="When Naver fails for an item, answer it from the offline catalog."
    )


class CorsConfig(BaseModel):
    """Cross-origin access for browser clients: off (no CORS headers at all) until origins are listed.

    Keys travel in `Authorization` / `X-API-Key`, never in cookies, so credentialed CORS is not offered.
    """

    allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port], as browsers send them) allowed to call the API; ['*'] for "
        "any; [] turns CORS off.",
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "DELETE"], description="Methods a preflight may ask for."
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "X-API-Key", "Idempotency-Key", "Last-Event-ID", "Content-Type"],
        description="Request headers a preflight may ask for.",
    )
    expose_headers: list[str] = Field(
        default_factory=lambda: ["Location", "Retry-After"], description="Response headers scripts may read."
    )
    max_age: int = Field(default=600, ge=0, le=86400, description="Seconds a browser may cache a preflight answer.")

    @model_validator(mode="after")
    def _check_origins(self) -> CorsConfig:
        if "*" in self.allow_origins and len(self.allow_origins) > 1:
            raise ValueError("cors.allow_origins: '*' allows every origin; list it alone")
        for origin in self.allow_origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            default_port = {"http": 80, "https": 443}.get(parts.scheme)
            if (
                default_port is None
                or not parts.hostname
                or origin != f"{parts.scheme}://{parts.netloc}"
                or origin != origin.lower()
                or parts.port == default_port
            ):
                raise ValueError(
                    f"cors.allow_origins: {origin!r} is not an origin as browsers send it: lowercase "
                    "http(s)://host[:port], no path or trailing slash, no default port"
                )
        return self

    @field_validator("allow_methods")
    @classmethod
    def _upper_methods(cls, methods: list[str]) -> list[str]:
        return [method.upper() for method in methods]

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins)


OPENAI_IMAGE_MODELS = [
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "chatgpt-image-latest",
]


class OpenAICompatConfig(BaseModel):
    """The OpenAI-compatible images API (POST /v1/images/generations and /v1/images/edits)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Serve the /v1/images routes.")
    max_wait_s: float = Field(
        default=50.0,
        gt=0,
        le=3600,
        description="Longest a request waits for its task before 504 (keep it below http_options.request_timeout_s).",
    )
    poll_s: float = Field(default=0.25, gt=0, le=5, description="How often a waiting request reads its task.")
    default_response_format: Literal["url", "b64_json"] = Field(
        default="url", description="response_format when a request gives none."
    )
    model_aliases: list[str] = Field(
        default_factory=lambda: list(OPENAI_IMAGE_MODELS),
        description="OpenAI model names served by this server's preset (no LoRA), so code written for "
        "OpenAI runs unchanged; besides them `model` may name the preset or one of its LoRAs.",
    )


# --- image backends (SPEC.md section 2) -----------------------------------------------------------

CLOUD_BACKENDS = ("huggingface", "openai", "stability", "replicate", "kling", "gemini")
BACKEND_NAMES = ("local", *CLOUD_BACKENDS)
PRODUCTS = ("scene_internal", "scene_external", "article", "texture", "edit")
EDIT_BACKENDS = (
    "local",
    "openai",
    "replicate",
    "stability",
)  # the backends that can edit a given image by an instruction


def chain_entry(entry: str) -> tuple[str, str | None]:
    """A chain entry `backend` or `backend:model` (a cloud backend with another model, e.g.
    `huggingface:black-forest-labs/FLUX.1-dev` for textures)."""
    name, _, model = entry.partition(":")
    return name, model or None


class CloudBackendConfig(BaseModel):
    """One cloud image provider: where it is, which model, its key's variable, limits and price.

    Keys are never in YAML: `api_key_env` names the environment variable that holds one."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="The provider's API root; a stub's URL in tests.")
    model: str = Field(description="The provider's model id.")
    api_key_env: str = Field(description="Environment variable holding the API key (KLING: the access key).")
    secret_key_env: str | None = Field(default=None, description="KLING only: the secret key's variable.")
    timeout_s: float = Field(default=60.0, gt=0, le=600, description="One HTTP request.")
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries of 429/502/503/504, on top of the try.")
    backoff_base_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles each time.")
    backoff_max_s: float = Field(default=30.0, gt=0, description="Longest exponential delay.")
    max_retry_wait_s: float = Field(
        default=60.0, gt=0, description="Longest single wait, even when Retry-After asks for more."
    )
    rate_limit_per_minute: float = Field(default=60.0, gt=0, description="Client-side limit, per replica.")
    price_usd_per_image: float = Field(default=0.0, ge=0, description="What one image costs at the provider.")
    poll_interval_s: float = Field(default=2.0, gt=0, le=60, description="Replicate/KLING: task polling period.")
    max_poll_s: float = Field(default=300.0, gt=0, description="Replicate/KLING: give up (and cancel) after this.")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Provider-specific request fields (OpenAI quality, Stability output_format, KLING aspect...).",
    )


class LocalBackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_usd_per_gpu_second: float = Field(
        default=0.001, ge=0, description="Cost of the in-cluster Generator: GPU-seconds per image x this (~$3.6/h)."
    )


def _cloud(base_url: str, model: str, key: str, rate: float, price: float, **extra: object) -> CloudBackendConfig:
    return CloudBackendConfig.model_validate(
        {
            "base_url": base_url,
            "model": model,
            "api_key_env": key,
            "rate_limit_per_minute": rate,
            "price_usd_per_image": price,
            **extra,
        }
    )


class BackendsConfig(BaseModel):
    """Every image backend, and the fallback chain each product tries in order.

    Defaults: the seeds' rate limits (Hugging Face about 10 a minute, DALL-E 3 five a minute) and
    the providers' list prices; the in-cluster Generator costs GPU-seconds x its price."""

    model_config = ConfigDict(extra="forbid")

    local: LocalBackendConfig = Field(default_factory=LocalBackendConfig)
    huggingface: CloudBackendConfig = Field(
        default_factory=lambda: _cloud(
            "https://router.huggingface.co/hf-inference",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "HF_TOKEN",
            10,
            0.0,
        )
    )
    openai: CloudBackendConfig = Field(
        default_factory=lambda: _cloud("https://api.openai.com/v1", "dall-e-3", "OPENAI_API_KEY", 5, 0.04)
    )
    stability: CloudBackendConfig = Field(
        default_factory=lambda: _cloud("https://api.stability.ai", "core", "STABILITY_API_KEY", 900, 0.03)
    )
    replicate: CloudBackendConfig = Field(
        default_factory=lambda: _cloud(
            "https://api.replicate.com/v1", "black-forest-labs/flux-schnell", "REPLICATE_API_TOKEN", 600, 0.003
        )
    )
    kling: CloudBackendConfig = Field(
        default_factory=lambda: _cloud(
            "https://api-singapore.klingai.com",
            "kling-v1",
            "KLING_ACCESS_KEY",
            60,
            0.0035,
            secret_key_env="KLING_SECRET_KEY",
        )
    )
    gemini: CloudBackendConfig = Field(
        default_factory=lambda: _cloud(
            "https://generativelanguage.googleapis.com", "gemini-2.5-flash-image", "GEMINI_API_KEY", 10, 0.039
        )
    )
    chains: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "scene_internal": ["local"],
            "scene_external": ["kling", "local"],
            "article": ["local", "huggingface"],
            "texture": ["local", "huggingface:black-forest-labs/FLUX.1-dev"],
            "edit": ["local", "openai:gpt-image-1"],
        },
        description="Product -> backends tried in order; the next one runs when the one before fails.",
    )
    experiments: dict[str, list[Variant]] = Field(
        default_factory=dict,
        description="A/B tests: product -> variants (name, percent, chain), percents summing to 100; a caller "
        "(API key, else user id) always lands in the same variant.",
    )

    @model_validator(mode="after")
    def _chains_name_backends(self) -> BackendsConfig:
        for product, chain in self.chains.items():
            if product not in PRODUCTS:
                raise ValueError(f"backends.chains: unknown product {product!r} (known: {', '.join(PRODUCTS)})")
            unknown = [
                entry
                for entry in chain
                if chain_entry(entry)[0] not in BACKEND_NAMES or (entry.startswith("local:") and entry != "local")
            ]
            if unknown or not chain:
                raise ValueError(
                    f"backends.chains.{product}: {unknown or 'an empty chain'} (backends: {', '.join(BACKEND_NAMES)})"
                )
        for product in PRODUCTS:
            self.chains.setdefault(product, ["local"])
        edit_chains = [("backends.chains.edit", self.chains["edit"])] + [
            (f"backends.experiments.edit.{v.name}", v.chain) for v in self.experiments.get("edit", [])
        ]
        for where, chain in edit_chains:
            cannot = [entry for entry in chain if chain_entry(entry)[0] not in EDIT_BACKENDS]
            if cannot:
                raise ValueError(f"{where}: {cannot} cannot edit an image (edit backends: {', '.join(EDIT_BACKENDS)})")
        for product, variants in self.experiments.items():
            if product not in PRODUCTS:
                raise ValueError(f"backends.experiments: unknown product {product!r} (known: {', '.join(PRODUCTS)})")
            if abs(sum(v.percent for v in variants) - 100) > 1e-6 or len({v.name for v in variants}) != len(variants):
                raise ValueError(
                    f"backends.experiments.{product}: variants need distinct names and percents summing to 100"
                )
            for variant in variants:
                bad = [e for e in variant.chain if chain_entry(e)[0] not in BACKEND_NAMES or e.startswith("local:")]
                if bad:
                    raise ValueError(f"backends.experiments.{product}.{variant.name}: unknown backends {bad}")
        return self

    def variant_for(self, product: str, caller: str) -> Variant | None:
        """The caller's arm of the product's A/B test (None without one): a stable hash of the
        product and the caller into [0, 100), so the same caller always gets the same arm."""
        variants = self.experiments.get(product)
        if not variants:
            return None
        point = int.from_bytes(hashlib.sha256(f"{product}:{caller}".encode()).digest()[:8], "big") % 10_000 / 100
        edge = 0.0
        for variant in variants:
            edge += variant.percent
            if point < edge:
                return variant
        return variants[-1]

    def cloud(self, name: str) -> CloudBackendConfig:
        return getattr(self, name)


class PromptWriterConfig(BaseModel):
    """Who writes image prompts (scenes, articles) and translates Korean for the SD text encoder."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["template", "chat"] = Field(
        default="template",
        description="template: deterministic, offline (glossary translation); chat: an OpenAI-compatible chat API.",
    )
    chat: CloudBackendConfig = Field(
        default_factory=lambda: _cloud("https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY", 60, 0.0),
        description="The chat API (any OpenAI-compatible server: OpenAI, vLLM, Ollama...).",
    )
    fallback_to_template: bool = Field(
        default=True, description="When the chat API fails or answers invalid JSON twice, write from templates."
    )
    glossary_path: str | None = Field(default=None, description="Korean->English glossary; configs/ when None.")


class ScenesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora: str | None = Field(default=None, description="Style LoRA every scene uses (a preset LoRA name).")
    max_wait_s: float = Field(
        default=50.0, gt=0, le=55, description="How long the seed's synchronous call waits before a 504."
    )


class TexturesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_textures: int = Field(default=8, ge=1, le=32, description="Textures per request.")
    max_wait_s: float = Field(default=50.0, gt=0, le=55, description="How long a request waits before a 504.")


class FaceRestorationConfig(BaseModel):
    """Face restoration after an edit: GFPGAN through Replicate (no local option: see
    serve_app.backends.restoration). Replicate's URL, key and retries come from backends.replicate."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["replicate", "off"] = Field(default="replicate", description="off: requests for it are 422.")
    model: str = Field(
        default="tencentarc/gfpgan:0fbacf7afc6c144e5be9767cff80f25aff23e52b0708f17e20f9879b2f21516c",
        description="Replicate model:version taking `img`, `version`, `scale`.",
    )
    gfpgan_version: str = Field(default="v1.4", description="The model's `version` input (GFPGAN v1.3, v1.4...).")
    scale: float = Field(default=1.0, gt=0, le=4, description="Upscaling factor (1 keeps the edit's size).")
    price_usd_per_image: float = Field(default=0.0023, ge=0, description="What one restoration costs.")


class EditsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    face_restoration: FaceRestorationConfig = Field(default_factory=FaceRestorationConfig)

    image_guidance_scale: float = Field(
        default=1.5, ge=1.0, le=5.0, description="Default: how closely an edit keeps the source image."
    )
    rewrite: bool = Field(
        default=False, description="Default for `rewrite`: the prompt writer rewrites the instruction first."
    )
    max_wait_s: float = Field(default=50.0, gt=0, le=55, description="How long a request waits before a 504.")


class ArticlesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_placeholders: int = Field(default=16, ge=1, le=64, description="Placeholders per request.")
    style: str = Field(
        default="editorial illustration, clean composition, high detail", description="Added to every prompt."
    )


class AppArgs(BaseModel):
    """The `args:` of serve_config.yaml, passed to `serve_app.builder:build_app`."""

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
    openai: OpenAICompatConfig = Field(default_factory=OpenAICompatConfig)
    backends: BackendsConfig = Field(default_factory=BackendsConfig)
    prompt_writer: PromptWriterConfig = Field(default_factory=PromptWriterConfig)
    scenes: ScenesConfig = Field(default_factory=ScenesConfig)
    articles: ArticlesConfig = Field(default_factory=ArticlesConfig)
    textures: TexturesConfig = Field(default_factory=TexturesConfig)
    edits: EditsConfig = Field(default_factory=EditsConfig)
    limits: GenerationLimits | None = Field(default=None, description="Override the preset's limits.")

    @model_validator(mode="after")
    def _keys_keep_images_private(self) -> AppArgs:
        if self.auth.enabled and isinstance(self.storage, S3StorageConfig) and self.storage.url_mode == "public":
            raise ValueError(
                "auth.enabled with storage.url_mode 'public' would show every key's images to anyone holding "
                "a URL; use url_mode 'presigned' (time-limited URLs handed only to the task's key)."
            )
        return self

    def resolved(self) -> AppArgs:
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
        cache = Path(self.model_cache_dir or data_dir / "models").expanduser().resolve()
        return self.model_copy(
            update={"data_dir": str(data_dir), "tasks": tasks, "storage": storage, "model_cache_dir": str(cache)}
        )

    def effective_limits(self, preset: Preset) -> GenerationLimits:
        return self.limits or preset.limits


# --- secrets and environment -------------------------------------------------------------------


class Settings(BaseSettings):
    """Secrets and environment knobs; never in YAML."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    imagegen_webhook_secret: str | None = Field(
        default=None,
        description="Standard Webhooks secret: whsec_<base64 key>, prefix and padding optional; required for webhooks.",
    )
    imagegen_tasks_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL DSN of the task store when tasks.store is postgres."
    )
    naver_client_id: str | None = None
    naver_client_secret: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    imagegen_torch_threads: int | None = Field(
        default=None, description="torch threads per model replica; default: the replica's num_cpus, rounded up."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def torch_threads() -> int:
    """Threads a model replica should give torch: IMAGEGEN_TORCH_THREADS, else the CPUs Ray reserved
    for the replica (num_cpus in serve_config.yaml, rounded up), else all cores.

    Giving every replica all cores oversubscribes a small box: with two model replicas on 2 cores,
    each running 2 OpenMP threads, a tiny denoising step took 4.9 s instead of 0.07 s (see
    benchmarks/load_sweep). The reservation is what the operator budgeted for the replica.
    """
    configured = get_settings().imagegen_torch_threads
    if configured:
        return configured
    reserved = _reserved_cpus()
    if reserved:
        return max(1, math.ceil(reserved))
    return max(1, os.cpu_count() or 1)


def _reserved_cpus() -> float | None:
    try:
        import ray

        if not ray.is_initialized():
            return None
        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)) or None
    except Exception:  # outside a Ray worker, or an older runtime context API
        return None
