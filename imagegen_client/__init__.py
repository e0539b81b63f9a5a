"""Python client and `imagegen` CLI of imagegen-serve; depends on httpx and pydantic only.

from imagegen_client import ImagegenClient, verify_webhook
"""

from __future__ import annotations

from imagegen_client.client import DEFAULT_URL, ImagegenClient
from imagegen_client.errors import (
    ApiError,
    EventsUnavailable,
    ImagegenConnectionError,
    ImagegenError,
    TaskNotDone,
    WaitTimeout,
)
from imagegen_client.models import (
    GeneratedImage,
    Progress,
    ProgressEvent,
    TaskAccepted,
    TaskEvent,
    TaskResult,
    WebhookReplay,
)
from imagegen_client.retry import RetryPolicy
from imagegen_client.sse import ServerSentEvent, SSEDecoder
from imagegen_client.webhooks import WebhookVerificationError, verify_webhook, webhook_signature

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "EventsUnavailable",
    "GeneratedImage",
    "ImagegenClient",
    "ImagegenConnectionError",
    "ImagegenError",
    "Progress",
    "ProgressEvent",
    "RetryPolicy",
    "SSEDecoder",
    "ServerSentEvent",
    "TaskAccepted",
    "TaskEvent",
    "TaskNotDone",
    "TaskResult",
    "WaitTimeout",
    "WebhookReplay",
    "WebhookVerificationError",
    "verify_webhook",
    "webhook_signature",
]
