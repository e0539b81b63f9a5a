"""The web page's files as the ingress serves them (the browser tests are in tests/integration/test_page.py)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.api.page import PAGE_DIR, shipped_files
from serve_app.ingress import app
from tests.support.ingress import ingress_context


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with ingress_context(tmp_path, {}):
        yield TestClient(app)


def test_the_page_is_served_at_the_root_with_a_strict_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert 'src="ui/app.js"' in response.text and 'href="ui/style.css"' in response.text


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css"), ("/ui/samples/oak-desk.jpg", "image/jpeg")],
)
def test_its_files_have_their_media_types(client: TestClient, path: str, media_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path", ["/ui/nope.js", "/ui/../api/page.py", "/ui/%2e%2e/api/page.py", "/ui/index.html", "/ui/samples/"]
)
def test_nothing_else_is_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_the_samples_are_small_desk_photos() -> None:
    samples = sorted((PAGE_DIR / "samples").glob("*.jpg"))
    assert len(samples) >= 2
    for sample in samples:
        assert sample.stat().st_size < 60_000
        assert Image.open(io.BytesIO(sample.read_bytes())).format == "JPEG"
    html = (PAGE_DIR / "index.html").read_text()
    assert {f"samples/{sample.name}" for sample in samples} <= set(re.findall(r'ui/(samples/[\w.-]+)"', html))


def test_nothing_is_fetched_from_another_site() -> None:
    """No build step and no network at run time: no shipped text file names another site."""
    for name, path in shipped_files().items():
        if path.suffix in (".js", ".css", ".html"):
            text = path.read_text()
            assert "http://" not in text and "https://" not in text, name
            assert not re.search(r"""(src|href|url\()\s*=?\s*["']?//""", text), f"{name}: protocol-relative URL"
    html = (PAGE_DIR / "index.html").read_text()
    assert "http" not in html and not re.search(r"""(src|href)=["']//""", html)


def test_every_element_the_script_uses_is_on_the_page() -> None:
    script = (PAGE_DIR / "app.js").read_text()
    html = (PAGE_DIR / "index.html").read_text()
    used = set(re.findall(r'\$\("([\w-]+)"\)', script))
    defined = set(re.findall(r'id="([\w-]+)"', html))
    assert used and used <= defined, used - defined
