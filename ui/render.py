"""Drawing for the UI: quality bands, colour-mapped patch overlays, colour bars, charts, the report panel.

Pure functions of library results (`iqa.Assessment`, `iqa.PatchMaps`) -> arrays / figures; no model logic.
Images are (H, W, 3) uint8 RGB arrays throughout.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from iqa.results import Assessment, PatchMaps

SCORE_SCALE_TEXT = "range 0–1, higher = better"
# Lower bound of each band on the 0-1 scale (five equal steps, like the ACR opinion scale).
QUALITY_BANDS = ((0.8, "excellent"), (0.6, "good"), (0.4, "fair"), (0.2, "poor"), (-math.inf, "bad"))
BAND_COLOURS = {"excellent": "#1a9850", "good": "#91cf60", "fair": "#fee08b", "poor": "#fc8d59", "bad": "#d73027"}

BRANCHES = {"VCG": "vcg", "VDA": "vda"}  # display name -> Assessment attribute
BRANCH_SCORE = {"VCG": "S1", "VDA": "S2"}
MAP_KINDS = ("score", "weight", "score × weight")
COLOURMAPS = {"score": "viridis", "weight": "magma", "score × weight": "cividis"}
MAP_RANGE = (0.0, 1.0)  # one fixed colour range for every image and map kind, so maps can be compared
HATCH_PERIOD, HATCH_WIDTH, HATCH_GREY = 10, 2, 128  # px: diagonal stripes on cells no crop analysed
DIFF_GAIN = 8  # the |input - restored| view is amplified this many times
CROP_RGB = (255, 200, 0)
DEFAULT_OPACITY = 0.55
HIGHLIGHT_RGB = (255, 255, 255)
HIGHLIGHT_WIDTH = 3  # px outline of the selected patch
COLOUR_BAR_SIZE = (1.3, 3.2)  # inches (w, h)
COLOUR_BAR_DPI = 100
PANEL_DPI = 110
PANEL_COLUMN_IN = 3.2  # inches per panel column
CHART_HEIGHT = 300  # px of the plotly charts
HISTOGRAM_BINS = 20
BAR_COLOURS = ("#4c78a8", "#f58518", "#54a24b")  # S1, S2, S


def esc(text: object) -> str:
    """Text for HTML (error pop-ups, cards): <, > and & escaped; quotes kept readable."""
    return html.escape(str(text), quote=False)


def quality_band(score: float) -> str:
    """Plain-words band of a 0-1 score."""
    for low, name in QUALITY_BANDS:
        if score >= low:
            return name
    return QUALITY_BANDS[-1][1]


def bands_text() -> str:
    """The band thresholds in words: "excellent ≥ 0.80 · good ≥ 0.60 · … · bad < 0.20"."""
    parts = [f"{name} ≥ {low:.2f}" for low, name in QUALITY_BANDS if math.isfinite(low)]
    return " · ".join(parts + [f"{QUALITY_BANDS[-1][1]} < {QUALITY_BANDS[-2][0]:.2f}"])


def verdict_html(score: float, band: str, model_label: str, untrained: bool, notices: Sequence[str] = (),
                 fusion: str = "S = S1 + 1·S2") -> str:
    """The big score line of the Inspect tab, with the band thresholds and the fusion formula."""
    warn = ('<div class="iqa-untrained">Untrained model: scores are not meaningful '
            '(quality heads have random weights).</div>') if untrained else ""
    notes = "".join(f"<li>{esc(n)}</li>" for n in notices)
    notes = f'<ul class="iqa-notices">{notes}</ul>' if notes else ""
    return (f'<div class="iqa-verdict">{warn}'
            f'<span class="iqa-score" id="iqa-score-value">{score:.3f}</span>'
            f'<span class="iqa-band" style="background:{BAND_COLOURS[band]}">{band}</span>'
            f'<div class="iqa-scale">quality score, {SCORE_SCALE_TEXT} · model: {esc(model_label)}</div>'
            f'<div class="iqa-scale">bands: {bands_text()} · {esc(fusion)}</div>'
            f"{notes}</div>")


def branch_maps(a: Assessment, branch: str) -> PatchMaps | None:
    """The branch's maps when they are spatial (drawable on the image), else None."""
    maps = getattr(a, BRANCHES[branch])
    return maps if maps is not None and maps.spatial else None


def coverage_text(a: Assessment) -> str:
    """One line on how much of the image the crops analysed."""
    maps = a.vcg or a.vda
    if maps is None:
        return ""
    cov = maps.coverage
    if cov >= 0.999:
        return f"The {len(a.crops)} crops cover the whole image."
    return (f"The {len(a.crops)} crops cover {cov:.0%} of the image; hatched cells were not analysed "
            "(set Crops to 0, the default, to analyse the whole image).")


def map_kinds(maps: PatchMaps) -> tuple[str, ...]:
    """The map kinds that explain the image: only the score where the weights are the model's fixed
    pattern rather than a reading of the image (`PatchMaps.weight_fixed`)."""
    return MAP_KINDS[:1] if maps.weight_fixed else MAP_KINDS


