"""Inspect tab: one image -> score, band, branch chart, restored image, noisy states and per-patch maps.

`assess_image` does the work and returns an `InspectView`; `outputs` turns that into the values of the
tab's components (also the `assess` API endpoint's outputs).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from iqa.checkpoint import CheckpointError
from iqa.images import ImageError
from iqa.results import Assessment
from ui import render, report
from ui.errors import friendly, user_error
from ui.image_input import ImageInput
from ui.settings import RunSettings, SettingsControls
from ui.state import AppState, ModelInfo

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
IMAGE_HEIGHT = 360  # px of the image views
STATE_TTL_S = 3600  # a session's last assessment is dropped after this long
MODEL_QUEUE = "model"  # assess and batch calls share one concurrency group
MODEL_CONCURRENCY = 2  # model calls running at once (the model is shared; inference is thread-safe)
VIEW_FORMAT = "png"  # lossless: a quality tool must not add compression artefacts to what it shows
CLICK_HINT = "Click the map to read one patch's score and weight."
MAPS_INTRO = ("### Per-patch maps\nVCG: what each patch scores (score), how much it counts (weight) and "
              "score × weight; the branch score S1 of a crop is Σ score·weight / Σ weight. Colours run over one "
              "fixed range, 0–1, for every image. Hatched cells were not analysed by any crop. VDA scores whole "
              "crops; choose it to see its score per crop. Click the map to read a patch.")

Progress = Callable[[float, str], None]


@dataclass
class Inspected:
    """Session state: the last assessment and what the map view needs to redraw it."""

    assessment: Assessment
    model_label: str
    untrained: bool
    weights: tuple[float, float]  # (vcg_weight, vda_weight) of the fusion
    settings: dict[str, Any]
    model: dict[str, Any]
    selected: tuple[float, float] | None = None  # (x, y) pixel last clicked on the map


@dataclass
class MapView:
    overlay: np.ndarray
    colour_bar: np.ndarray


@dataclass
class InspectView:
    """Everything the tab shows for one image."""

    state: Inspected
    verdict: str
    numbers: dict[str, Any]
    chart: go.Figure
    pair: tuple[np.ndarray, np.ndarray]  # (input, restored)
    gallery: list[tuple[np.ndarray, str]]
    maps: MapView


EXAMPLE_ORDER = {"clean": 0, "blur": 1, "noise": 2, "jpeg": 3}  # by the name's last part: chelsea_blur.jpg


def example_images() -> list[str]:
    """The bundled examples: clean first, then blurred, noisy, JPEG (others after, by name)."""
    found = [p for p in ASSETS.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES]
    return [str(p) for p in sorted(found, key=lambda p: (EXAMPLE_ORDER.get(p.stem.rpartition("_")[2], 9), p.name))]


def example_label(path: str) -> str:
    """Caption of an example: "clean", "blurred", … from its file name."""
    kind = Path(path).stem.rpartition("_")[2]
    return {"clean": "clean", "blur": "blurred", "noise": "noisy", "jpeg": "JPEG q8"}.get(kind, Path(path).stem)


def _model_dict(info: ModelInfo) -> dict[str, Any]:
    return {"key": info.choice.key, "label": info.choice.label, "preset": info.config.name,
            "trained": not info.untrained}


def default_branch(a: Assessment) -> str:
    return next((b for b in render.BRANCHES if render.branch_maps(a, b) is not None), "VCG")


def draw_map(state: Inspected, branch: str, kind: str, opacity: float) -> MapView:
    """Overlay + colour bar of one branch's map kind; the selected patch is outlined."""
    a = state.assessment
    maps = render.branch_maps(a, branch)
    if maps is None:
        values = a.crop_s1 if branch == "VCG" else a.crop_s2
        if values:  # the branch scores per crop only: draw the crops, not a map
            view = render.crop_values_view(a.image, a.crops, values, render.BRANCH_SCORE[branch])
            return MapView(view, render.colour_bar(render.COLOURMAPS["score"], render.MAP_RANGE,
                                                   f"{branch}: per crop, no map"))
        blank = render.colour_bar(render.COLOURMAPS[kind], render.MAP_RANGE, f"{branch} branch disabled")
        return MapView(a.image, blank)
    kind = kind if kind in render.map_kinds(maps) else render.MAP_KINDS[0]
    values = render.map_values(maps, kind)
    box = None if state.selected is None else maps.boxes[maps.cell_at(*state.selected)]
    over = render.overlay(a.image, render.to_pixels(maps, values), render.COLOURMAPS[kind], opacity,
                          render.MAP_RANGE, box)
    bar = render.colour_bar(render.COLOURMAPS[kind], render.MAP_RANGE, f"{branch} patch {kind}")
    return MapView(over, bar)


