"""The web page in a real headless Chromium (Playwright driving Debian's `chromium`; no browser is
downloaded), against the running Serve app: the whole desk flow from a sample, an upload on the
app that never sees a desk, text to image, the live progress display, and a tab per other product
(textures and their cache, an edit on the Editor, a scene through the KLING stub, article images,
and compose, which says so when the server has no compose route).

The page runs under its own Content-Security-Policy here too, so waits use function predicates
(Playwright evaluates a string predicate with eval, which the policy refuses). Screenshots of each
step go to $IMAGEGEN_ARTIFACTS_DIR/web (default test-artifacts/web). Without Chromium the tests
are skipped, unless IMAGEGEN_REQUIRE_CHROMIUM=1 (CI), where that fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.harness import desk_photo
from tests.integration.conftest import ServeApp

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TASK_TIMEOUT_MS = 120_000


def _chromium() -> str | None:
    return os.environ.get("IMAGEGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("IMAGEGEN_ARTIFACTS_DIR", REPO_ROOT / "test-artifacts")) / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        if os.environ.get("IMAGEGEN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("IMAGEGEN_REQUIRE_CHROMIUM=1 but no chromium executable was found")
        pytest.skip("no chromium executable (apt-get install chromium, or set IMAGEGEN_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 1300})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"script errors on the page: {errors}"


def _wait_for_result(page: Any) -> str:
    page.wait_for_selector("#progress[data-final]", state="attached", timeout=TASK_TIMEOUT_MS)
    return str(page.get_attribute("#progress", "data-final"))


def _loaded(page: Any, selector: str) -> None:
    """Every image matching `selector` has loaded and decoded to real pixels."""
    page.wait_for_function(
        """(selector) => {
            const images = [...document.querySelectorAll(selector)];
            return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
        }""",
        arg=selector,
        timeout=30_000,
    )


def test_desk_makeover_from_a_sample(page: Any, serve_app: ServeApp, artifacts: Path) -> None:
    page.goto(f"{serve_app.base_url}/")
    page.wait_for_function("() => document.querySelectorAll('#lora option').length > 1")  # the LoRAs from /info
    assert "Preset" in page.inner_text("#server-info")
    page.click('.sample[data-sample="oak-desk.jpg"]')
    page.wait_for_function("() => document.getElementById('photo-choice').textContent.includes('oak-desk')")
    page.select_option("#lora", index=1)
    page.fill("#steps", "6")
    page.screenshot(path=str(artifacts / "desk-1-form.png"), full_page=True)

    page.click("#submit")
    page.wait_for_selector("#progress", state="visible")
    page.screenshot(path=str(artifacts / "desk-2-progress.png"), full_page=True)
    assert _wait_for_result(page) == "done"
    page.wait_for_selector("#result", state="visible")
    _loaded(page, "#original")
    _loaded(page, "img.generated")
    page.screenshot(path=str(artifacts / "desk-3-result.png"), full_page=True)

    assert page.is_hidden("#skipped") and page.is_hidden("#error")
    assert "Prompt:" in page.inner_text("#prompt-used")
    cards = page.query_selector_all(".offer")
    assert cards, "shopping offers are shown as cards"
    for card in cards:
        assert card.query_selector(".title").inner_text().strip()
        assert card.query_selector(".price").inner_text().endswith("원")
        assert card.query_selector(".mall").inner_text().strip()
        assert card.query_selector("a").get_attribute("href").startswith(("http://", "https://"))
    assert page.query_selector_all(".offer img"), "offers carry product images"


def test_an_upload_that_is_not_a_desk_still_gets_offers(
    page: Any, serve_app: ServeApp, artifacts: Path, tmp_path: Path
) -> None:
    """The /s3 app never sees a desk: the page says so and shows the shopping offers only. Its
    API calls go to /s3/v1/... because every URL is relative to the page."""
    photo = tmp_path / "my-desk.jpg"
    photo.write_bytes(desk_photo(seed=7))
    page.goto(f"{serve_app.s3_url}/")
    page.wait_for_function("() => document.getElementById('server-info').textContent.includes('Preset')")
    page.set_input_files("#photo", str(photo))
    page.wait_for_function("() => document.getElementById('photo-choice').textContent.includes('my-desk.jpg')")
    page.fill("#steps", "4")
    page.click("#submit")
    assert _wait_for_result(page) == "done"
    page.wait_for_selector("#skipped", state="visible")
    assert "does not look like a desk" in page.inner_text("#skipped")
    assert page.query_selector_all("img.generated") == []
    _loaded(page, "#original")
    assert page.query_selector_all(".offer")
    page.screenshot(path=str(artifacts / "upload-not-a-desk.png"), full_page=True)


def test_text_to_image_from_the_other_tab(page: Any, serve_app: ServeApp, artifacts: Path) -> None:
    page.goto(f"{serve_app.base_url}/")
    page.wait_for_function("() => document.querySelectorAll('#lora option').length > 1")
    page.click("#tab-text")
    assert page.is_hidden("#photo-fields")
    page.fill("#prompt", "a walnut desk with a brass lamp")
    page.fill("#steps", "4")
    page.fill("#count", "2")
    page.click("#submit")
    assert _wait_for_result(page) == "done"
    _loaded(page, "img.generated")
    assert len(page.query_selector_all("img.generated")) == 2
    assert page.is_hidden("#original-figure")
    page.screenshot(path=str(artifacts / "text-to-image.png"), full_page=True)


def test_bad_input_is_shown_not_sent(page: Any, serve_app: ServeApp) -> None:
    page.goto(f"{serve_app.base_url}/")
    page.click("#submit")  # the desk tab without a photo
    page.wait_for_selector("#error", state="visible")
    assert "photo" in page.inner_text("#error")
    page.click("#tab-text")
    page.fill("#steps", "100000")  # past the preset's limit: the server's 422 is shown
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('INVALID_INPUT')")


def test_progress_events_render_stage_steps_queue_and_eta(page: Any, serve_app: ServeApp, artifacts: Path) -> None:
    """The live display, fed the events the stream sends (parsed by the page's own SSE reader)."""
    page.goto(f"{serve_app.base_url}/")
    stream = (
        'retry: 1000\n\nid: 1\nevent: progress\ndata: {"task_id":"t","status":"queued","stage":"queued",'
        '"queue_position":2,"eta_s":7.5}\n\n: keepalive\n\nid: 2\nevent: progress\ndata: {"task_id":"t",'
        '"status":"processing","stage":"generating","step":3,"total_steps":20,"eta_s":1.2}\n\nid: 3\nevent: part'
    )
    events, rest = page.evaluate("(text) => window.igs.parseSSE(text)", stream)
    assert [event["id"] for event in events] == ["1", "2"]  # the retry-only block and the comment carry no event
    assert rest == "id: 3\nevent: part"
    progress = [event for event in events if event["event"] == "progress"]
    page.evaluate("(data) => window.igs.renderProgress(JSON.parse(data))", progress[0]["data"])
    assert "2 ahead in the queue" in page.inner_text("#queue-text") and "7.5 s left" in page.inner_text("#queue-text")
    page.evaluate("(data) => window.igs.renderProgress(JSON.parse(data))", progress[1]["data"])
    assert page.inner_text("#stage") == "generating" and page.inner_text("#step-text") == "step 3 of 20"
    assert page.evaluate("() => document.getElementById('steps-bar').value") == 3
    assert page.get_attribute("#progress", "data-stages") == "queued,generating"
    page.screenshot(path=str(artifacts / "progress-display.png"), full_page=True)


def test_docs_render_swagger_ui_from_this_server_under_the_policy(page: Any, serve_app: ServeApp) -> None:
    """/docs in Chromium: Swagger UI draws the document from the server's own files, under the web
    page's policy: nothing requested from another host, no policy violation reported."""
    requested: list[str] = []
    console: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{serve_app.base_url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "imagegen-serve" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".opblock").count() > 5, "the operations are listed"
    assert all(url.startswith(serve_app.base_url) for url in requested), requested
    assert not [line for line in console if "Content Security Policy" in line], console


# -- the other products' tabs --------------------------------------------------------------------------


def _open_tab(page: Any, serve_app: ServeApp, product: str) -> None:
    page.goto(f"{serve_app.base_url}/")
    page.wait_for_function("() => document.getElementById('server-info').textContent.includes('Preset')")
    page.click(f"#tab-{product}")
    assert page.is_visible(f"#panel-{product}") and page.is_hidden("#panel")
    assert page.get_attribute(f"#tab-{product}", "aria-selected") == "true"


def _field(page: Any, result: str, name: str) -> str:
    """The value of one key field (a <dt>/<dd> pair) in a tab's result box."""
    return str(
        page.evaluate(
            """([result, name]) => {
                const term = [...document.querySelectorAll(`#${result} dt`)].find((dt) => dt.textContent === name);
                return term ? term.nextElementSibling.textContent : null;
            }""",
            [result, name],
        )
    )


def _run_tab(page: Any, product: str, fields: dict[str, str], images: int) -> None:
    """Fill the tab's fields, submit, and wait for its task to be done and its images to load."""
    for selector, value in fields.items():
        page.fill(selector, value)
    page.click(f"#{product}-submit")
    assert _wait_for_result(page) == "done"
    assert page.is_hidden("#error")
    _loaded(page, f"#{product}-result img.generated")
    assert len(page.query_selector_all(f"#{product}-result img.generated")) == images


def test_textures_tab_makes_a_texture_then_answers_it_from_the_cache(
    page: Any, serve_app: ServeApp, artifacts: Path
) -> None:
    _open_tab(page, serve_app, "textures")
    texture = {"#texture-product": "sofa", "#texture-material": "linen", "#texture-colour": "sage green"}
    _run_tab(page, "textures", {**texture, "#texture-pattern": "herringbone", "#texture-steps": "2"}, images=1)
    assert "made by local" in page.inner_text("#textures-result figcaption")
    assert "seamless tileable texture" in page.inner_text("#textures-result .prompt")
    assert len(_field(page, "textures-result", "Task")) >= 16, "the task the page followed"
    assert _field(page, "textures-result", "From the cache") == "0 of 1"
    page.screenshot(path=str(artifacts / "textures-2-made.png"), full_page=True)

    page.click("#textures-submit")  # the same parameters: the cache answers at once, no task
    page.wait_for_function(
        "() => document.querySelector('#textures-result figcaption')?.textContent.includes('from the cache')"
    )
    _loaded(page, "#textures-result img.generated")
    assert _field(page, "textures-result", "From the cache") == "1 of 1"
    assert "from the cache" in _field(page, "textures-result", "Task")
    assert _field(page, "textures-result", "Cost") == "$0.0000"
    page.screenshot(path=str(artifacts / "textures-3-cached.png"), full_page=True)


def test_edits_tab_edits_a_sample_on_the_editor(page: Any, serve_app: ServeApp, artifacts: Path) -> None:
    _open_tab(page, serve_app, "edits")
    page.click("#edits-submit")  # no photo yet: said on the page, nothing sent
    page.wait_for_function("() => document.getElementById('error').textContent.includes('Choose a photo')")
    page.click('#edit-samples .sample[data-sample="white-desk.jpg"]')
    page.wait_for_function("() => document.getElementById('edit-photo-choice').textContent.includes('white-desk')")
    page.select_option("#edit-backend", "local")
    _run_tab(page, "edits", {"#edit-instruction": "조명을 따뜻하게", "#edit-steps": "2"}, images=1)
    _loaded(page, "#edits-result img.original")
    assert _field(page, "edits-result", "Instruction") == "조명을 따뜻하게"
    assert "warm" in _field(page, "edits-result", "Edit prompt")
    assert _field(page, "edits-result", "Backend").startswith("local")
    width, height = map(int, _field(page, "edits-result", "Size").split("×"))
    assert width > height, "the sample's landscape aspect is kept"
    page.screenshot(path=str(artifacts / "edits.png"), full_page=True)


def test_scenes_tab_draws_the_seeds_scene_through_kling(page: Any, serve_app: ServeApp, artifacts: Path) -> None:
    kling = serve_app.providers["kling"]
    before = len(kling.requests)
    _open_tab(page, serve_app, "scenes")
    _run_tab(page, "scenes", {"#scene-script-id": "8801", "#scene-steps": "2"}, images=1)
    assert _field(page, "scenes-result", "Backend") == "kling"
    assert _field(page, "scenes-result", "Image prompt").strip()
    assert _field(page, "scenes-result", "Cost").startswith("$")
    assert len(kling.requests) > before, "the scene went to the KLING stub"
    page.screenshot(path=str(artifacts / "scenes.png"), full_page=True)

    page.fill("#scene-dialogue", "안녕")
    page.fill("#scene-character", "")  # a line without its speaker: said on the page, nothing sent
    page.click("#scenes-submit")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('character')")


def test_articles_tab_illustrates_each_placeholder_in_order(page: Any, serve_app: ServeApp, artifacts: Path) -> None:
    _open_tab(page, serve_app, "articles")
    alts = "[이미지 설명: 미래적인 AI 로봇]\n\nA sunny reading room"  # a blank line is no placeholder
    _run_tab(page, "articles", {"#article-alts": alts, "#article-steps": "2"}, images=2)
    captions = [
        text.split(" · ")[:2]
        for text in page.eval_on_selector_all(
            "#articles-result figcaption", "(nodes) => nodes.map((node) => node.textContent)"
        )
    ]
    assert captions == [["#0", "[이미지 설명: 미래적인 AI 로봇]"], ["#1", "A sunny reading room"]]
    assert _field(page, "articles-result", "Placeholders without an image") == "0"
    page.screenshot(path=str(artifacts / "articles.png"), full_page=True)


def test_the_apis_error_code_is_shown_on_a_products_tab(page: Any, serve_app: ServeApp) -> None:
    _open_tab(page, serve_app, "articles")
    page.fill("#article-steps", "100000")  # past the preset's limit: the server's 422
    page.click("#articles-submit")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('INVALID_INPUT')")
    assert page.is_hidden("#progress") and page.is_hidden("#articles-result")
    page.click("#tab-textures")  # the error belongs to the tab it came from
    assert page.is_hidden("#error")


def test_compose_tab_says_when_the_server_has_no_compose_route(
    page: Any, serve_app: ServeApp, artifacts: Path, tmp_path: Path
) -> None:
    person, garment = tmp_path / "person.jpg", tmp_path / "garment.jpg"
    person.write_bytes(desk_photo(seed=3))
    garment.write_bytes(desk_photo(seed=4))
    with serve_app.client() as client:
        route_exists = client.post("/api/compose-dress").status_code != 404
    _open_tab(page, serve_app, "compose")
    page.click("#compose-submit")  # no photos yet: said on the page, nothing sent
    page.wait_for_function("() => document.getElementById('error').textContent.includes('photo of the person')")
    page.set_input_files("#compose-person", str(person))
    page.set_input_files("#compose-garment", str(garment))
    page.fill("#compose-prompt", "keep the pose")
    page.click("#compose-submit")
    if not route_exists:
        page.wait_for_function("() => document.getElementById('error').textContent.includes('not available')")
        assert "POST /api/compose-dress answered 404" in page.inner_text("#error")
        assert page.is_hidden("#progress") and page.is_hidden("#compose-result")
    else:  # the route has landed: the page shows its picture, or the API's own error
        page.wait_for_function(
            """() => document.getElementById('progress').dataset.final
                || (document.getElementById('error').textContent && document.getElementById('progress').hidden)""",
            timeout=TASK_TIMEOUT_MS,
        )
        if page.get_attribute("#progress", "data-final") == "done":
            _loaded(page, "#compose-result img.generated")
        else:
            assert "not available" not in page.inner_text("#error") and ":" in page.inner_text("#error")
    page.screenshot(path=str(artifacts / "compose.png"), full_page=True)