def weights_note(a: Assessment) -> str:
    """One line on the VCG weights when they are fixed (the weight maps are then not drawn), else ""."""
    maps = a.vcg
    if maps is None or not maps.weight_fixed:
        return ""
    w = maps.weight[np.isfinite(maps.weight)]
    if w.size and np.ptp(w) == 0:
        return (f"VCG weights: every patch counts the same ({w[0]:.2f}), so S1 is each crop's mean patch score; "
                "no weight map is drawn.")
    return ("VCG weights: this model gives every crop the same weight pattern, whatever the image shows (it "
            "depends on where a patch sits in its crop), so S1 weighs the patch scores by that pattern and only "
            "the score map is drawn.")


def map_values(maps: PatchMaps, kind: str) -> np.ndarray:
    """(gh, gw) values of one map kind; NaN where no crop covered the cell."""
    return {"score": maps.score, "weight": maps.weight, "score × weight": maps.product}[kind]


def to_pixels(maps: PatchMaps, values: np.ndarray) -> np.ndarray:
    """(gh, gw) cell values -> (H, W) per pixel, using each cell's pixel box."""
    heights = maps.boxes[:, 0, 3] - maps.boxes[:, 0, 1]
    widths = maps.boxes[0, :, 2] - maps.boxes[0, :, 0]
    return np.repeat(np.repeat(values, heights, axis=0), widths, axis=1)


def overlay(image: np.ndarray, values: np.ndarray, cmap: str, opacity: float,
            vrange: tuple[float, float], box: Sequence[int] | None = None) -> np.ndarray:
    """Blend colour-mapped (H, W) `values` over `image`; NaN pixels stay the image. `box` = (x0, y0, x1, y1) outline."""
    rgb = colormaps[cmap](Normalize(*vrange, clip=True)(np.nan_to_num(values, nan=vrange[0])))[..., :3] * 255
    alpha = np.where(np.isfinite(values), float(np.clip(opacity, 0.0, 1.0)), 0.0)[..., None]
    out = (image.astype(np.float32) * (1 - alpha) + rgb * alpha).round().astype(np.uint8)
    yy, xx = np.indices(values.shape)
    hatch = ~np.isfinite(values) & ((xx + yy) % HATCH_PERIOD < HATCH_WIDTH)
    op = float(np.clip(opacity, 0.0, 1.0))
    out[hatch] = (out[hatch] * (1 - op) + HATCH_GREY * op).round().astype(np.uint8)
    if box is not None:
        pil = Image.fromarray(out)
        x0, y0, x1, y1 = (int(v) for v in box)
        ImageDraw.Draw(pil).rectangle((x0, y0, x1 - 1, y1 - 1), outline=HIGHLIGHT_RGB, width=HIGHLIGHT_WIDTH)
        out = np.asarray(pil)
    return out


def _figure_to_array(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def colour_bar(cmap: str, vrange: tuple[float, float], label: str) -> np.ndarray:
    """A vertical colour bar image for an overlay."""
    fig = Figure(figsize=COLOUR_BAR_SIZE, dpi=COLOUR_BAR_DPI)
    ax = fig.add_axes((0.12, 0.05, 0.2, 0.9))
    fig.colorbar(_mappable(cmap, vrange), cax=ax, label=label)
    return _figure_to_array(fig)


def _mappable(cmap: str, vrange: tuple[float, float]):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=Normalize(*vrange), cmap=cmap)


def weighted(name: str, weight: float) -> str:
    """A bar label: "S2" or "0.5·S2"."""
    return name if weight == 1 else f"{weight:g}·{name}"


def branch_chart(score: float, s1: float | None, s2: float | None, weights: tuple[float, float]) -> go.Figure:
    """Bars: the weighted S1 (VCG) and S2 (VDA), and their sum S. weights: (vcg_weight, vda_weight)."""
    bars = [(weighted("S1", weights[0]) + " · VCG", None if s1 is None else weights[0] * s1, BAR_COLOURS[0]),
            (weighted("S2", weights[1]) + " · VDA", None if s2 is None else weights[1] * s2, BAR_COLOURS[1]),
            ("S = final", score, BAR_COLOURS[2])]
    bars = [b for b in bars if b[1] is not None]
    fig = go.Figure(go.Bar(x=[b[0] for b in bars], y=[b[1] for b in bars], marker_color=[b[2] for b in bars],
                           text=[f"{b[1]:.3f}" for b in bars], textposition="auto"))
    fig.update_layout(title="Branch scores (S = their sum)", height=CHART_HEIGHT, yaxis_title="score",
                      margin=dict(l=40, r=10, t=40, b=30))
    return fig


def difference_view(a: Assessment) -> np.ndarray:
    """|input - restored y0|, amplified DIFF_GAIN times (black = unchanged)."""
    diff = np.abs(a.image.astype(np.int16) - a.restored.astype(np.int16)) * DIFF_GAIN
    return np.clip(diff, 0, 255).astype(np.uint8)


