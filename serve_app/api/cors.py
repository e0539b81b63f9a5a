"""CORS for browser clients, from the replica's `cors:` args (off until origins are listed).

The FastAPI app is built when serve_app.ingress is imported, before any config exists; the config
arrives with the replica's context in `Ingress.__init__`. So this middleware is installed once,
at import, and reads the context per request: with no origins configured it passes every request
through untouched (no CORS headers, as before), else it hands it to Starlette's CORSMiddleware
built from the configured lists. It sits outside the error mapper, so its answers (a 503 with
Retry-After, a 401, a 500 S3_UPLOAD_FAILED) carry the CORS headers a browser script needs to read
them; only a crash past the mapper (Starlette's outermost 500) goes without.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.api.config import CorsConfig
from serve_app.api.deps import current_context


class ConfiguredCors:
    """ASGI middleware: Starlette's CORSMiddleware with the running replica's `CorsConfig`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._built: tuple[CorsConfig, CORSMiddleware] | None = None

    def _middleware(self, config: CorsConfig) -> CORSMiddleware:
        if self._built is None or self._built[0] is not config:  # a new context (tests) brings a new config
            middleware = CORSMiddleware(
                self.app,
                allow_origins=config.allow_origins,
                allow_methods=config.allow_methods,
                allow_headers=config.allow_headers,
                expose_headers=config.expose_headers,
                max_age=config.max_age,
            )
            self._built = (config, middleware)
        return self._built[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = current_context()
        if scope["type"] != "http" or ctx is None or not ctx.args.cors.enabled:
            await self.app(scope, receive, send)
            return
        await self._middleware(ctx.args.cors)(scope, receive, send)
