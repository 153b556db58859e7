"""Screenshots of every tab of the app for docs/screenshots, with the bundled default checkpoint.

    python scripts/screenshots.py [--out docs/screenshots] [--model checkpoints/default]

Inspect is shown for the clean example photo and for the same photo with its right half damaged
(blur + noise, as `python -m iqa localise` does); Batch after assessing all examples and one unreadable
file; Train and Model as a newcomer first sees them, and Train after its "try it" run. Needs Chromium
(`make browser`) and Playwright (installed with the project). Pages are 1400 px wide; the PNGs are
reduced to keep the repository small.
"""
from __future__ import annotations

import argparse
import re
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iqa.localise import damage  # noqa: E402
from ui.app import build_app, launch_kwargs  # noqa: E402
from ui.inspect_tab import example_images  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 1600}
TIMEOUT_MS = 180_000
TRY_IT_TIMEOUT_MS = 300_000
SAVED_WIDTH = 1000  # px of the committed PNGs
SETTLE_MS = 1500
PALETTE_COLOURS = 256  # palette PNGs: a third of the size of RGB ones


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as im:
        small = im.convert("RGB").resize((SAVED_WIDTH, round(im.height * SAVED_WIDTH / im.width)), Image.LANCZOS)
    small.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def assess(page, image: Path, shot: Path) -> None:
    page.locator("#iqa-input input[type=file]").set_input_files(str(image))
    page.locator("#iqa-input img").first.wait_for()
    page.locator("#iqa-assess").click()
    page.locator("#iqa-score-value").wait_for(timeout=TIMEOUT_MS)
    page.locator(f"#iqa-report a[download='{image.stem}_report.png']").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(SETTLE_MS)  # the last views finish drawing
    save(page, shot)


def main() -> int:
    from playwright.sync_api import sync_playwright

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    p.add_argument("--model", default=None, help="checkpoint or preset (default: the bundled default)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="iqa-shots-"))
    clean = Path(example_images()[0])
    half = tmp / f"{clean.stem}_right_half_damaged.png"
    Image.fromarray(damage(np.asarray(Image.open(clean).convert("RGB")), "blur+noise", "right")).save(half)

    demo = build_app(args.model, runs_dir=tmp / "runs")
    demo.launch(**launch_kwargs(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, ssr_mode=False))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(demo.local_url)
            page.locator("#iqa-assess").wait_for()
            save(page, args.out / "inspect-empty.png")
            assess(page, clean, args.out / "inspect-clean.png")
            assess(page, half, args.out / "inspect-half-damaged.png")
            page.get_by_role("tab", name="Batch").click()
            bad = tmp / "not_an_image.png"  # how a failed file reads in the table
            bad.write_text("text")
            page.locator("#iqa-batch-files input[type=file]").set_input_files([*example_images(), str(bad)])
            page.get_by_role("button", name="Assess all").click()
            page.get_by_text("image(s) assessed").wait_for(timeout=TIMEOUT_MS)
            save(page, args.out / "batch.png")
            page.get_by_role("tab", name="Train").click()
            page.get_by_text("Dataset formats").click()
            page.locator("#iqa-formats").wait_for()
            save(page, args.out / "train.png")
            page.locator("#iqa-try-it").click()
            page.locator("#iqa-train-status").get_by_text(re.compile("Finished|Failed|Stopped")).wait_for(
                timeout=TRY_IT_TIMEOUT_MS)
            page.get_by_text("Dataset formats").click()
            save(page, args.out / "train-try-it.png")
            page.get_by_role("tab", name="Model").click()
            page.locator("#iqa-model-card").wait_for()
            save(page, args.out / "model.png")
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
