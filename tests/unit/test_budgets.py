"""The ingress's decoded-pixel budget (serve_app.api.budgets) and the upload byte budget's hold on a
fetched initial_image_url: what one replica decodes or receives at once is bounded, a request past
the bound is a 503 with Retry-After that creates nothing, and every reservation is given back."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.api.budgets import PixelBudget, header_pixels, trim, tune_malloc
from serve_app.api.deps import IngressContext
from serve_app.errors import QueueFull
from serve_app.ingress import app
from tests.support.ingress import ingress_context, png

MI = 1024 * 1024


def test_header_pixels_reads_the_size_without_decoding() -> None:
    assert header_pixels(png(40, 30)) == 1200
    assert header_pixels(b"not an image") == 0
    big = io.BytesIO()
    Image.new("RGB", (4096, 4096), (1, 2, 3)).save(big, format="PNG")
    assert len(big.getvalue()) < 200_000 and header_pixels(big.getvalue()) == 4096 * 4096


def test_malloc_tuning_and_trim_run_on_this_libc() -> None:
    assert tune_malloc() is True  # glibc on Linux: the mmap threshold is fixed
    trim()


def test_a_decode_waits_for_room_then_is_refused_and_everything_is_given_back() -> None:
    async def scenario() -> None:
        budget = PixelBudget(total_pixels=2 * MI, wait_s=0.2, retry_after_s=3)
        async with budget.hold(MI):
            async with budget.hold(MI):
                assert budget.used == 2 * MI
                with pytest.raises(QueueFull) as refused:
                    async with budget.hold(1):
                        pass
                assert refused.value.error_code == "DECODES_BUSY" and refused.value.headers["Retry-After"] == "3"
            assert budget.used == MI

            async def later() -> None:
                async with budget.hold(2 * MI):  # waits until the first hold ends
                    assert budget.used == 2 * MI

            waiter = asyncio.create_task(later())
            await asyncio.sleep(0.05)
            assert not waiter.done() and budget.used == MI
        await asyncio.wait_for(waiter, 5)
        assert budget.used == 0

        with pytest.raises(RuntimeError):
            async with budget.hold(MI):
                raise RuntimeError("decode failed")
        assert budget.used == 0, "given back when the decode fails"
        async with budget.hold(10 * MI):  # one image over the budget still fits alone
            assert budget.used == 10 * MI
        assert budget.used == 0

    asyncio.run(scenario())


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[IngressContext]:
    admission = {"decoded_pixels_in_flight": MI, "decode_wait_s": 0, "upload_bytes_in_flight": 200_000}
    with ingress_context(tmp_path, {"max_active": 50, "retry_after_s": 7}, admission=admission) as context:
        yield context


def _stored(ctx: IngressContext) -> list[Path]:
    return sorted(p for p in Path(ctx.args.storage.root or "").rglob("*") if p.is_file())  # type: ignore[union-attr]


def _held(budget: PixelBudget, pixels: int) -> tuple[asyncio.AbstractEventLoop, object]:
    """Take `pixels` from the budget as another request's decode would, until released."""
    loop = asyncio.new_event_loop()
    hold = budget.hold(pixels)
    loop.run_until_complete(hold.__aenter__())
    return loop, hold


def test_a_route_past_the_pixel_budget_is_503_and_creates_nothing(ctx: IngressContext) -> None:
    client = TestClient(app)
    loop, hold = _held(ctx.pixels, MI)  # another request's 1024 x 1024 image is being decoded
    try:
        body = {"prompt": "a desk"}
        response = client.post("/v1/generate", data=body, files={"image": ("d.png", png(), "image/png")})
        assert response.status_code == 503 and response.json()["error_code"] == "DECODES_BUSY"
        assert response.headers["retry-after"] == "7"
        edit = client.post("/v1/edits", data={"instruction": "make it red"}, files={"image": ("d.png", png())})
        assert edit.status_code == 503 and edit.json()["error_code"] == "DECODES_BUSY"
        assert ctx.tasks.count_active() == 0 and _stored(ctx) == []
    finally:
        loop.run_until_complete(hold.__aexit__(None, None, None))  # type: ignore[attr-defined]
        loop.close()
    assert ctx.pixels.used == 0 and ctx.uploads.used == 0
    ok = client.post("/v1/generate", data={"prompt": "a desk"}, files={"image": ("d.png", png(), "image/png")})
    assert ok.status_code == 202 and ctx.pixels.used == 0


class _Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits += 1
        data = png()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_a_fetched_photo_reserves_the_upload_budget_before_the_fetch(ctx: IngressContext) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/desk.png"
        client = TestClient(app)
        with ctx.uploads.hold() as take:
            take(150_000)  # uploads being received: less room than a fetched photo may need
            response = client.post("/v1/generate", json={"prompt": "a desk", "initial_image_url": url})
            assert response.status_code == 503 and response.json()["error_code"] == "UPLOADS_BUSY"
        assert _Counting.hits == 0, "refused before anything was fetched"
        assert ctx.uploads.used == 0 and ctx.tasks.count_active() == 0
    finally:
        server.shutdown()
        server.server_close()
