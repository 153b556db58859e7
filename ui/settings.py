"""The model selector and sampling settings shared by the Inspect and Batch tabs."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import gradio as gr

from iqa.assess import DEFAULT_CROPS
from ui.errors import message, user_error
from ui.render import esc
from ui.state import AppState, ModelInfo, device_choices

MIN_STEPS, MAX_STEPS = 2, 200  # two kept intermediates need at least two sampling steps
MAX_CROPS = 16
MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed takes


@dataclass
class RunSettings:
    """What one assess / batch call runs with."""

    checkpoint: str
    steps: int
    crops: int = DEFAULT_CROPS
    seed: int = 0
    device: str = "auto"

    @classmethod
    def parse(cls, checkpoint, steps, crops, seed, device) -> "RunSettings":
        """From raw UI / API values; bad numbers become a clear `gr.Error`."""
        try:
            s = cls(str(checkpoint or ""), int(steps), int(crops), int(seed or 0), str(device or "auto"))
        except (TypeError, ValueError, OverflowError):
            raise user_error("Sampling steps, crops and seed must be whole numbers.") from None
        if not -MAX_SEED <= s.seed <= MAX_SEED:
            raise user_error(f"The seed must be between -{MAX_SEED} and {MAX_SEED} (got {s.seed}).")
        if not MIN_STEPS <= s.steps <= MAX_STEPS:
            raise user_error(f"Sampling steps must be between {MIN_STEPS} and {MAX_STEPS} (got {s.steps}).")
        if not 0 <= s.crops <= MAX_CROPS:
            raise user_error(f"The number of crops must be between 1 and {MAX_CROPS}, or 0 to tile the whole "
                             f"image (got {s.crops}).")
        return s

    def to_dict(self) -> dict:
        return asdict(self)


def model_banner(info: ModelInfo) -> str:
    if info.untrained:
        return (f'<div class="iqa-untrained">⚠ <b>{esc(info.choice.label)}</b>: untrained quality heads, '
                "scores are not meaningful. Train a model in the Train tab or add checkpoints/default.</div>")
    if info.provisional_note:
        return f'<div class="iqa-untrained">⚠ <b>{esc(info.choice.label)}</b>: {esc(info.provisional_note)}</div>'
    return ""


@dataclass
class SettingsControls:
    """The shared input components (rendered once, above the tabs)."""

    checkpoint: gr.Dropdown
    banner: gr.HTML
    device: gr.Radio
    steps: gr.Slider
    crops: gr.Slider
    seed: gr.Number

    @property
    def inputs(self) -> list:
        """In the order `RunSettings.parse` takes them."""
        return [self.checkpoint, self.steps, self.crops, self.seed, self.device]


def build_settings(app: AppState) -> SettingsControls:
    info = app.info(app.default)
    with gr.Row(equal_height=True):
        checkpoint = gr.Dropdown(app.dropdown_choices(), value=app.default, label="Checkpoint", scale=3,
                                 allow_custom_value=True,  # checked against the current list in AppState.choice
                                 info="bundled default, presets, and runs/*/best from the Train tab")
        device = gr.Radio(device_choices(), value="auto", label="Device", scale=1,
                          info="auto = GPU when present")
    banner = gr.HTML(model_banner(info))
    with gr.Accordion("Sampling settings", open=False):
        with gr.Row():
            steps = gr.Slider(MIN_STEPS, MAX_STEPS, value=info.config.diffusion.sample_steps, step=1,
                              label="Sampling steps",
                              info="diffusion sampling steps (set to the checkpoint's default when it is chosen)")
            crops = gr.Slider(0, MAX_CROPS, value=DEFAULT_CROPS, step=1, label="Crops",
                              info="0 tiles the whole image with 224 px crops (every patch analysed; the default; "
                                   "time grows with the image's area); K > 0 averages K crops spread over it")
            seed = gr.Number(0, precision=0, label="Seed", info="noise seed of the sampler")
    return SettingsControls(checkpoint, banner, device, steps, crops, seed)


def on_checkpoint_change(app: AppState, key: str):
    """(banner, steps slider) for a newly selected checkpoint."""
    try:
        info = app.info(key)
    except Exception as e:  # a run folder removed meanwhile, a damaged file: say so, keep the UI alive
        return f'<div class="iqa-untrained">{esc(message(e))}</div>', gr.update()
    return model_banner(info), gr.update(value=info.config.diffusion.sample_steps)
