"""Encoding generated images in the format a request asks for (png, jpeg, webp)."""

from __future__ import annotations

import io

from PIL import Image

from serve_app.requests import OutputFormat

DEFAULT_QUALITY = 90  # jpeg/webp quality when a request gives no output_compression

# format -> (file extension, media type); the extensions are those serve_app.images.MEDIA_TYPES serves
OUTPUT_TYPES: dict[str, tuple[str, str]] = {
    "png": ("png", "image/png"),
    "jpeg": ("jpg", "image/jpeg"),
    "webp": ("webp", "image/webp"),
}


def encode_output(png: bytes, fmt: OutputFormat, compression: int | None = None) -> tuple[bytes, str, str]:
    """The Generator's PNG as `fmt`: (bytes, extension, media type). PNG passes through unchanged;
    jpeg and webp are encoded at quality `compression` (0-100, DEFAULT_QUALITY when None)."""
    ext, media_type = OUTPUT_TYPES[fmt]
    if fmt == "png":
        return png, ext, media_type
    quality = DEFAULT_QUALITY if compression is None else compression
    with Image.open(io.BytesIO(png)) as img:
        rgb = img.convert("RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        rgb.save(buf, format="JPEG", quality=max(1, quality), optimize=True)
    else:
        rgb.save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue(), ext, media_type
