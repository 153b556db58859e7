"""A real headless Chromium drives the app: upload, Assess, screenshot; a damaged file shows a clear error.

Needs Debian's `chromium` (`make install` adds it when run as root) and the `playwright` package; Playwright's
own browser download is not used.
"""
from __future__ import annotations

import re
import time
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import running_app
from ui.inspect_tab import example_images

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 1400}
ASSESS_TIMEOUT_MS = 90_000
SETTLE_MS = 1000  # for views that are still being drawn

pytestmark = pytest.mark.filterwarnings("ignore:.*copy keyword", "ignore:.*no_silent_downcasting")  # gradio + pandas 3
sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: run `make browser` as root or `apt-get install chromium`",
                allow_module_level=True)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("runs")) as u:
        yield u


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, url):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.locator("#iqa-assess").wait_for()
    yield page
    page.close()


def fast_settings(page) -> None:
    """One crop and two sampling steps keep the tiny model quick on a shared CPU."""
    page.get_by_text("Sampling settings").click()
    for label, value in (("Crops", "1"), ("Sampling steps", "2")):
        box = page.get_by_label(f"number input for {label}")
        box.fill(value)
        box.press("Enter")


def upload(page, path: str) -> None:
    page.locator("#iqa-input input[type=file]").set_input_files(path)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VIEWS = ("#iqa-pair", "#iqa-gallery", "#iqa-overlay")


def assert_views_are_png(page) -> None:
    """Every image the result views show is served as lossless PNG (no recompression by the viewer)."""
    srcs = []
    for view in VIEWS:
        page.locator(f"{view} img").first.wait_for(timeout=ASSESS_TIMEOUT_MS)
        srcs += [s for s in page.locator(f"{view} img").evaluate_all("els => els.map(e => e.src)") if s]
    assert len(srcs) >= len(VIEWS)
    for src in set(srcs):
        body = page.request.get(src).body()
        assert body[:8] == PNG_MAGIC, f"{src}: not a PNG"


def assert_texts_fit(page, selector: str, at_least: int = 1) -> None:
    """No text of `selector` is cut off: each text element is as wide as its content (and there are
    `at_least` of them, so that the check looked at something)."""
    page.locator(selector).first.wait_for()
    texts = page.locator(selector).evaluate_all("""roots => roots.flatMap(r => [r, ...r.querySelectorAll('*')])
        .filter(e => e.children.length === 0 && e.textContent.trim() && e.clientWidth > 0)
        .map(e => [e.textContent.trim(), e.scrollWidth > e.clientWidth + 1])""")
    assert len(texts) >= at_least, f"{selector}: {texts}"
    cut = [t for t, over in texts if over]
    assert not cut, f"text cut off in {selector}: {cut}"


def assert_one_error_mark(page) -> None:
    """A failed run marks one output (the verdict) and shows one toast, not an "Error" badge on every view."""
    page.wait_for_timeout(SETTLE_MS)
    # Seen on screen: laid out and larger than a pixel (Gradio's screen-reader-only status line, a 1 px
    # "sr-only" box that repeats "Error" to assistive technology, is not a visible mark).
    marks = page.get_by_text("Error", exact=True).evaluate_all("""els => els.filter(e => {
        const r = e.getBoundingClientRect(); return e.offsetParent && r.width > 1 && r.height > 1; }).length""")
    assert marks <= 2, f"{marks} error marks for one error (toast + verdict expected)"


def test_upload_assess_and_screenshot(page, tmp_path):
    fast_settings(page)
    upload(page, example_images()[0])
    page.locator("#iqa-input img").first.wait_for()
    page.locator("#iqa-assess").click()
    score = page.locator("#iqa-score-value")
    score.wait_for(timeout=ASSESS_TIMEOUT_MS)
    assert re.fullmatch(r"-?\d+\.\d{3}", score.inner_text().strip())
    verdict = page.locator("#iqa-verdict").inner_text()
    assert "higher = better" in verdict and "Untrained" in verdict
    overlay = page.locator("#iqa-overlay img").first
    overlay.wait_for()
    overlay.click()  # the centre of the map: that patch's numbers appear
    page.locator("#iqa-patch").get_by_text("Patch row").wait_for(timeout=ASSESS_TIMEOUT_MS)
    assert "score × weight" in page.locator("#iqa-patch").inner_text()
    page.locator("#iqa-chart .js-plotly-plot").first.wait_for(timeout=ASSESS_TIMEOUT_MS)
    page.locator("#iqa-report a[download$='_report.png']").wait_for(timeout=ASSESS_TIMEOUT_MS)
    assert "The restoration changed" in page.locator("#iqa-restoration").inner_text()
    assert_views_are_png(page)
    assert_texts_fit(page, "#iqa-gallery", at_least=4)  # its label and the captions of y0, y1, y2, |x − y0|
    shot = tmp_path / "inspect.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.width == VIEWPORT["width"] and im.height >= VIEWPORT["height"] // 2
        colours = len(np.unique(np.asarray(im.convert("RGB").resize((128, 128))).reshape(-1, 3), axis=0))
    assert shot.stat().st_size > 50_000 and colours > 500  # images and charts were drawn, not a blank page

    bad = tmp_path / "broken.png"  # a failed run after a good one: the last result stays
    bad.write_text("this is text, not a PNG")
    upload(page, str(bad))
    page.locator("#iqa-assess").click()
    page.get_by_text(re.compile(r"broken\.png: not a readable image")).first.wait_for(timeout=ASSESS_TIMEOUT_MS)
    assert_one_error_mark(page)
    page.locator("#iqa-chart .js-plotly-plot").first.wait_for()
    assert page.locator("#iqa-overlay img").count()