def patch_text(state: Inspected, x: float, y: float) -> tuple[str, tuple[int, int] | None]:
    """Markdown with both branches' score / weight / product at pixel (x, y), and the (row, col) of its cell."""
    a = state.assessment
    rows, picked, box, covered = [], None, None, True
    for branch in render.BRANCHES:
        maps = render.branch_maps(a, branch)
        if maps is None:
            continue
        row, col = maps.cell_at(x, y)
        picked, box = picked or (row, col), box or tuple(int(v) for v in maps.boxes[row, col])
        s, w = float(maps.score[row, col]), float(maps.weight[row, col])
        covered = covered and bool(np.isfinite(s))
        rows.append(f"| {branch} | {s:.4f} | {w:.4f} | {s * w:.4f} |" if np.isfinite(s)
                    else f"| {branch} | – | – | – |")
    if picked is None:
        return "No per-patch maps in this model.", None
    x0, y0, x1, y1 = box
    head = f"**Patch** row {picked[0]}, column {picked[1]} (pixels x {x0}–{x1}, y {y0}–{y1})"
    if not covered:
        head += "  \nNot covered by any crop: set Crops to 0 (the default) to analyse it."
    table = "\n\n| branch | score | weight | score × weight |\n|---|---|---|---|\n" + "\n".join(rows)
    note = render.weights_note(a)
    return head + table + (f"\n\n{note}" if note else "") + per_crop_note(a), picked


def per_crop_note(a: Assessment) -> str:
    """The VDA branch's per-crop scores, which are not a map (one global feature vector per crop)."""
    if a.vda is None or a.vda.spatial or not a.crop_s2:
        return ""
    values = ", ".join(f"{v:.3f}" for v in a.crop_s2)
    return (f"\n\nVDA scores each crop as a whole (its tokens come from one global feature vector per crop), "
            f"so it has no patch map: S2 per crop = {values}.")


def assess_image(app: AppState, image: str | None, settings: RunSettings,
                 progress: Progress | None = None) -> InspectView:
    """Run the model on one image file. User mistakes raise `gr.Error` with a clear message."""
    report_progress = progress or (lambda f, d: None)
    if image is None:
        raise user_error("Add an image first: upload, paste or take one with the webcam, or click an example.")
    try:
        info = app.info(settings.checkpoint)
        report_progress(0.0, "loading model")
        assessor = app.assessor(settings.checkpoint, settings.device)
        a = assessor.assess(image, crops=settings.crops, steps=settings.steps, seed=settings.seed,
                            progress=report_progress, name=Path(image).name)
    except (ImageError, CheckpointError, FileNotFoundError, KeyError, ValueError) as e:
        raise friendly(e) from None
    weights = (assessor.cfg.vcg_weight, assessor.cfg.vda_weight)
    state = Inspected(a, info.choice.label, info.untrained, weights, settings.to_dict(),
                      _model_dict(info))
    band = render.quality_band(a.score)
    numbers = {**a.summary(), "band": band, "scale": render.SCORE_SCALE_TEXT, "model": state.model,
               "settings": state.settings,
               "patch_maps": {"vcg": report.maps_json(a.vcg), "vda": report.maps_json(a.vda)}}
    return InspectView(
        state=state,
        verdict=render.verdict_html(a.score, band, info.choice.label, info.untrained, a.notices,
                                    assessor.cfg.fusion_text()),
        numbers=numbers,
        chart=render.branch_chart(a.score, a.s1, a.s2, state.weights),
        pair=(a.image, a.restored),
        gallery=render.states_gallery(a),
        maps=draw_map(state, default_branch(a), render.MAP_KINDS[0], render.DEFAULT_OPACITY),
    )


def outputs(view: InspectView) -> tuple:
    """Component values in the order of `InspectTab.outputs`."""
    a = view.state.assessment
    maps = render.branch_maps(a, default_branch(a))
    kinds = render.MAP_KINDS if maps is None else render.map_kinds(maps)
    note = " ".join(s for s in (render.coverage_text(a), render.weights_note(a), CLICK_HINT) if s)
    return (view.verdict, view.numbers, view.chart, view.pair, restoration_text(a), view.gallery, view.maps.overlay,
            view.maps.colour_bar, note + per_crop_note(a), gr.update(value=default_branch(a)),
            gr.update(value=kinds[0], choices=list(kinds)), view.state)


def restoration_text(a: Assessment) -> str:
    if a.restoration is None:
        return "This model has no diffusion network: every state is the input."
    return a.restoration.sentence()


def make_report(state: Inspected | None) -> list[str] | None:
    if state is None:
        return None
    files = report.write_report(state.assessment, state.model, state.settings, state.weights)
    return [str(p) for p in files]


def redraw(state: Inspected | None, branch: str, kind: str, opacity: float):
    if state is None:
        return gr.update(), gr.update()
    view = draw_map(state, branch, kind, opacity)
    return view.overlay, view.colour_bar


