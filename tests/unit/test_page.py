"""The web page's files as the ingress serves them (the browser tests are in tests/integration/test_page.py)."""

from __future__ import annotations

import fnmatch
import io
import posixpath
import re
import tomllib
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
    assert '<script type="module" src="ui/app.js">' in response.text and 'href="ui/style.css"' in response.text


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/ui/app.js", "text/javascript"),
        ("/ui/tasks.js", "text/javascript"),
        ("/ui/tabs/textures.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/samples/oak-desk.jpg", "image/jpeg"),
    ],
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


def _scripts() -> dict[str, str]:
    """Every shipped script by its path under /ui/."""
    return {name: path.read_text() for name, path in shipped_files().items() if path.suffix == ".js"}


def test_every_module_a_script_imports_is_served_from_this_server() -> None:
    """app.js is an ES module (a module script is allowed by `script-src 'self'` like any other):
    each `import ... from "./x.js"` resolves, relative to the importing file, to a shipped file."""
    scripts = _scripts()
    reached, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        reached.add(name)
        for target in re.findall(r'^import .* from "([^"]+)";$', scripts[name], flags=re.MULTILINE):
            assert target.startswith("./") or target.startswith("../"), f"{name}: {target} is not relative"
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            assert resolved in scripts, f"{name} imports {target}, which is not shipped"
            if resolved not in reached:
                todo.append(resolved)
    assert reached == set(scripts), f"scripts no page loads: {set(scripts) - reached}"


def test_the_page_has_no_inline_script_or_style_the_policy_would_block() -> None:
    html = (PAGE_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+=", html), "no inline event handler"
    assert "<style" not in html and " style=" not in html
    for name, script in _scripts().items():
        assert "eval(" not in script and "new Function" not in script and "innerHTML" not in script, name
        assert ".style." not in script and 'setAttribute("style' not in script, name


def test_every_element_the_scripts_use_is_on_the_page_or_built_by_them() -> None:
    """The desk form is in the page; the other tabs' forms are built from their field specs
    (`["id", "label", value]`, settings("p"), photoFields("p")) into their panels."""
    scripts = "\n".join(_scripts().values())
    html = (PAGE_DIR / "index.html").read_text()
    used = set(re.findall(r'\$\("([\w-]+)"\)', scripts))
    used |= set(re.findall(r'photoPicker\("([\w-]+)", "([\w-]+)", "([\w-]+)"\)', scripts)[0])
    built = set(re.findall(r'\["([\w-]+)", "', scripts))  # field specs (and <select> options)
    for prefix in re.findall(r'settings\("([\w-]+)"', scripts):
        built |= {f"{prefix}-steps", f"{prefix}-size"}
    for prefix in re.findall(r'photoFields\("([\w-]+)"\)', scripts):
        built |= {f"{prefix}-photo", f"{prefix}-samples", f"{prefix}-photo-choice"}
    products = re.findall(r'makeTab\("([\w-]+)"', scripts)
    assert len(products) == 5
    for product in products:
        built |= {f"{product}-form", f"{product}-result", f"{product}-submit"}
        assert f'id="panel-{product}"' in html, product
    defined = set(re.findall(r'id="([\w-]+)"', html))
    assert used and used <= defined | built, used - defined - built
    assert not defined & built, "an id the page has is built again"


def test_a_tab_per_product_each_with_its_panel_and_form() -> None:
    html = (PAGE_DIR / "index.html").read_text()
    tab = r'role="tab" id="tab-[\w-]+" aria-selected="\w+" aria-controls="([\w-]+)" data-product="(\w+)"'
    tabs = re.findall(tab, html)
    assert {product for _, product in tabs} == {"desk", "text", "textures", "edits", "scenes", "articles", "compose"}
    for panel, _ in tabs:
        assert re.search(rf'<section id="{panel}" role="tabpanel"', html), panel
    scripts = "\n".join(_scripts().values())
    paths = {
        "v1/generate",
        "v1/textures",
        "v1/edits",
        "api/v1/images/generations/",
        "v1/articles/images",
        "api/compose-dress",
    }
    for path in paths:
        assert f'"{path}' in scripts, path


# -- /docs: Swagger UI from this server ------------------------------------------------------------


def test_docs_load_swagger_ui_from_this_server_under_the_pages_policy(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == client.get("/").headers["content-security-policy"]
    html = response.text
    assert "http:" not in html and "https:" not in html, "no other host"
    assert not re.search(r"""(src|href)=["']?//""", html), "no protocol-relative URL"
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "no inline script: the policy would block it"
    assert "<style" not in html and " style=" not in html
    refs = set(re.findall(r'(?:src|href)="([^"]+)"', html))
    assert {f"/static/swagger/{name}" for name in ("swagger-ui-bundle.js", "swagger-ui.css", "docs-init.js")} <= refs
    assert 'data-openapi-url="/openapi.json"' in html
    for ref in refs:
        served = client.get(ref)
        assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff", ref
    init = client.get("/static/swagger/docs-init.js")
    assert init.headers["content-type"].startswith("text/javascript") and "http" not in init.text


@pytest.mark.parametrize("path", ["/static/swagger/LICENSE", "/static/swagger/../api/docs.py", "/static/swagger/"])
def test_only_the_docs_files_are_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_swagger_ui_ships_as_package_data_with_its_license() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["serve_app"]
    folder = PAGE_DIR.parent / "swagger_ui"
    for path in folder.iterdir():
        name = str(path.relative_to(PAGE_DIR.parent))
        assert any(fnmatch.fnmatch(name, pattern) for pattern in shipped), f"{name} is not package data"
    assert "Apache License" in (folder / "LICENSE").read_text()
