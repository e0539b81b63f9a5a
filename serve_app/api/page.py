"""The web page at `/` and its files under `/ui/`: try the products from a browser.

Plain HTML, CSS and JavaScript shipped in the package (serve_app/webpage/), no build step and
nothing loaded from another site; the page calls the same /v1 API as any client (with the API key
a visitor types in, kept in their browser). Served with a Content-Security-Policy that allows
scripts, styles and connections to this server only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from serve_app.errors import NotFound

router = APIRouter(tags=["web page"])

PAGE_DIR = Path(__file__).resolve().parent.parent / "webpage"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".jpg": "image/jpeg",
    ".png": "image/png",
}
# Images may come from the storage backend's host (S3 presigned URLs, a CDN) and product images
# from the shopping provider's; everything else only from this server.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob: https: http:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _serve(path: Path, cache: str) -> FileResponse:
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)


def shipped_files() -> dict[str, Path]:
    """Every file the page may serve, by its path under /ui/ (index.html only at /)."""
    return {
        str(path.relative_to(PAGE_DIR)): path
        for path in PAGE_DIR.rglob("*")
        if path.is_file() and path.suffix in MEDIA_TYPES and path.name != "index.html"
    }


_FILES = shipped_files()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return _serve(PAGE_DIR / "index.html", "no-cache")


@router.get(
    "/ui/{name:path}",
    summary="A file of the web page (script, style sheet, sample desk photo).",
    responses={404: {"description": "No such file."}},
    include_in_schema=False,
)
async def page_file(name: str) -> FileResponse:
    path = _FILES.get(name)  # only the shipped files: no path is ever built from the request
    if path is None:
        raise NotFound("No such file.")
    return _serve(path, "public, max-age=300")
