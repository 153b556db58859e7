"""Minimal app: one image in, score and branch scores out (the full UI builds on this)."""
from __future__ import annotations

import os

import gradio as gr

import iqa
from iqa.assess import DEFAULT_CHECKPOINT


def _load() -> tuple[iqa.Assessor, str]:
    if (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        return iqa.load(), "bundled default checkpoint"
    return iqa.load("lite"), "lite preset, UNTRAINED heads (no bundled checkpoint yet): scores are not meaningful"


def build_app() -> gr.Blocks:
    assessor, source = _load()

    def assess(image):
        if image is None:
            raise gr.Error("Add an image first.")
        r = assessor.assess(image)
        return {"score": r.score, "S1 (VCG)": r.s1, "S2 (VDA)": r.s2, "seconds": r.timings["total"]}, r.restored

    with gr.Blocks(title="DiffV2IQA Studio") as demo:
        gr.Markdown(f"# DiffV2IQA Studio\nModel: {source}")
        with gr.Row():
            inp = gr.Image(type="numpy", label="Image")
            with gr.Column():
                out = gr.JSON(label="Scores")
                restored = gr.Image(label="Restored (diffusion)")
        gr.Button("Assess", variant="primary").click(assess, inp, [out, restored], api_name="assess")
    return demo


def launch_kwargs() -> dict:
    return {"server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")}
