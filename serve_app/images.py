"""Decode untrusted image bytes within bounds, encode PNG, and fit images to a target size.

Decoding reads the header first and refuses oversized images (width*height > max_pixels) before any
pixel is decompressed, so a small file claiming huge dimensions (a decompression bomb) costs nothing.
PIL's own DecompressionBombError (beyond Image.MAX_IMAGE_PIXELS, left at its default) is InvalidImage too.
"""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageOps, UnidentifiedImageError

from serve_app.errors import InvalidImage, PayloadTooLarge

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP"})  # MPO: multi-picture JPEG (phones)
_OPENERS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # the JPEG opener also yields MPO images


# Formats kept as sent when a photo is stored (compressed, one still image): extension, media type.
# GIF (maybe animated) and BMP (uncompressed, often 5-10x a PNG) are stored re-encoded as PNG.
# MPO (a phone's multi-picture JPEG) is a JPEG whose first picture every JPEG decoder reads.
STORED_AS_SENT = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "MPO": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
}

MEDIA_TYPES = dict(STORED_AS_SENT.values())  # extension -> media type of every image kept in storage


def decode_image(data: bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """An RGB image (EXIF orientation applied; GIF: first frame; alpha composited on white).

    Raises PayloadTooLarge when `data` exceeds `max_bytes`, InvalidImage when it is not a PNG, JPEG,
    WEBP, GIF or BMP image, is truncated or corrupt, or has more than `max_pixels` pixels.
    """
    return decode_image_and_format(data, max_pixels, max_bytes)[0]


def decode_image_and_format(data: bytes, max_pixels: int, max_bytes: int) -> tuple[Image.Image, str]:
    """`decode_image`, and the format the bytes are in (PNG, JPEG, MPO, WEBP, GIF or BMP)."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The image is {len(data)} bytes; the limit is {max_bytes}.")
    if not data:
        raise InvalidImage("The image is empty.")
    try:
        img = Image.open(io.BytesIO(data), formats=_OPENERS)  # reads the header only
        if img.format not in ALLOWED_FORMATS:
            raise InvalidImage(f"Unsupported image format {img.format}; use PNG, JPEG, WEBP, GIF or BMP.")
        width, height = img.size
        if width <= 0 or height <= 0 or width * height > max_pixels:
            raise InvalidImage(f"The image is {width}x{height} pixels; at most {max_pixels} pixels are allowed.")
        fmt = str(img.format)
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img), fmt
    except InvalidImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InvalidImage("The image could not be decoded: unknown format or too many pixels.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise InvalidImage("The image could not be decoded (corrupt or truncated data).") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def stored_photo(data: bytes, img: Image.Image, fmt: str) -> tuple[bytes, str, str]:
    """What to store for a decoded photo: (bytes, extension, media type). PNG, JPEG and WEBP are
    kept as sent (a re-encoded PNG of a phone JPEG is several times larger); GIF and BMP become PNG.
    Readers decode with `decode_image`, which applies the EXIF orientation a kept JPEG carries."""
    if fmt in STORED_AS_SENT:
        ext, media_type = STORED_AS_SENT[fmt]
        return data, ext, media_type
    return encode_png(img), "png", "image/png"


def encode_png(img: Image.Image, compress_level: int = 6) -> bytes:
    """PNG bytes of `img` (compress level 6 by default: a balance of size and CPU)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def fit_to(img: Image.Image, width: int, height: int) -> Image.Image:
    """Exactly `width`x`height`: scale to cover the target keeping aspect, then center-crop."""
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    if img.size == (width, height):
        return img.copy()
    return ImageOps.fit(img, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
