"""The Gradio app: `build_app()` assembles the tabs; `launch_kwargs()` holds the server settings.

    demo = build_app("tiny")            # any checkpoint folder or preset; default: $IQA_APP_MODEL,
    demo.launch(**launch_kwargs())      # then checkpoints/default, then the untrained `lite` preset

API endpoints (gradio_client): `/assess` (one image) and `/batch` (many files).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ui import batch_tab, inspect_tab, model_tab, settings, train_tab
from ui.state import ROOT, AppState

TITLE = "DiffV2IQA Studio"
INTRO = ("No-reference image quality assessment guided by diffusion restoration. A diffusion model restores the "
         "image; two branches compare the image with its restoration and noisy intermediates (VCG) and measure "
         "their differences (VDA). Score range 0–1, higher = better.")
MAX_UPLOAD_ENV = "IQA_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 1024  # dataset zips are the largest uploads; images are bounded again by iqa.images
QUEUE_MAX_SIZE = 64  # waiting requests before new ones are turned away
GPU_DURATION_S = 120  # ZeroGPU time slot per call
CSS = """
.iqa-verdict {font-size: 1.05rem; line-height: 1.6;}
.iqa-verdict.iqa-empty {color: var(--body-text-color-subdued);}
.iqa-score {font-size: 2.6rem; font-weight: 700; margin-right: 0.6rem; vertical-align: middle;}
.iqa-band {padding: 0.15rem 0.7rem; border-radius: 1rem; font-weight: 600; color: #111; vertical-align: middle;}
.iqa-scale {color: var(--body-text-color-subdued); font-size: 0.9rem;}
.iqa-untrained {background: #fff3cd; color: #5c4400; border: 1px solid #e0c36a; border-radius: 6px;
                padding: 0.4rem 0.7rem; margin: 0.3rem 0;}
.iqa-notices {font-size: 0.85rem; margin: 0.2rem 0 0 1rem;}
#iqa-model-card td:first-child, #iqa-model-card th {white-space: nowrap; word-break: keep-all;}
"""


def gpu_decorator() -> Callable[[Callable], Callable]:
    """`spaces.GPU` on Hugging Face ZeroGPU Spaces (when the package is importable), else a no-op."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=GPU_DURATION_S)


def build_app(default: str | Path | None = None, *, runs_dir: str | Path | None = None,
              allow_server_data: bool | None = None) -> gr.Blocks:
    """The whole app. `default`: checkpoint folder or preset name selected at start (tests use "tiny")."""
    app = AppState.create(default, runs_dir, allow_server_data)
    gpu = gpu_decorator()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        controls = settings.build_settings(app)
        with gr.Tabs():
            with gr.Tab("Inspect", id="inspect"):
                inspect_tab.build(app, controls, gpu)
            with gr.Tab("Batch", id="batch"):
                batch_tab.build(app, controls, gpu)
            with gr.Tab("Train", id="train"):
                train = train_tab.build(app, controls.checkpoint)
            with gr.Tab("Model", id="model"):
                model_tab.build(app, controls.checkpoint)
        controls.checkpoint.change(lambda k: settings.on_checkpoint_change(app, k), controls.checkpoint,
                                   [controls.banner, controls.steps], api_visibility="private",
                                   show_progress="hidden")
        demo.load(train.on_load, None, train.load_outputs, api_visibility="private",
                  show_progress="hidden")
    return demo.queue(max_size=QUEUE_MAX_SIZE)


def launch_kwargs(**overrides) -> dict:
    """Server settings for `demo.launch(**launch_kwargs())` (Gradio 6: theme and css go here)."""
    kwargs = {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "max_file_size": f"{int(os.environ.get(MAX_UPLOAD_ENV, DEFAULT_MAX_UPLOAD_MB))}mb",
        "allowed_paths": [str(ROOT / "assets")],
        "theme": gr.themes.Soft(),
        "css": CSS,
    }
    kwargs.update(overrides)
    return kwargs
