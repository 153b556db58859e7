"""Files the app offers for download: per-image reports (JSON + PNG panel) and batch tables (CSV + JSON).

Files go to fresh folders under one temporary directory; folders older than `OUTPUT_TTL_S` are pruned
whenever a new one is made, so a long-running server does not fill its disk.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqa.results import Assessment, PatchMaps
from ui import render

OUTPUT_ROOT = Path(tempfile.gettempdir()) / "iqa-studio"
OUTPUT_TTL_S = 2 * 3600


def fresh_dir(prefix: str) -> Path:
    """A new folder for one download; prunes expired ones."""
    OUTPUT_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in OUTPUT_ROOT.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > OUTPUT_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass  # another worker removed it first
    return Path(tempfile.mkdtemp(prefix=prefix, dir=OUTPUT_ROOT))


def _grid(a: np.ndarray) -> list[list[float | None]]:
    """(gh, gw) array -> nested lists, NaN -> None (valid JSON)."""
    return [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in a]


def maps_json(maps: PatchMaps | None) -> dict[str, Any] | None:
    """A branch's maps, JSON-ready (uncovered cells null); a non-spatial branch says so and has no map."""
    if maps is None:
        return None
    if not maps.spatial:
        return {"spatial": False, "note": "per-crop scores only (crop_s2); no patch map"}
    return {"spatial": True, "cell_boxes_xyxy": maps.boxes.tolist(), "score": _grid(maps.score),
            "weight": _grid(maps.weight), "product": _grid(maps.product), "coverage": maps.coverage,
            "weight_fixed": maps.weight_fixed}


def safe_stem(name: str) -> str:
    stem = Path(name or "image").stem or "image"
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:80]


def assessment_record(a: Assessment, model: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Every number of one assessment, JSON-ready."""
    return {**a.summary(), "band": render.quality_band(a.score), "scale": render.SCORE_SCALE_TEXT,
            "model": model, "settings": settings, "patch_maps": {"vcg": maps_json(a.vcg), "vda": maps_json(a.vda)}}


def write_report(a: Assessment, model: dict[str, Any], settings: dict[str, Any],
                 weights: tuple[float, float]) -> list[Path]:
    """[report.json, report.png] for one assessment."""
    out = fresh_dir("report-")
    stem = safe_stem(a.source)
    js = out / f"{stem}_report.json"
    js.write_text(json.dumps(assessment_record(a, model, settings), indent=2))
    fig = render.report_panel(a, a.source or stem, weights)
    png = out / f"{stem}_report.png"
    fig.savefig(png, dpi=render.PANEL_DPI)
    return [js, png]


@dataclass
class BatchRow:
    """One line of the Batch table; `error` is set (and numbers None) when the file could not be assessed."""

    file: str
    score: float | None = None
    s1: float | None = None
    s2: float | None = None
    seconds: float | None = None
    band: str = ""
    error: str = ""


BATCH_COLUMNS = ("file", "score", "S1", "S2", "seconds", "band", "error")


def batch_table(rows: list[BatchRow]) -> list[list[Any]]:
    def r(v: float | None, nd: int) -> float | None:
        return None if v is None else round(v, nd)

    return [[x.file, r(x.score, 4), r(x.s1, 4), r(x.s2, 4), r(x.seconds, 2), x.band, x.error] for x in rows]


def write_batch(rows: list[BatchRow], details: list[dict[str, Any] | None], model: dict[str, Any],
                settings: dict[str, Any]) -> list[Path]:
    """[results.csv, results.json]; the JSON also holds each image's full summary."""
    out = fresh_dir("batch-")
    csv_path = out / "iqa_batch.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(BATCH_COLUMNS)
        w.writerows(batch_table(rows))
    js = out / "iqa_batch.json"
    js.write_text(json.dumps({"model": model, "settings": settings, "scale": render.SCORE_SCALE_TEXT,
                              "results": [{**asdict(r), "details": d} for r, d in zip(rows, details)]}, indent=2))
    return [csv_path, js]