def states_gallery(a: Assessment) -> list[tuple[np.ndarray, str]]:
    """Restored image, the kept noisy states (captioned with timestep and noise level) and the
    amplified difference between input and restored."""
    items = [(a.restored, "y0: restored")]
    for s in a.states:
        items.append((s.image, f"{s.name}: t={s.step}, σ={s.noise_std:.2f}"))
    items.append((difference_view(a), f"|input − y0| × {DIFF_GAIN}"))
    return items


def crop_values_view(image: np.ndarray, boxes: Sequence[Sequence[int]], values: Sequence[float],
                     name: str) -> np.ndarray:
    """The image with each crop outlined and labelled with its value: for a branch whose scores are
    per crop, not per patch."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for (x0, y0, x1, y1), v in zip(boxes, values):
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=CROP_RGB, width=HIGHLIGHT_WIDTH)
        label = f"{name} {v:.3f}"
        tx, ty = x0 + 2 * HIGHLIGHT_WIDTH, y0 + 2 * HIGHLIGHT_WIDTH
        draw.rectangle(draw.textbbox((tx, ty), label), fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=CROP_RGB)
    return np.asarray(pil)


def histogram(scores: Sequence[float]) -> go.Figure:
    fig = go.Figure(go.Histogram(x=list(scores), nbinsx=HISTOGRAM_BINS, marker_color="#4c78a8"))
    fig.update_layout(title="Score distribution", xaxis_title=f"score ({SCORE_SCALE_TEXT})", yaxis_title="images",
                      height=CHART_HEIGHT, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def training_curves(records: Sequence[dict]) -> go.Figure:
    """Loss (left axis) and validation SRCC / PLCC (right axis) per epoch from log.jsonl records."""
    epochs = [r for r in records if "epoch" in r]
    fig = go.Figure()
    x = [r["epoch"] for r in epochs]
    for key, name, axis, colour in (("loss", "train loss", "y", "#e45756"), ("val_srcc", "val SRCC", "y2", "#4c78a8"),
                                    ("val_plcc", "val PLCC", "y2", "#54a24b")):
        y = [r.get(key) for r in epochs]
        if any(v is not None for v in y):
            fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers", yaxis=axis, line_color=colour))
    if not epochs:
        fig.add_annotation(text="no epochs yet", x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                           font=dict(size=16, color="#888"))
        fig.update_xaxes(visible=False)
    fig.update_layout(title="Training curves", xaxis_title="epoch", yaxis=dict(title="loss", visible=bool(epochs)),
                      yaxis2=dict(title="correlation", overlaying="y", side="right", range=[-1, 1],
                                  visible=bool(epochs)),
                      height=CHART_HEIGHT, margin=dict(l=50, r=50, t=40, b=40), legend=dict(orientation="h", y=-0.3))
    return fig


def report_panel(a: Assessment, title: str, weights: tuple[float, float], opacity: float = DEFAULT_OPACITY) -> Figure:
    """One figure with every view: input, restored, noisy states, bars, and all per-patch maps."""
    branches = [b for b in BRANCHES if branch_maps(a, b) is not None]
    views = [(a.image, "input"), (a.restored, "restored y0")]
    views += [(s.image, f"{s.name}: t={s.step}, σ={s.noise_std:.2f}") for s in a.states]
    cols = max(len(views), len(MAP_KINDS)) + 1  # last column: bars, then each branch's score
    rows = 1 + len(branches)
    fig = Figure(figsize=(PANEL_COLUMN_IN * cols, PANEL_COLUMN_IN * 0.85 * rows + 0.6), dpi=PANEL_DPI)
    fig.suptitle(f"{title}: score {a.score:.3f} ({quality_band(a.score)}; {SCORE_SCALE_TEXT})",
                 parse_math=False)  # a file name with two $ is not a formula
    for i, (img, name) in enumerate(views):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(rows, cols, cols)
    bars = [(weighted("S1", weights[0]), None if a.s1 is None else weights[0] * a.s1, BAR_COLOURS[0]),
            (weighted("S2", weights[1]), None if a.s2 is None else weights[1] * a.s2, BAR_COLOURS[1]),
            ("S", a.score, BAR_COLOURS[2])]
    bars = [b for b in bars if b[1] is not None]
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    ax.set_title("branch scores", fontsize=9)
    for r, branch in enumerate(branches, start=1):
        maps = branch_maps(a, branch)
        for c, kind in enumerate(map_kinds(maps)):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            values = map_values(maps, kind)
            ax.imshow(a.image)
            im = ax.imshow(to_pixels(maps, values), cmap=COLOURMAPS[kind], alpha=opacity, vmin=MAP_RANGE[0],
                           vmax=MAP_RANGE[1])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(f"{branch} ({BRANCH_SCORE[branch]}) patch {kind}", fontsize=9)
            ax.axis("off")
        ax = fig.add_subplot(rows, cols, r * cols + cols)
        ax.axis("off")
        s = a.s1 if branch == "VCG" else a.s2
        ax.text(0, 0.5, f"{branch} branch\n{BRANCH_SCORE[branch]} = {s:.4f}", fontsize=11, va="center")
    fig.tight_layout()
    return fig
