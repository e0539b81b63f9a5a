"""What the in-process HTTP servers of the tests and benchmarks share (the provider stubs, the webhook
receiver, the static file server): a stdlib ThreadingHTTPServer on 127.0.0.1 serving from a daemon
thread, and a request handler that logs nothing."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that writes no access log (test output stays readable)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class LocalServer:
    """`handler` served on 127.0.0.1:`port` (0: a free port, in `port` and `base_url` once bound).

    start() serves from a daemon thread (again: nothing); stop() ends that and closes the socket, so
    the port refuses connections. As a context manager it does both."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0, name: str = "local-server") -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._name = name
        self._thread: threading.Thread | None = None
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self._name, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