def test_damaged_image_shows_friendly_error(page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("this is text, not a PNG")
    upload(page, str(bad))
    page.locator("#iqa-assess").click()
    message = page.get_by_text(re.compile(r"broken\.png: not a readable image"))
    message.first.wait_for(timeout=ASSESS_TIMEOUT_MS)
    assert "Use PNG, JPEG" in message.first.inner_text()
    box = message.first.bounding_box()  # on screen, not just in the DOM
    assert box and 0 <= box["y"] < VIEWPORT["height"] and box["width"] > 0
    page.screenshot(path=str(tmp_path / "error.png"))


TRY_IT_LIMIT_S = 120  # the promise: the Train tab's demo run ends within two minutes on a CPU


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_empty_inspect_and_a_validation_error_shown_once(page, tmp_path):
    pair, gallery = (page.locator(s).bounding_box() for s in ("#iqa-pair", "#iqa-gallery"))
    assert abs(pair["height"] - gallery["height"]) <= 0.25 * gallery["height"], (pair, gallery)
    page.locator("#iqa-assess").click()  # no image
    page.get_by_text("Add an image").first.wait_for(timeout=ASSESS_TIMEOUT_MS)
    assert_one_error_mark(page)
    page.screenshot(path=str(tmp_path / "validation.png"), full_page=True)


def assert_one_line(page, selector: str, at_least: int = 1) -> None:
    """Each text inside `selector` sits on one line (no header broken mid-word, as "secon ds")."""
    page.locator(selector).first.wait_for()
    lines = page.locator(selector).evaluate_all("""roots => roots.flatMap(r => [r, ...r.querySelectorAll('*')])
        .filter(e => e.children.length === 0 && e.textContent.trim()).map(e => {
        const r = document.createRange(); r.selectNodeContents(e);
        const tops = new Set([...r.getClientRects()].filter(b => b.width > 0).map(b => Math.round(b.top)));
        return [e.textContent.trim(), tops.size]; })""")
    assert len(lines) >= at_least, f"{selector}: {lines}"
    broken = [t for t, n in lines if n > 1]
    assert not broken, f"text on more than one line in {selector}: {broken}"


def check_batch(page, bad: Path) -> None:
    fast_settings(page)
    open_tab(page, "Batch")
    page.locator("#iqa-batch-files input[type=file]").set_input_files([*example_images(), str(bad)])
    page.get_by_role("button", name="Assess all").click()
    page.get_by_text(re.compile(r"image\(s\) assessed")).wait_for(timeout=4 * ASSESS_TIMEOUT_MS)
    table = page.locator("#iqa-batch-table")
    assert "use the menu in a column's header" in page.get_by_text("To sort").first.inner_text()
    assert_one_line(page, "#iqa-batch-table th", at_least=7)  # headers
    assert_one_line(page, "#iqa-batch-table [role=gridcell]:not(:first-child):not(:last-child)",
                    at_least=20)  # numbers
    cells = table.locator("[role=gridcell]").evaluate_all("els => els.map(e => e.textContent.trim())")
    scores = [c for c in cells if re.fullmatch(r"-?\d+\.\d+", c)]
    assert scores and all(re.fullmatch(r"-?\d+\.\d{2}|-?\d+\.\d{4}", c) for c in scores), scores  # fixed decimals
    error = next(c for c in cells if c.startswith(f"{bad.name}:"))
    assert "not a readable image" in error and "Use PNG, JPEG" in error
    assert_texts_fit(page, "#iqa-batch-table [role=gridcell]:last-child")  # wrapped, not cut off
    page.screenshot(path=str(bad.parent / "batch.png"), full_page=True)


def check_train(page, shots: Path) -> None:
    open_tab(page, "Train")
    page.locator("#iqa-train-curves").get_by_text("no epochs yet").wait_for()
    page.get_by_text("Dataset formats").click()
    page.locator("#iqa-formats").get_by_text("meta.csv").first.wait_for()
    start = time.monotonic()
    page.locator("#iqa-try-it").click()
    page.locator("#iqa-train-status").get_by_text(re.compile("Finished|Failed|Stopped")).wait_for(
        timeout=2 * TRY_IT_LIMIT_S * 1000)
    took = time.monotonic() - start
    print(f"try it: {took:.0f} s")
    page.screenshot(path=str(shots / "train.png"), full_page=True)
    assert "Finished" in page.locator("#iqa-train-status").inner_text()
    assert took <= TRY_IT_LIMIT_S, f"the try-it run took {took:.0f} s"
    page.locator("#iqa-train-curves .js-plotly-plot").first.wait_for()
    assert not page.locator("#iqa-train-curves").get_by_text("no epochs yet").count()
    log = page.locator("#iqa-train-log textarea").input_value().strip().splitlines()
    assert log and re.search("best|saved", log[-1], re.IGNORECASE), log[-3:]  # the latest lines, not the first


def test_batch_model_and_train_tabs(page, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("text")
    check_batch(page, bad)
    open_tab(page, "Model")
    page.locator("#iqa-model-card").get_by_text("What it is").wait_for()
    page.get_by_text("All card fields").click()  # folded away: the long every-field table
    assert_texts_fit(page, "#iqa-model-card td, #iqa-model-fields td", at_least=6)
    page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
    check_train(page, tmp_path)
