"""What every cloud image-provider stub shares: a threaded HTTP server on 127.0.0.1, request
recording, failure rules, and control over HTTP (Serve replicas live in other processes).

A provider stub subclasses `ProviderStub` and implements `handle(request) -> Reply` for its own
paths, speaking the provider's real wire format, `error_reply(mode, request)` for the error
bodies that provider really sends, and `on_reset()` for any state of its own. Rules make the next
`times` requests (forever when None) fail with a mode:

    unauthorized (401), forbidden (403), rate_limit (429 + Retry-After), loading (503 +
    Retry-After; Hugging Face's "model is loading"), server_error (500), bad_request (400,
    e.g. a content-policy refusal), malformed (200 with a body that is not what the API sends),
    slow (wait `delay_s`, then answer normally), fail_job (a job-based API accepts the job and
    reports it failed when polled).

Control: `stub.add_rule("rate_limit", times=2, retry_after="1")`, or over HTTP
`POST /__control {"mode": "rate_limit", "times": 2, "retry_after": "1"}` / `{"action": "reset"}`;
`GET /__stats` answers `{"requests": [{"method", "path"}...], "served": n}`.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from typing import Any
from urllib.parse import parse_qs, urlsplit

from testbed.local_server import LocalServer, QuietHandler

MODES = (
    "ok",
    "unauthorized",
    "forbidden",
    "rate_limit",
    "loading",
    "server_error",
    "bad_request",
    "malformed",
    "slow",
    "fail_job",
)


def multipart(request: StubRequest) -> tuple[dict[str, str], dict[str, bytes]]:
    """A multipart body's text fields and file parts (bytes; the last of a repeated name)."""
    fields, files = multipart_all(request)
    return fields, dict(files)


def multipart_all(request: StubRequest) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """A multipart body's text fields and every file part (name, bytes), in order (`image[]` repeats)."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=default).parsebytes(head + request.body)
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition") or "")
        if part.get_filename() is not None:
            files.append((name, part.get_payload(decode=True) or b""))
        else:
            fields[name] = part.get_content()
    return fields, files


def make_png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    """A real PNG (what the providers hand back is a real image; ours is just small)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def make_jpeg(width: int = 64, height: int = 64) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


@dataclass
class Rule:
    mode: str
    times: int | None = None
    delay_s: float = 2.0
    retry_after: str | None = None


@dataclass(frozen=True)
class StubRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, (dict, list)):
            headers.setdefault("Content-Type", "application/json")
            return json.dumps(self.body).encode(), headers
        return self.body, headers


