"""Batch tab: many files -> sortable table, score histogram, CSV and JSON downloads.

A file that cannot be read gets a row with its error and the rest continue, as `Assessor.assess_batch` does.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from iqa.images import ImageError
from ui import render, report
from ui.errors import friendly, user_error
from ui.inspect_tab import MODEL_CONCURRENCY, MODEL_QUEUE
from ui.settings import RunSettings, SettingsControls
from ui.state import AppState

log = logging.getLogger(__name__)

MAX_BATCH_FILES = 500  # per call; more is a job for `python -m iqa` on the command line

Progress = Callable[[float, str], None]


TABLE_FORMAT = {"score": "{:.4f}", "S1": "{:.4f}", "S2": "{:.4f}", "seconds": "{:.2f}"}  # fixed decimals
COLUMN_WIDTHS = ["20%", "9%", "9%", "9%", "9%", "10%", "34%"]  # numbers and headers on one line; names, errors wrap


@dataclass
class BatchResult:
    rows: list[report.BatchRow]
    details: list[dict[str, Any] | None]  # full summary per row (None for errors)
    histogram: go.Figure
    files: list[Path]  # [csv, json]


def assess_files(app: AppState, files: list[str] | None, settings: RunSettings,
                 progress: Progress | None = None) -> BatchResult:
    """Assess each file; unreadable ones become error rows."""
    report_progress = progress or (lambda f, d: None)
    paths = [str(f) for f in files or []]
    if not paths:
        raise user_error("Add one or more image files first.")
    if len(paths) > MAX_BATCH_FILES:
        raise user_error(f"{len(paths)} files is more than {MAX_BATCH_FILES} per batch. Split them, or use the "
                       "command line for large folders.")
    try:
        info = app.info(settings.checkpoint)
        report_progress(0.0, "loading model")
        assessor = app.assessor(settings.checkpoint, settings.device)
    except Exception as e:
        raise friendly(e) from None
    rows, details = [], []
    n = len(paths)
    for i, (path, name) in enumerate(zip(paths, unique_names(paths))):

        def step(f: float, d: str, i=i, name=name) -> None:
            report_progress((i + f) / n, f"{name} ({i + 1}/{n}): {d}")

        try:
            a = assessor.assess(path, crops=settings.crops, steps=settings.steps, seed=settings.seed,
                                progress=step, name=name)
        except ImageError as e:
            rows.append(report.BatchRow(name, error=str(e)))
            details.append(None)
            continue
        except ValueError as e:  # bad settings (e.g. too few steps) fail every file alike
            raise friendly(e) from None
        rows.append(report.BatchRow(name, a.score, a.s1, a.s2, a.timings.get("total"), render.quality_band(a.score)))
        details.append(a.summary())
    model = {"key": info.choice.key, "label": info.choice.label, "trained": not info.untrained}
    files = report.write_batch(rows, details, model, settings.to_dict())
    scores = [r.score for r in rows if r.score is not None]
    return BatchResult(rows, details, render.histogram(scores), files)


def unique_names(paths: list[str]) -> list[str]:
    """File names for the table, a repeated one numbered ("img.png (2)") so each row names one upload."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        name = Path(p).name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def summary_text(rows: list[report.BatchRow]) -> str:
    ok = [r for r in rows if r.error == ""]
    bad = len(rows) - len(ok)
    text = f"**{len(ok)}** image(s) assessed"
    if ok:
        mean = sum(r.score for r in ok) / len(ok)
        text += f", mean score {mean:.3f} ({render.SCORE_SCALE_TEXT})"
    if bad:
        text += f"; **{bad}** file(s) could not be read (see the error column)"
    return text + "."


@dataclass
class BatchTab:
    files: gr.File
    button: gr.Button
    table: gr.Dataframe


def build(app: AppState, controls: SettingsControls, gpu: Callable) -> BatchTab:
    @gpu
    def batch(files, checkpoint, steps, crops, seed, device, progress=gr.Progress()):
        """Assess many images: table (file, score, S1, S2, seconds, band, error), histogram, CSV and JSON."""
        settings = RunSettings.parse(checkpoint, steps, crops, seed, device)
        result = assess_files(app, files, settings, lambda f, d: progress(f, desc=d))
        table = pd.DataFrame(report.batch_table(result.rows), columns=list(report.BATCH_COLUMNS))
        return (table.style.format(TABLE_FORMAT, na_rep="–"), result.histogram, summary_text(result.rows),
                [str(p) for p in result.files])

    gr.Markdown("Assess many images at once with the settings above. Unreadable files get a row with the reason; "
                "the rest continue. To sort, use the menu in a column's header; the CSV and JSON downloads hold "
                "every number and the full error texts.")
    files = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="iqa-batch-files")
    button = gr.Button("Assess all", variant="primary")
    summary = gr.Markdown(label="summary", show_label=False)
    table = gr.Dataframe(headers=list(report.BATCH_COLUMNS), datatype=["str", "number", "number", "number",
                         "number", "str", "str"], interactive=False, label="Results", wrap=True,
                         column_widths=COLUMN_WIDTHS, elem_id="iqa-batch-table")
    with gr.Row():
        hist = gr.Plot(label="Histogram", scale=3)
        downloads = gr.File(label="Downloads (CSV, JSON)", file_count="multiple", interactive=False, height=140,
                            scale=2)
    button.click(batch, [files, *controls.inputs], [table, hist, summary, downloads], api_name="batch",
                 concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY, show_progress_on=summary)
    return BatchTab(files, button, table)
