"""Taking a task's input images in: uploaded, fetched from a URL (SSRF-safe, within the byte cap)
or an `s3://` object of the bucket; decoded within the pixel limit and the replica's upload and
decoded-pixel budgets, then stored under the request's user."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from serve_app.api.budgets import header_pixels
from serve_app.api.deps import IngressContext
from serve_app.errors import ImageFetchFailed, InvalidInput, NotFound
from serve_app.images import decode_image, decode_image_and_format, stored_photo
from serve_app.net import fetch_bytes
from serve_app.requests import ResolvedGenerate
from serve_app.storage.base import make_key


async def photo_bytes(ctx: IngressContext, url: str, owner: str | None = None) -> bytes:
    """The bytes behind an image URL: fetched (SSRF-guarded), or an `s3://` object of the bucket,
    only under the `owner`'s own folder of the input prefixes when one is given (keys on)."""
    if url.startswith("s3://"):
        from serve_app.storage.s3 import S3ImageStore

        if not isinstance(ctx.images, S3ImageStore):
            raise InvalidInput("initial_image_url: s3:// URLs need the S3 storage backend.")
        try:
            return await ctx.images.get_s3_url(url, max_bytes=ctx.limits.max_upload_bytes, owner=owner)
        except NotFound as exc:
            raise ImageFetchFailed("initial_image_url: no such object in the bucket.") from exc
    policy = ctx.args.fetch.model_copy(update={"max_bytes": ctx.limits.max_upload_bytes})
    return await fetch_bytes(url, policy)


async def take_in_photo(
    ctx: IngressContext, request: ResolvedGenerate, upload: bytes | None, owner: str | None = None
) -> tuple[str | None, str | None]:
    """Fetch or receive the photo, decode and bound it, store it (as sent when PNG, JPEG or WEBP,
    else as PNG) under the request's user: (input_key, initial_image_url). `owner`: the caller's
    storage owner with keys on, whose folder an `s3://` URL must name."""
    if request.initial_image_url and upload is not None:
        raise InvalidInput("Give initial_image_url or an uploaded image, not both.")
    if not request.initial_image_url and upload is None:
        return None, None
    return await take_in_image(ctx, request.user_id, upload, request.initial_image_url, owner)


@dataclass(frozen=True)
class Photo:
    """One more input image of a task (after its photo): uploaded bytes, or a URL to fetch."""

    upload: bytes | None = None
    url: str | None = None


async def take_in_image(
    ctx: IngressContext, user_id: str, upload: bytes | None, url: str | None, owner: str | None = None
) -> tuple[str, str]:
    """An uploaded image, or the one at `url` (fetched SSRF-safe, or an s3:// object), decoded
    within the limits and the upload and pixel budgets, stored under `user_id`: (key, its URL)."""
    limits = ctx.limits
    with ctx.uploads.hold() as take:  # fetched bytes count against the upload budget, as uploads do
        if upload is None:
            take(limits.max_upload_bytes)  # what the fetch may bring, reserved before it starts
        data = upload if upload is not None else await photo_bytes(ctx, url or "", owner)
        async with ctx.pixels.hold(header_pixels(data)):
            image, fmt = await asyncio.to_thread(
                decode_image_and_format, data, limits.max_image_pixels, limits.max_upload_bytes
            )
            stored, ext, media_type = await asyncio.to_thread(stored_photo, data, image, fmt)
            del image
        del data
    key = make_key(user_id, ext=ext)
    stored_url = await ctx.images.put(key, stored, content_type=media_type)
    return key, url or stored_url


async def decoded_size(ctx: IngressContext, data: bytes) -> tuple[int, int]:
    """The size of uploaded image bytes, decoded within the limits and the replica's decoded-pixel
    budget (INVALID_IMAGE otherwise); the decoded image is dropped at once."""
    limits = ctx.limits
    async with ctx.pixels.hold(header_pixels(data)):
        image = await asyncio.to_thread(decode_image, data, limits.max_image_pixels, limits.max_upload_bytes)
        size: tuple[int, int] = image.size
        del image
    return size
