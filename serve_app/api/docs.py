"""GET /docs: Swagger UI over /openapi.json, from files the package ships (serve_app/swagger_ui/),
served under `/static/swagger/`, never from a CDN, with the web page's Content-Security-Policy.

FastAPI's own /docs loads Swagger UI from a CDN and starts it with an inline script, which that
policy (`script-src 'self'`) would block; this page starts it with a script file of its own
(`docs-init.js`) that reads the document's URL from the page.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from serve_app.api.page import CSP
from serve_app.errors import NotFound

router = APIRouter(tags=["docs"])

SWAGGER_DIR = Path(__file__).resolve().parent.parent / "swagger_ui"
STATIC = "/static/swagger"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}
# Only these are served: no path is ever built from the request.
_FILES = {
    name: SWAGGER_DIR / name for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "docs-init.js")
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>imagegen-serve API</title>
<link rel="stylesheet" href="{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script src="{static}/docs-init.js"></script>
</body>
</html>
"""


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    openapi = request.app.openapi_url or "/openapi.json"
    html = PAGE.format(static=escape(root + STATIC), openapi=escape(root + openapi))
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(html, headers=headers)


@router.get(STATIC + "/{name}", include_in_schema=False)
async def swagger_file(name: str) -> FileResponse:
    path = _FILES.get(name)
    if path is None:
        raise NotFound("No such file.")
    headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)