def select_patch(state: Inspected | None, branch: str, kind: str, opacity: float, evt: gr.SelectData):
    """Image click -> (overlay with the patch outlined, patch text, new state)."""
    if state is None or evt is None or evt.index is None:
        return gr.update(), "Assess an image first.", state
    x, y = (float(v) for v in evt.index[:2])
    text, _ = patch_text(state, x, y)
    state = replace(state, selected=(x, y))
    return draw_map(state, branch, kind, opacity).overlay, text, state


@dataclass
class InspectTab:
    image: ImageInput
    button: gr.Button
    outputs: list
    state: gr.State
    report_files: gr.File


def build(app: AppState, controls: SettingsControls, gpu: Callable) -> InspectTab:
    @gpu
    def assess(image, checkpoint, steps, crops, seed, device, progress=gr.Progress()):
        """Assess one image: score (0-1, higher = better), band, branch scores S1/S2, restored image, maps."""
        settings = RunSettings.parse(checkpoint, steps, crops, seed, device)
        view = assess_image(app, image, settings, lambda f, d: progress(f, desc=d))
        return outputs(view)

    with gr.Row():
        with gr.Column(scale=2):
            image = ImageInput(label="Image", sources=["upload", "clipboard", "webcam"], height=IMAGE_HEIGHT,
                               elem_id="iqa-input")
            button = gr.Button("Assess", variant="primary", elem_id="iqa-assess")
            examples = example_images()
            if examples:
                gr.Examples([[p] for p in examples], inputs=[image], label="Examples",
                            example_labels=[example_label(p) for p in examples])
        with gr.Column(scale=3):
            verdict = gr.HTML('<div class="iqa-verdict iqa-empty">Add an image and press <b>Assess</b>.</div>',
                              label="verdict", show_label=False, elem_id="iqa-verdict")
            chart = gr.Plot(label="Branch scores", elem_id="iqa-chart")
            with gr.Accordion("All numbers (JSON)", open=False):
                numbers = gr.JSON(label="Numbers")
    with gr.Row():
        with gr.Column():
            pair = gr.ImageSlider(label="Input ↔ restored (drag the handle)", type="numpy", interactive=False,
                                  format=VIEW_FORMAT, height=IMAGE_HEIGHT, elem_id="iqa-pair")
            restoration = gr.Markdown("", label="restoration", show_label=False, elem_id="iqa-restoration")
        gallery = gr.Gallery(label="Diffusion states (t = step, σ = noise level) and |input − y0|", columns=2,
                             format=VIEW_FORMAT, height=IMAGE_HEIGHT, object_fit="contain", interactive=False,
                             elem_id="iqa-gallery")
    gr.Markdown(MAPS_INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=220):
            branch = gr.Radio(list(render.BRANCHES), value="VCG", label="Branch")
            kind = gr.Radio(list(render.MAP_KINDS), value=render.MAP_KINDS[0], label="Map")
            opacity = gr.Slider(0, 1, value=render.DEFAULT_OPACITY, step=0.05, label="Overlay opacity")
        with gr.Column(scale=4):
            overlay = gr.Image(label="Patch map overlay", type="numpy", interactive=False, height=IMAGE_HEIGHT,
                               format=VIEW_FORMAT, elem_id="iqa-overlay")
            patch = gr.Markdown(CLICK_HINT, label="patch", show_label=False, elem_id="iqa-patch")
        with gr.Column(scale=1, min_width=120):
            bar = gr.Image(label="Colour bar", type="numpy", interactive=False, height=IMAGE_HEIGHT, format=VIEW_FORMAT,
                           show_label=False, buttons=[])
    report_files = gr.File(label="Report: JSON with all numbers + PNG panel of all views", file_count="multiple",
                           interactive=False, elem_id="iqa-report")
    state = gr.State(None, time_to_live=STATE_TTL_S)

    outs = [verdict, numbers, chart, pair, restoration, gallery, overlay, bar, patch, branch, kind, state]
    button.click(assess, [image, *controls.inputs], outs, api_name="assess", concurrency_id=MODEL_QUEUE,
                 concurrency_limit=MODEL_CONCURRENCY, show_progress_on=verdict,  # one progress bar, not one per view
                 ).success(make_report, state, report_files, api_visibility="private")
    for control in (branch, kind):
        control.change(redraw, [state, branch, kind, opacity], [overlay, bar], api_visibility="private",
                       show_progress="hidden")
    opacity.release(redraw, [state, branch, kind, opacity], [overlay, bar], api_visibility="private",
                    show_progress="hidden")
    overlay.select(select_patch, [state, branch, kind, opacity], [overlay, patch, state], api_visibility="private",
                   show_progress="hidden")
    return InspectTab(image, button, outs, state, report_files)