class ProviderStub(LocalServer):
    """Base of the provider stubs; use as a context manager (`with OpenAIStub() as stub:`)."""

    def __init__(self) -> None:
        self.requests: list[StubRequest] = []
        self.rules: list[Rule] = []
        self.served = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: with Nagle on, the client's delayed ACK holds the
            # second for ~40 ms, a latency no real provider adds.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = StubRequest(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                reply = stub._dispatch(request)
                data, headers = reply.encoded()
                try:
                    self.send_response(reply.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = _serve  # noqa: N815 - stdlib names
            do_POST = _serve  # noqa: N815
            do_DELETE = _serve  # noqa: N815
            do_PUT = _serve  # noqa: N815
            do_PATCH = _serve  # noqa: N815

        super().__init__(Handler, name=f"{type(self).__name__}-server")
        self.on_reset()

    # -- rules -----------------------------------------------------------------------------------

    def add_rule(self, mode: str, times: int | None = None, *, delay_s: float = 2.0, retry_after: str | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        with self._lock:
            self.rules.append(Rule(mode, times, delay_s, retry_after))

    def reset(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self.served = 0
        self.on_reset()

    def take_mode(self) -> Rule | None:
        """The rule that applies to this request (spending one of its `times`), or None."""
        with self._lock:
            for rule in self.rules:
                if rule.times is None or rule.times > 0:
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
            return None

    def _dispatch(self, request: StubRequest) -> Reply:
        if request.path == "/__control" and request.method == "POST":
            body = request.json() or {}
            if body.get("action") == "reset":
                self.reset()
            else:
                self.add_rule(
                    body["mode"],
                    body.get("times"),
                    delay_s=body.get("delay_s", 2.0),
                    retry_after=body.get("retry_after"),
                )
            return Reply(200, {"ok": True})
        if request.path == "/__stats":
            with self._lock:
                seen = [{"method": r.method, "path": r.path} for r in self.requests]
            return Reply(200, {"requests": seen, "served": self.served})
        with self._lock:
            self.requests.append(request)
        rule = None if self.exempt(request) else self.take_mode()
        if rule is not None and rule.mode == "slow":
            time.sleep(rule.delay_s)
            rule = None
        if rule is not None and rule.mode not in ("ok", "fail_job", "malformed"):
            reply = self.error_reply(rule.mode, request)
            if rule.mode in ("rate_limit", "loading") and rule.retry_after is not None:
                reply.headers.setdefault("Retry-After", rule.retry_after)
            return reply
        reply = self.handle(request, rule.mode if rule is not None else "ok")
        with self._lock:
            self.served += 1
        return reply

    # -- what a provider stub implements ---------------------------------------------------------

    def exempt(self, request: StubRequest) -> bool:
        """Requests no rule applies to (e.g. downloads of an output file); none by default."""
        return False

    def on_reset(self) -> None:
        """Set the provider's own state (jobs, flags) to how a new stub starts: at creation and on reset."""

    def handle(self, request: StubRequest, mode: str) -> Reply:
        """Answer a request; `mode` is ok, malformed or fail_job."""
        raise NotImplementedError

    def error_reply(self, mode: str, request: StubRequest) -> Reply:
        """The provider's real error answer for `mode`."""
        raise NotImplementedError


@dataclass(frozen=True)
class BackendCase:
    """How the backend contract suite (tests/unit/test_backend_contract.py) drives one registered
    backend against its stub.

    name: the backend's registered name; stub: the stub class; env: the environment variables
    holding its key(s), with values the stub accepts, the one a configuration error must name
    (`key_var`) first; refusal_words: a phrase from the stub's `bad_request` body that the raised error
    must carry; check_request(stub, spec): asserts on what the stub received for the ok case
    (wire format: path, auth header, body fields); api_path: the API root's path below the stub's
    base URL (e.g. /v1); edit_model: the model an edit is asked of when the default one cannot
    edit (OpenAI's dall-e-3 cannot, gpt-image-1 can); check_edit(stub, spec): asserts on what the
    stub received for an edit (a registered `edits=True` backend)."""

    name: str
    stub: Callable[[], ProviderStub]
    env: dict[str, str]
    refusal_words: str
    check_request: Callable[[Any, Any], None]
    api_path: str = ""
    edit_model: str | None = None
    check_edit: Callable[[Any, Any], None] | None = None

    @property
    def key_var(self) -> str:
        """The variable a configuration error must name: the first of `env`."""
        return next(iter(self.env))

    def config(self, base_url: str) -> Any:
        """The backend's registered settings, pointed at the stub."""
        from serve_app.backends.config import BackendsConfig

        return BackendsConfig().cloud(self.name).model_copy(update={"base_url": base_url + self.api_path})

    def backend(self, *args: Any, **kwargs: Any) -> Any:
        """The registered backend's client, allowed to fetch the image URLs its stub answers."""
        from serve_app.backends.registry import REGISTERED

        return REGISTERED[self.name].cls(*args, **{"fetch": stub_fetch(), **kwargs})

    def client(self, stub: ProviderStub, clock: Any, **update: Any) -> Any:
        """The backend pointed at the running `stub`, on the fake `clock` (its sleeps cost no wall
        time), its settings changed by `update`."""
        return self.backend(self.config(stub.base_url).model_copy(update=update), clock=clock, sleep=clock.sleep)

    @contextmanager
    def running(self, monkeypatch: Any) -> Iterator[Any]:
        """The stub, started, with the backend's key(s) set in the environment for the test."""
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        with self.stub() as stub:
            yield stub


def stub_fetch() -> Any:
    """The fetch policy that lets a backend download from a stub on 127.0.0.1: the app's own
    `fetch.allow_hosts`, as the integration tests set it (the default refuses loopback)."""
    from serve_app.net import FetchPolicy

    return FetchPolicy(allow_hosts=["127.0.0.1"])


def backend_case(name: str) -> BackendCase:
    """The contract case of a registered backend: `CASE` of testbed/stubs/<name>_stub.py."""
    from importlib import import_module

    return import_module(f"testbed.stubs.{name}_stub").CASE  # type: ignore[no-any-return]
