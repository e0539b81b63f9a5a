"""Files the ingress serves itself: local-storage images and the offline catalog's product images."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from serve_app.api.deps import IngressContext, get_ctx
from serve_app.errors import NotFound
from serve_app.shopping.catalog import CATALOG_IMAGES_DIR
from serve_app.storage.local import LocalImageStore

router = APIRouter(tags=["files"])


@router.get("/files/{key:path}", summary="An image kept by the local storage backend.")
async def local_file(key: str, ctx: IngressContext = Depends(get_ctx)) -> FileResponse:
    if not isinstance(ctx.images, LocalImageStore):
        raise NotFound("Files are not served by this server (storage is not local).")
    if key.endswith(".json"):  # a reproducibility record (prompt, task id, input URL): not for URL holders
        raise NotFound("No such file.")
    try:
        path = ctx.images.path_for(key)
    except Exception as exc:
        raise NotFound("No such file.") from exc
    if not path.is_file():
        raise NotFound("No such file.")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/catalog/images/{name}", summary="Product image of the offline shopping catalog.")
async def catalog_image(name: str) -> FileResponse:
    root = Path(CATALOG_IMAGES_DIR).resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        raise NotFound("No such catalog image.")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
