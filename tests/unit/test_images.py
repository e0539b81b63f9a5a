"""Bounded decoding, PNG encoding and fitting of images (serve_app.images)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from serve_app.errors import InvalidImage, PayloadTooLarge
from serve_app.images import decode_image, encode_png, fit_to

MAX_PIXELS = 4096 * 4096
MAX_BYTES = 10 * 1024 * 1024


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but carries almost no pixel data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_decode_allowed_formats(fmt: str) -> None:
    src = Image.new("RGB", (32, 24), (200, 30, 30))
    img = decode_image(encode(src, fmt), MAX_PIXELS, MAX_BYTES)
    assert img.mode == "RGB" and img.size == (32, 24)
    r, g, b = img.getpixel((16, 12))
    assert r > 150 and g < 80 and b < 80


def test_rgba_is_flattened_on_white() -> None:
    src = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    img = decode_image(encode(src, "PNG"), MAX_PIXELS, MAX_BYTES)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    img = decode_image(data, MAX_PIXELS, MAX_BYTES)
    r, _, b = img.getpixel((5, 5))
    assert r > 200 and b < 50


def test_unsupported_format_and_garbage() -> None:
    with pytest.raises(InvalidImage):
        decode_image(encode(Image.new("RGB", (8, 8)), "TIFF"), MAX_PIXELS, MAX_BYTES)
    with pytest.raises(InvalidImage):
        decode_image(b"this is not an image at all", MAX_PIXELS, MAX_BYTES)
    with pytest.raises(InvalidImage):
        decode_image(b"", MAX_PIXELS, MAX_BYTES)
    truncated = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")[:-200]
    with pytest.raises(InvalidImage):
        decode_image(truncated, MAX_PIXELS, MAX_BYTES)


def test_too_many_bytes() -> None:
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(PayloadTooLarge):
        decode_image(data, MAX_PIXELS, len(data) - 1)
    assert decode_image(data, MAX_PIXELS, len(data)).size == (8, 8)


def test_bomb_refused_from_header_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    class Decoded(Exception):
        pass

    def no_load(self: ImageFile.ImageFile) -> None:
        raise Decoded("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    bomb = png_header_only(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(InvalidImage, match="pixels"):
        decode_image(bomb, MAX_PIXELS, MAX_BYTES)
    # just over the limit is refused, the limit itself passes the check (and would then decode)
    with pytest.raises(InvalidImage, match="pixels"):
        decode_image(png_header_only(101, 100), 100 * 100, MAX_BYTES)
    with pytest.raises(Decoded):
        decode_image(png_header_only(100, 100), 100 * 100, MAX_BYTES)


def test_pil_bomb_limit_is_invalid_image() -> None:
    """Beyond PIL's own MAX_IMAGE_PIXELS*2, Image.open raises DecompressionBombError."""
    bomb = png_header_only(30_000, 30_000)  # 9e8 px > 2 * 89e6
    with pytest.raises(InvalidImage):
        decode_image(bomb, 10**10, MAX_BYTES)


def test_exif_orientation_is_applied() -> None:
    src = Image.new("RGB", (40, 20), (255, 0, 0))
    src.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display needs a 90 degree clockwise turn
    img = decode_image(encode(src, "JPEG", exif=exif.tobytes(), quality=95), MAX_PIXELS, MAX_BYTES)
    assert img.size == (20, 40)
    top, bottom = img.getpixel((10, 5)), img.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_encode_png_round_trip() -> None:
    src = Image.effect_noise((16, 16), 40).convert("RGB")
    data = encode_png(src)
    assert data.startswith(b"\x89PNG")
    assert list(Image.open(io.BytesIO(data)).convert("RGB").getdata()) == list(src.getdata())


@pytest.mark.parametrize(("size", "target"), [((100, 50), (64, 64)), ((50, 100), (64, 32)), ((64, 64), (64, 64))])
def test_fit_to_exact_size(size: tuple[int, int], target: tuple[int, int]) -> None:
    assert fit_to(Image.new("RGB", size), *target).size == target


def test_fit_to_center_crops() -> None:
    src = Image.new("RGB", (90, 30), (255, 0, 0))
    src.paste((0, 255, 0), (30, 0, 60, 30))
    src.paste((0, 0, 255), (60, 0, 90, 30))
    out = fit_to(src, 30, 30)
    assert out.size == (30, 30)
    assert out.getpixel((2, 15))[1] > 200 and out.getpixel((27, 15))[1] > 200  # only the green middle
    with pytest.raises(ValueError):
        fit_to(src, 0, 10)
