"""`synth --contact-sheet`: one image showing a reference crop under every distortion kind at every level,
each tile captioned with its level, the kind's parameter and its pseudo-MOS."""
from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iqa.data.distortions import KINDS, LEVELS
from iqa.data.pseudo_mos import pseudo_mos
from iqa.data.sources import find_sources
from iqa.data.synth import (DEFAULT_SEED, SynthConfig, SynthError, atomic_write_bytes, crop_rng, kind_rng,
                             random_crops)
from iqa.images import ImageError, load_image
from iqa.progress import progress_bar

# Layout (pixels).
SHEET_TILE = (160, 120)
SHEET_LABEL_WIDTH = 180
SHEET_PAD = 4
SHEET_FONT_PX = 13
SHEET_TEXT_ROW = 18
SHEET_MAX_COLOURS = 256  # the sheet is stored as a palette PNG to stay small


def sheet_reference(pristine: Path | None, config: SynthConfig) -> tuple[np.ndarray, str]:
    """The first crop of the first readable photo in `pristine`, or of scikit-image's astronaut."""
    if pristine is None:
        from skimage import data

        image, name = data.astronaut(), "astronaut"
    else:
        for source in find_sources(pristine):
            try:
                image, name = load_image(source.path).array, source.name
                break
            except ImageError as e:
                print(f"contact sheet: skipped {source.path}: {e}", file=sys.stderr)
        else:
            raise SynthError(f"--pristine {pristine}: no readable image for the contact sheet")
    crop = random_crops(image, config.size, 1, crop_rng(config.seed, name))[0]
    return crop, f"{name}_c0"


def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def contact_sheet(reference: np.ndarray, kinds: Sequence[str] = tuple(KINDS), seed: int = DEFAULT_SEED,
                  ref_name: str = "sheet", tile: tuple[int, int] = SHEET_TILE,
                  progress: bool = True) -> np.ndarray:
    """One RGB image (H, W, 3) uint8: the reference on top, then a labelled row per kind with its 5
    levels, each tile captioned with its level and pseudo-MOS. Tiles are `reference` downscaled."""
    tw, th = tile
    font = _font(SHEET_FONT_PX)
    cell_h = th + SHEET_TEXT_ROW
    width = SHEET_LABEL_WIDTH + LEVELS * (tw + SHEET_PAD) + SHEET_PAD
    height = (len(kinds) + 1) * (cell_h + SHEET_PAD) + SHEET_PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)

    def thumb(img: np.ndarray) -> Image.Image:
        return Image.fromarray(cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA))

    rh, rw = reference.shape[:2]
    sheet.paste(thumb(reference), (SHEET_LABEL_WIDTH + SHEET_PAD, SHEET_PAD))
    draw.text((SHEET_PAD, SHEET_PAD), f"reference\n{rw}x{rh} crop,\ntiles shown at\n{tw}x{th}", fill="black",
              font=font)
    draw.text((SHEET_LABEL_WIDTH + tw + 3 * SHEET_PAD, SHEET_PAD),
              "rows: distortion kind (group); columns: level 1..5\ncaption: level, pseudo-MOS (FR ensemble)",
              fill="black", font=font)
    for row, kind in enumerate(progress_bar(kinds, desc="contact sheet", unit="kind", disable=not progress), start=1):
        d = KINDS[kind]
        images = [d(reference, lv, kind_rng(seed, ref_name, kind)) for lv in range(1, LEVELS + 1)]
        scores = pseudo_mos(images, reference)
        y = SHEET_PAD + row * (cell_h + SHEET_PAD)
        draw.text((SHEET_PAD, y + th // 3), f"{d.kadid_id:02d} {kind}\n({d.group})", fill="black", font=font)
        for col, (img, s) in enumerate(zip(images, scores)):
            x = SHEET_LABEL_WIDTH + SHEET_PAD + col * (tw + SHEET_PAD)
            sheet.paste(thumb(img), (x, y))
            draw.text((x + 2, y + th + 2), f"L{col + 1}  {d.levels[col]:g}  mos {s.mos:.2f}", fill="black", font=font)
    return np.asarray(sheet, dtype=np.uint8).copy()


def save_contact_sheet(path: Path, sheet: np.ndarray) -> None:
    """Palette PNG (median-cut, dithered): a ~1 MB file instead of several."""
    pal = Image.fromarray(sheet).quantize(colors=SHEET_MAX_COLOURS, method=Image.Quantize.MEDIANCUT,
                                          dither=Image.Dither.FLOYDSTEINBERG)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())
