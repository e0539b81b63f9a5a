"""The synchronous client of imagegen-serve's HTTP API (v1).

    from imagegen_client import ImagegenClient

    with ImagegenClient("http://127.0.0.1:8000", api_key="igs_...") as client:
        task = client.submit("a walnut desk with a brass lamp", image="my-desk.jpg", steps=8)
        result = client.wait(task.task_id, on_event=print)
        paths = client.download(result, "out/")

Every request is retried (see `imagegen_client.retry`) on connection failures, timeouts, 429 and
502/503/504, honouring Retry-After; a submit carries one Idempotency-Key for all its attempts, so
a retried submit never makes a second task. Errors raise `ApiError` (status, error_code, message,
retry_after) or `ImagegenConnectionError`.
"""

from __future__ import annotations

import functools
import json
import mimetypes
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx

from imagegen_client.errors import (
    ApiError,
    EventsUnavailable,
    ImagegenConnectionError,
    ImagegenError,
    TaskNotDone,
    WaitTimeout,
)
from imagegen_client.models import TaskAccepted, TaskEvent, TaskResult, WebhookReplay
from imagegen_client.retry import RETRY_EXCEPTIONS, RetryPolicy, parse_retry_after
from imagegen_client.sse import SSEDecoder

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "imagegen-client/0.1"
IMAGE_EXTENSIONS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".webp": ".webp", ".gif": ".gif"}
IMAGE_MEDIA_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}

ImageInput = str | os.PathLike[str] | bytes


def _image_part(image: ImageInput) -> tuple[str, bytes, str]:
    """(file name, bytes, media type) of an image given as a path or as bytes."""
    if isinstance(image, bytes | bytearray | memoryview):
        data, name = bytes(image), "image"
    else:
        path = Path(image)
        data, name = path.read_bytes(), path.name
    media = _sniff(data) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if "." not in name:
        name += IMAGE_MEDIA_TYPES.get(media, "")
    return name, data, media


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data.startswith(b"BM"):
        return "image/bmp"
    return None


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _id(task_id: str) -> str:
    """A task id as one path segment (ids are hex; anything else is escaped, never a path)."""
    return quote(task_id, safe="")


def parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """(width, height) of "WxH" (or a tuple); ValueError when malformed."""
    if isinstance(size, tuple):
        width, height = size
        return int(width), int(height)
    parts = size.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"size must be WIDTHxHEIGHT, e.g. 512x512, not {size!r}")
    return int(parts[0]), int(parts[1])


