"""Model tab: the card of the selected checkpoint (preset, parameters, training data, metrics, provenance)."""
from __future__ import annotations

import functools
import json
from typing import Any

import gradio as gr

from iqa.config import ModelConfig, preset
from iqa.model import DiffV2IQA, count_parameters
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


@functools.lru_cache(maxsize=4)
def preset_parameters(name: str) -> dict[str, int]:
    """Parameter counts of a preset (built without downloading weights)."""
    m = DiffV2IQA(preset(name), load_pretrained=False)
    backbones = count_parameters(m.backbone) + count_parameters(getattr(m, "vda_backbone", None))
    return {"total": count_parameters(m), "diffusion": count_parameters(m.diffusion), "vcg": count_parameters(m.vcg),
            "vda": count_parameters(m.vda), "backbones": backbones}


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
        ("VCG backbone", f"{cfg.vcg.backbone.name} (outputs {list(cfg.vcg.backbone.indices)})" if cfg.use_vcg else "off"),
        ("VDA backbone", vda_bb if cfg.use_vda else "off"),
        ("Diffusion", f"{d.sampler}, {d.sample_steps} steps, kept states at t={list(d.keep_steps)}, on {d.on}"
         if cfg.use_diffusion else "off"),
        ("Crop / token grid", f"{cfg.crop} px / {cfg.vcg.grid}×{cfg.vcg.grid}"),
        ("Fusion", f"S = S1 + {cfg.vda_weight:g}·S2"),
    ]


def card_markdown(info: ModelInfo) -> str:
    """The model card as Markdown (tables hold HTML-escaped values)."""
    card, cfg, c = info.card, info.config, info.choice
    params = card.get("parameters") or (preset_parameters(c.key) if c.is_preset else {})
    lines = [f"## {esc(c.label)}"]
    if info.untrained:
        lines.append("> **Untrained quality heads: scores are not meaningful.** Train one in the Train tab or add "
                     "`checkpoints/default`.")
    elif info.provisional_note:
        lines.append(f"> **{esc(info.provisional_note)}**")
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


def build(app: AppState, checkpoint: gr.Dropdown) -> tuple[gr.Markdown, gr.JSON]:
    text, raw = show(app, app.default)
    card = gr.Markdown(text, elem_id="iqa-model-card")
    with gr.Accordion("Raw card and config (JSON)", open=False):
        js = gr.JSON(raw)
    checkpoint.change(lambda k: show(app, k), checkpoint, [card, js], api_visibility="private",
                      show_progress="hidden")
    return card, js
