"""Model tab: the card of the selected checkpoint (preset, parameters, training data, metrics, provenance)."""
from __future__ import annotations

import functools
import json
from typing import Any

import gradio as gr

from iqa.config import ModelConfig, preset
from iqa.model import DiffV2IQA
from ui.errors import message
from ui.render import esc
from ui.state import AppState, ModelInfo

CARD_SECTIONS = (  # (card key, row name) shown first, in this order; other card keys follow
    ("training_data", "Training data"),
    ("data", "Training data"),
    ("evaluation", "Held-out report"),
    ("metrics", "Metrics"),
    ("test_metrics", "Metrics"),
    ("provenance", "Provenance"),
    ("stage", "Stage"),
)
SKIPPED_KEYS = {"preset", "parameters", "trained"}
FIELDS_HEADING = "### All card fields"  # the every-field table after it is folded away in the tab


@functools.lru_cache(maxsize=4)
def preset_parameters(name: str) -> dict[str, int]:
    """Parameter counts of a preset (built without downloading weights)."""
    return DiffV2IQA(preset(name), load_pretrained=False).parameter_counts()


def _millions(n: Any) -> str:
    return f"{n / 1e6:.2f} M" if isinstance(n, (int, float)) else esc(str(n))


def _cell(text: object) -> str:
    """Text for one Markdown table cell: HTML-escaped, pipes escaped, line breaks as <br>."""
    return esc(text).replace("|", "\\|").replace("\n", "<br>")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "<br>".join(f"{_cell(k)}: {_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return _cell(v)


def architecture(cfg: ModelConfig) -> list[tuple[str, str]]:
    d = cfg.diffusion
    vda_bb = "shared with VCG" if cfg.vda.share_vcg_backbone else cfg.vda.backbone.name
    return [
        ("VCG backbone",
         f"{cfg.vcg.backbone.name} (outputs {list(cfg.vcg.backbone.indices)})" if cfg.use_vcg else "off"),
        ("VDA backbone", vda_bb if cfg.use_vda else "off"),
        ("Diffusion", f"{d.sampler}, {d.sample_steps} steps, kept states at t={list(d.keep_steps)}, on {d.on}"
         if cfg.use_diffusion else "off"),
        ("Crop / token grid", f"{cfg.crop} px / {cfg.vcg.grid}×{cfg.vcg.grid}"),
        ("Fusion", cfg.fusion_text()),
    ]


WHAT_IT_IS = ("DiffV2IQA scores an image without a reference, 0–1, higher = better. A diffusion network "
              "restores the image (y0) and keeps two noisy intermediate states (y1, y2). The VCG branch scores "
              "every patch of the image guided by those states (score and weight maps); the VDA branch scores "
              "the differences between the image and each state, per crop. The final score is their weighted sum "
              "(Fusion, below).")
LIMITS = ("- Scores are learned from full-reference pseudo-MOS labels of synthetic distortions, not from human "
          "opinions: compare images with each other rather than reading a score as an opinion.\n"
          "- The mildest level of a distortion can score at or above the clean photo, most often light blur, "
          "resampling or noise on smooth or grainy photos: the held-out results count it under \"clean > level 1\".\n"
          "- By default 224 px tiles cover the whole image; with Crops > 0 the score rests on the crops it analyses "
          "(Inspect shows which).\n"
          "- On the 2-core CPUs measured a 512×384 image (6 tiles) takes 0.45–0.85 s, and the time grows with the "
          "image's area; `python -m iqa benchmark` measures it on yours.")
LEVEL_COLUMNS = (("rho", "mean ρ"), ("adjacent", "adjacent levels"), ("clean_above_level1", "clean > level 1"))


def levels_table(levels: dict) -> list[str]:
    """The levels test of a card (bundled from `python -m iqa levels`): this model beside the peers."""
    kinds = list(levels.get("per_kind", {}))
    head = "| method | " + " | ".join(n for _, n in LEVEL_COLUMNS) + " |"
    rows = [head, "|---" * (len(LEVEL_COLUMNS) + 1) + "|"]
    for name, m in [(levels.get("method", "this model"), levels), *levels.get("others", {}).items()]:
        rows.append(f"| {_cell(name)} | " + " | ".join(_value(m.get(k)) for k, _ in LEVEL_COLUMNS) + " |")
    lines = [f"Levels test: {levels.get('photos')} held-out photos, kinds {', '.join(kinds)}; Spearman ρ of "
             "score against distortion level per photo and kind (1 = always ordered).", "\n".join(rows)]
    if kinds:
        lines.append("Per kind, this model: " + ", ".join(f"{k} {v:.3f}" for k, v in levels["per_kind"].items()))
    if levels.get("command"):
        lines.append(f"Command: `{esc(levels['command'])}`")
    return lines


def card_sections(info: ModelInfo) -> list[str]:
    """What it is, how it was trained, held-out results, limits: the part of the card people read."""
    card = info.card
    out = ["### What it is", WHAT_IT_IS]
    rank = card.get("rank_training") or {}
    trained = []
    if card.get("stage"):
        origin = f" from `{esc(card['init'])}`" if card.get("init") else ""
        trained.append(f"Last stage: `{esc(card['stage'])}`" + origin)
    if rank:
        trained.append(f"{rank.get('steps')} steps, {rank.get('images_seen')} images seen, {rank.get('wall_hours')} h "
                       f"wall, {rank.get('cpu_core_hours')} CPU core hours")
    if card.get("command"):
        trained.append(f"Command: `{esc(card['command'])}`")
    out += ["### How it was trained",
            "  \n".join(trained) if trained else "Not trained: a preset with random quality heads."]
    levels = (card.get("evaluation") or {}).get("levels")
    if levels:
        out += ["### Held-out results", *levels_table(levels)]
        failed = [c["text"] for c in levels.get("checks", []) if not c.get("passed")]
        if failed:
            out.append("Not yet reached: " + "; ".join(esc(t) for t in failed) + ".")
    out += ["### Limits", LIMITS]
    return out


def card_markdown(info: ModelInfo) -> str:
    """The model card as Markdown (tables hold HTML-escaped values): sections, then every field."""
    card, cfg, c = info.card, info.config, info.choice
    params = card.get("parameters") or (preset_parameters(c.key) if c.is_preset else {})
    lines = [f"## {esc(c.label)}"]
    if info.untrained:
        lines.append("> **Untrained quality heads: scores are not meaningful.** Train one in the Train tab or add "
                     "`checkpoints/default`.")
    elif info.provisional_note:
        lines.append(f"> **{esc(info.provisional_note)}**")
    lines += card_sections(info)
    lines.append(FIELDS_HEADING)
    rows = [("Preset", cfg.name), ("Checkpoint", str(c.path) if c.path else "none (preset with random heads)")]
    if params:
        rows.append(("Parameters", f"{_millions(params.get('total'))} (" + ", ".join(
            f"{k} {_millions(v)}" for k, v in params.items() if k != "total") + ")"))
    rows += architecture(cfg)
    seen = set()
    for key, heading in CARD_SECTIONS:
        if key in card:
            rows.append((heading, card[key]))
            seen.add(key)
    rows += [(k, v) for k, v in card.items() if k not in seen and k not in SKIPPED_KEYS]
    table = "\n".join(f"| {_cell(k)} | {_value(v)} |" for k, v in rows)
    return "\n\n".join(lines) + "\n\n| field | value |\n|---|---|\n" + table


def show(app: AppState, key: str) -> tuple[str, dict]:
    """(card Markdown, raw card + config JSON) for the selector's value."""
    try:
        info = app.info(key)
    except Exception as e:  # damaged or removed checkpoint: say so instead of failing the page
        return f"**Cannot read this checkpoint:** {esc(message(e))}", {}
    return card_markdown(info), {"card": info.card, "config": json.loads(info.config.to_json())}


def folded_view(app: AppState, key: str) -> tuple[str, str, dict]:
    """(the card's sections, its every-field table, raw JSON): the table is long, so it is folded away."""
    text, raw = show(app, key)
    sections, _, fields = text.partition(FIELDS_HEADING)
    return sections, fields, raw


def build(app: AppState, checkpoint: gr.Dropdown) -> tuple[gr.Markdown, gr.JSON]:
    sections, fields, raw = folded_view(app, app.default)
    card = gr.Markdown(sections, elem_id="iqa-model-card")
    with gr.Accordion("All card fields", open=False):
        table = gr.Markdown(fields, elem_id="iqa-model-fields")
    with gr.Accordion("Raw card and config (JSON)", open=False):
        js = gr.JSON(raw)
    checkpoint.change(lambda k: folded_view(app, k), checkpoint, [card, table, js], api_visibility="private",
                      show_progress="hidden")
    return card, js