class ImagegenClient:
    """A client for one imagegen-serve server (`base_url` up to, not including, `/v1`).

    `api_key` is sent as `Authorization: Bearer ...` to that server only (never to another host an
    image URL points at). `timeout` bounds each request (an event stream waits up to
    `stream_read_timeout` between two bytes; the server sends a keep-alive every 15 s).
    `max_retries` retries per request; `retry` replaces the whole policy. `transport` is passed to
    httpx (tests, proxies, an ASGI app); `sleep` is how the client waits between attempts.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        stream_read_timeout: float = 60.0,
        poll_interval: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = httpx.URL(base_url.rstrip("/"))
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.timeout = timeout
        self.stream_read_timeout = stream_read_timeout
        self.poll_interval = poll_interval
        self._api_key = api_key
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never the key
        return f"ImagegenClient({str(self.base_url)!r}, api_key={'***' if self._api_key else None})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ImagegenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _same_server(self, url: httpx.URL) -> bool:
        if url.is_relative_url:
            return True
        base = self.base_url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)

    def _headers(self, url: httpx.URL, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._api_key and self._same_server(url):
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _send(self, request: Callable[[], httpx.Response]) -> httpx.Response:
        """Run `request` until it answers something other than a retryable failure, or retries run out."""
        retry = 0
        while True:
            try:
                response = request()
            except RETRY_EXCEPTIONS as exc:
                delay = self.retry.delay(retry) if retry < self.retry.max_retries else None
                if delay is None:
                    raise ImagegenConnectionError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
            except httpx.HTTPError as exc:  # not worth repeating (bad URL, unsupported scheme, ...)
                raise ImagegenConnectionError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
            else:
                if not response.is_error:
                    return response
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                delay = None
                if self.retry.retries_status(response.status_code) and retry < self.retry.max_retries:
                    delay = self.retry.delay(retry, retry_after)
                if delay is None:
                    raise ApiError.from_response(response, retry_after)
            self._sleep(delay)
            retry += 1

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        url = httpx.URL(path)
        sent = self._headers(url, headers)
        return self._send(lambda: self._http.request(method, url, json=json_body, data=data, files=files, headers=sent))

    # -- the API ----------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str | None = None,
        *,
        image: ImageInput | None = None,
        image_url: str | None = None,
        lora: str | None = None,
        lora_scale: float | None = None,
        steps: int | None = None,
        size: str | tuple[int, int] | None = None,
        seed: int | None = None,
        webhook_url: str | None = None,
        n: int | None = None,
        output_format: str | None = None,
        negative_prompt: str | None = None,
        guidance_scale: float | None = None,
        strength: float | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> TaskAccepted:
        """POST /v1/generate: a desk makeover (with a photo: `image` path or bytes, or `image_url`)
        or text-to-image (without). With a photo the prompt may be left out (None): the server
        composes it from the photo's caption. Fields left None take the server's defaults; `extra` are sent
        as they are (fields newer than this client). One Idempotency-Key (`idempotency_key`, else
        a new uuid4) covers every attempt, so retries return the same task."""
        if image is not None and image_url is not None:
            raise ValueError("give image or image_url, not both")
        fields: dict[str, Any] = {} if prompt is None else {"prompt": prompt}
        if image_url is not None:
            fields["initial_image_url"] = image_url
        if lora is not None:
            fields["lora"] = {"name": lora} if lora_scale is None else {"name": lora, "scale": lora_scale}
        elif lora_scale is not None:
            raise ValueError("lora_scale needs lora")
        if size is not None:
            fields["width"], fields["height"] = parse_size(size)
        optional = {
            "num_inference_steps": steps,
            "seed": seed,
            "webhook_url": webhook_url,
            "n": n,
            "output_format": output_format,
            "negative_prompt": negative_prompt,
            "guidance_scale": guidance_scale,
            "strength": strength,
            **extra,
        }
        fields.update({name: value for name, value in optional.items() if value is not None})
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        if image is None:
            response = self._call("POST", "/v1/generate", json_body=fields, headers=headers)
        else:
            form = {name: _form_value(value) for name, value in fields.items()}
            response = self._call(
                "POST", "/v1/generate", data=form, files={"image": _image_part(image)}, headers=headers
            )
        return TaskAccepted.model_validate(response.json())

    def result(self, task_id: str) -> TaskResult:
        """GET /v1/result/{task_id}: status, progress, queue position and ETA; the outputs when done."""
        return TaskResult.model_validate(self._call("GET", f"/v1/result/{_id(task_id)}").json())

    def cancel(self, task_id: str) -> TaskResult:
        """DELETE /v1/tasks/{task_id}: a queued task fails CANCELLED at once, a running one at its next
        step (the answer then still says `processing`). A task already cancelled (say, by an
        attempt whose answer was lost) is returned as it is; another finished task is a 409."""
        try:
            return TaskResult.model_validate(self._call("DELETE", f"/v1/tasks/{_id(task_id)}").json())
        except ApiError as exc:
            if exc.status != 409:
                raise
            current = self.result(task_id)
            if current.status == "failed" and current.error_code == "CANCELLED":
                return current
            raise

    def replay_webhook(self, task_id: str) -> WebhookReplay:
        """POST /v1/tasks/{task_id}/webhook: deliver a finished task's webhook again (same webhook-id)."""
        return WebhookReplay.model_validate(self._call("POST", f"/v1/tasks/{_id(task_id)}/webhook").json())

    def events(
        self, task_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[TaskEvent]:
        """GET /v1/tasks/{task_id}/events: the task's events as they happen, ending after the final
        `result` event. A stream that closes or drops before that is reopened with Last-Event-ID
        (after the server's `retry` time, as a browser's EventSource does), so no event is
        repeated or lost; `max_retries` failed connections in a row (errors, 429/502/503/504, no
        event between them) give up with ImagegenConnectionError (or the ApiError). Past `timeout`
        seconds: WaitTimeout. EventsUnavailable when the server has no event stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        path = f"/v1/tasks/{_id(task_id)}/events"
        failures, reconnect_ms = 0, None
        while True:
            got_event = False
            error: Exception | None = None
            retry_after: float | None = None
            try:
                for event, decoder in self._stream_once(path, last_event_id, deadline):
                    got_event, failures = True, 0
                    last_event_id, reconnect_ms = decoder.last_event_id or None, decoder.retry
                    yield event
                    if event.final:
                        return
            except RETRY_EXCEPTIONS as exc:
                error = exc
            except ApiError as exc:
                if not self.retry.retries_status(exc.status):
                    raise
                error, retry_after = exc, exc.retry_after
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"task {task_id} did not end within {timeout} s")
            delay: float | None
            if got_event or error is None:  # a clean close, or it was working: as EventSource, reopen
                delay = reconnect_ms / 1000 if reconnect_ms is not None else self.retry.backoff(0)
            else:
                failures += 1
                delay = self.retry.delay(failures - 1, retry_after) if failures <= self.retry.max_retries else None
            if delay is None:
                if isinstance(error, ApiError):
                    raise error
                raise ImagegenConnectionError(f"{self.base_url}{path}: {type(error).__name__}: {error}") from error
            self._sleep(delay)

    def _stream_once(
        self, path: str, last_event_id: str | None, deadline: float | None
    ) -> Iterator[tuple[TaskEvent, SSEDecoder]]:
        """One connection to an event stream: its events, with the decoder's state after each."""
        url = httpx.URL(path)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        read = self.stream_read_timeout
        if deadline is not None:
            read = max(0.01, min(read, deadline - time.monotonic()))
        timeout = httpx.Timeout(self.timeout, read=read)
        with self._http.stream("GET", url, headers=self._headers(url, headers), timeout=timeout) as response:
            if response.is_error:
                response.read()
                error = ApiError.from_response(response, parse_retry_after(response.headers.get("retry-after")))
                if error.status in (404, 405, 501) and error.error_code != "TASK_NOT_FOUND":
                    raise EventsUnavailable(f"{path}: {error}")
                raise error
            media = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "text/event-stream":
                raise EventsUnavailable(f"{path} answered {media or 'no content type'}, not text/event-stream")
            decoder = SSEDecoder(last_event_id)
            for chunk in response.iter_bytes():
                for sse in decoder.feed(chunk):
                    try:
                        event = TaskEvent.from_sse(sse)
                    except ValueError as exc:
                        raise ImagegenError(f"malformed {sse.event!r} event from {path}: {exc}") from exc
                    yield event, decoder
                if deadline is not None and time.monotonic() >= deadline:
                    return

    def wait(
        self,
        task_id: str,
        on_event: Callable[[TaskEvent], None] | None = None,
        timeout: float | None = None,
        *,
        use_events: bool = True,
    ) -> TaskResult:
        """Block until the task ends and return its result (done or failed: check `status`).

        Follows the event stream, calling `on_event` with every event (progress, then the final
        result); where the server has no event stream, polls GET /v1/result instead and calls
        `on_event` with an event for every change it sees. WaitTimeout past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if use_events:
            try:
                for event in self.events(task_id, timeout=timeout):
                    if on_event is not None:
                        on_event(event)
                    if event.final and event.result is not None:
                        return event.result
            except EventsUnavailable:
                pass
        return self._poll(task_id, on_event, deadline, timeout)

    def _poll(
        self,
        task_id: str,
        on_event: Callable[[TaskEvent], None] | None,
        deadline: float | None,
        timeout: float | None,
    ) -> TaskResult:
        seen: Any = None
        while True:
            result = self.result(task_id)
            event = TaskEvent.from_result(result)
            state = event.progress.model_dump(exclude={"eta_s"}) if event.progress else None
            if on_event is not None and (result.finished or state != seen):
                on_event(event)
            seen = state
            if result.finished:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"task {task_id} did not end within {timeout} s")
            self._sleep(self.poll_interval)

    def download(self, result_or_task_id: TaskResult | str, dest_dir: str | os.PathLike[str]) -> list[Path]:
        """Save a done task's images under `dest_dir` (created if needed) and return their paths:
        every entry of `images` when the server lists them, else `processed_image_url`; none when
        the task made no image (e.g. `generation_skipped: not_a_desk`). Files are named after the
        task (`<task_id>.png`, or `<task_id>-<i>.png` for several). TaskNotDone unless done."""
        result = self.result(result_or_task_id) if isinstance(result_or_task_id, str) else result_or_task_id
        if result.status != "done":
            raise TaskNotDone(result.task_id, result.status, result.error_code)
        urls = result.image_urls
        folder = Path(dest_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, url in enumerate(urls):
            target = httpx.URL(url)
            response = self._send(functools.partial(self._http.get, target, headers=self._headers(target)))
            stem = result.task_id if len(urls) == 1 else f"{result.task_id}-{index}"
            paths.append(_save(folder, stem, target, response))
        return paths


def _save(folder: Path, stem: str, url: httpx.URL, response: httpx.Response) -> Path:
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and not media.startswith("image/") and media != "application/octet-stream":
        raise ImagegenError(f"{url} answered {media}, not an image")
    suffix = IMAGE_EXTENSIONS.get(PurePosixPath(url.path).suffix.lower()) or IMAGE_MEDIA_TYPES.get(media, ".bin")
    path = folder / f"{stem}{suffix}"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(response.content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
