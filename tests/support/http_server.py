"""A tiny HTTP server for fetch tests, on 127.0.0.1:0 in a thread: static bodies, redirects, stalls.

with StaticServer() as srv:
    srv.add("/img.png", png_bytes, headers={"Content-Type": "image/png"})
    srv.redirect("/r", "http://169.254.169.254/")
    srv.add("/slow", b"x", stall=True)          # holds the answer until the server stops
    srv.add("/big", b"x" * 10**6, content_length=False)  # body until close, no length header
    url = srv.url("/img.png")
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from testbed.local_server import LocalServer, QuietHandler


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True
    stall: bool = False


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class StaticServer(LocalServer):
    """Answers registered paths; 404 for the rest. Records every request in `.requests`."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[SeenRequest] = []
        self._release = threading.Event()
        server = self

        class Handler(QuietHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(
                    SeenRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    route = Route(b"not found", 404)
                if route.stall:
                    server._release.wait(timeout=30)
                    return
                try:
                    self.send_response(route.status)
                    for name, value in route.headers.items():
                        self.send_header(name, value)
                    if route.content_length:
                        self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    for i in range(0, len(route.body), 64 * 1024):
                        self.wfile.write(route.body[i : i + 64 * 1024])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (size limit): expected

            do_GET = _serve  # noqa: N815 - stdlib names
            do_POST = _serve  # noqa: N815
            do_HEAD = _serve  # noqa: N815

        super().__init__(Handler, name="static-server")

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(
        self,
        path: str,
        body: bytes = b"",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_length: bool = True,
        stall: bool = False,
    ) -> str:
        """Register a route; returns its URL."""
        self.routes[path] = Route(body, status, dict(headers or {}), content_length, stall)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.add(path, status=status, headers={"Location": location})

    def stop(self) -> None:
        self._release.set()  # stalled answers end first, or shutting down would wait for them
        super().stop()
