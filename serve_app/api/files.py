"""Files the ingress serves itself: the images of a store that keeps them private (local files, Google
Drive) and the offline catalog's product images."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from serve_app.api.auth import CallerDep
from serve_app.api.deps import Ctx
from serve_app.api.schemas import ErrorResponse
from serve_app.errors import InvalidInput, NotFound
from serve_app.images import MEDIA_TYPES
from serve_app.shopping.catalog import CATALOG_IMAGES_DIR
from serve_app.storage.local import LocalImageStore

router = APIRouter(tags=["files"])


@router.get(
    "/files/{key:path}",
    summary="An image kept by the local or Google Drive storage backend (with API keys on: only the owning key's).",
    responses={
        401: {"model": ErrorResponse, "description": "API keys on: no live key."},
        404: {"model": ErrorResponse, "description": "No such image (or another key's)."},
    },
)
async def stored_file(key: str, ctx: Ctx, caller: CallerDep) -> Response:
    if not ctx.images.ingress_serves:
        raise NotFound("Files are not served by this server (the storage backend serves its own URLs).")
    ext = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    if ext not in MEDIA_TYPES:  # .json reproducibility records (prompt, task id, input URL) are not served
        raise NotFound("No such file.")
    if caller.key is not None and key.split("/", 1)[0] != caller.key.user_id:
        raise NotFound("No such file.")  # another key's image: as if there were none
    # Shared caches must not keep an image that only its key may read.
    cache = "private, max-age=86400" if caller.key is not None else "public, max-age=86400"
    if not isinstance(ctx.images, LocalImageStore):
        try:
            data = await ctx.images.get(key)  # a missing one is NotFound, a failing store StorageError
        except InvalidInput as exc:
            raise NotFound("No such file.") from exc
        return Response(data, media_type=MEDIA_TYPES[ext], headers={"Cache-Control": cache})
    try:
        path = ctx.images.path_for(key)
    except Exception as exc:
        raise NotFound("No such file.") from exc
    if not path.is_file():
        raise NotFound("No such file.")
    return FileResponse(path, media_type=MEDIA_TYPES[ext], headers={"Cache-Control": cache})


@router.get(
    "/static/catalog/images/{name}",
    summary="Product image of the offline shopping catalog.",
    responses={404: {"model": ErrorResponse, "description": "No such catalog image."}},
)
async def catalog_image(name: str) -> FileResponse:
    root = Path(CATALOG_IMAGES_DIR).resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        raise NotFound("No such catalog image.")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
