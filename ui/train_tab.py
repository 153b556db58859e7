"""Train tab: dataset (.zip upload, or a server folder when the app allows it) -> a background training run
(`python -m iqa splits` then `python -m iqa train`) with live log and curves; Stop ends it; the new
checkpoint joins the selector when it ends.
"""
from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch

from iqa.cache import file_sha256
from iqa.config import PRESETS
from iqa.assess import DEFAULT_CHECKPOINT
from iqa.data.datasets import DISPLAY_NAMES, FORMATS, detect_format, escapes_folder, layout_help
from iqa.data.splits import RATIO_PRESETS, parse_ratios
from ui import render
from ui.archive import ArchiveError, unpack_once
from ui.errors import user_error
from ui.render import esc
from ui.report import safe_stem
from ui.state import AppState, cuda_available, device_choices, on_space
from ui.training_job import (SPLIT_RATIOS, TAIL_LINES, TRY_EPOCHS, TrainJob, TrainSpec, build_commands, console_tail,
                              read_records, try_commands, write_try_photos)

AUTO_FORMAT = "auto-detect"
SOURCE_ZIP = "Upload a .zip"
SOURCE_SERVER = "Folder on the server"
DEFAULT_PRESET = "lite"
TICK_S = 2.0  # seconds between log / curve refreshes while a run is going
LOG_ROWS = TAIL_LINES + 6  # room for long lines that wrap, so that the latest line stays in view
DATASETS_SUBDIR = "datasets"  # unpacked uploads go to <runs>/datasets/<zip name>-<content hash>/
UPLOAD_HASH_CHARS = 16
DIFFUSION_BUNDLED = "the bundled default's trained network (lite)"
DIFFUSION_NONE = "untrained (random weights)"
BUNDLED_PRESET = "lite"  # the preset of the bundled default, whose diffusion network fits only it
GENERIC_EXAMPLE = """image,mos,ref,group
images/cat_blur1.png,3.2,refs/cat.png,cat
images/cat_jpeg2.png,2.1,refs/cat.png,cat
images/street.jpg,4.5,,street"""


def formats_help() -> str:
    """Markdown: what each dataset format's folder holds, with a CSV example for the generic one."""
    lines = ["Zip the dataset folder itself. Recognised layouts (the releases' own files):", ""]
    lines += [f"- **{DISPLAY_NAMES[f]}** (`{f}`): {esc(layout_help(f))}" for f in FORMATS]
    lines += ["", "A generic `meta.csv` (scores in any range; higher = better):", "", "```csv", GENERIC_EXAMPLE, "```",
              "", "A CSV elsewhere in the folder: name it under *Label file*."]
    return "\n".join(lines)


@dataclass
class TrainForm:
    """The form's raw values."""

    source: str = SOURCE_ZIP
    zip_file: str | None = None
    server_dir: str = ""
    format: str = AUTO_FORMAT
    csv: str = ""
    ratios: str = SPLIT_RATIOS
    preset: str = DEFAULT_PRESET
    epochs: float | None = None
    lr: float | None = None
    batch: float | None = None
    device: str = "auto"
    finetune: bool = False
    freeze: bool = False
    confirm_cpu: bool = False
    diffusion: str = DIFFUSION_BUNDLED


@dataclass
class Hardware:
    note: str  # Markdown
    can_train: bool
    needs_confirm: bool  # no GPU: ask before running on the CPU


def hardware() -> Hardware:
    if cuda_available():
        return Hardware(f"GPU found: **{esc(torch.cuda.get_device_name(0))}**. Training runs on it.", True, False)
    if on_space():
        return Hardware("**This Space has no GPU.** Training needs a GPU: switch the Space to GPU hardware "
                        "(Settings → Hardware), or run locally: `python app.py` on a machine with a GPU, or "
                        "`python -m iqa train ...` on the command line.", False, False)
    return Hardware("**No GPU found.** Training on the CPU is very slow (the `tiny` and `lite` presets are the "
                    "only practical ones); tick the confirmation below to run on the CPU anyway.", True, True)


def _positive(value, name: str, kind: type):
    """A positive int / float, or None (0 or empty: the preset's default)."""
    if value is None or value == "" or value == 0:
        return None
    try:
        v = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise user_error(f"{name} must be a finite number.") from None
    if not math.isfinite(v):
        raise user_error(f"{name} must be a finite number (got {value}).")
    if v <= 0 or (kind is int and v != float(value)):
        raise user_error(f"{name} must be a positive {'whole ' if kind is int else ''}number (got {value}).")
    return v


def dataset_root(app: AppState, form: TrainForm) -> tuple[Path, Path | None]:
    """(dataset folder, the folder unpacked for this request or None): the unpacked upload (unpacked once
    per distinct zip, so repeated runs on one upload share it), or the server folder (only when the app
    allows it)."""
    if form.source == SOURCE_SERVER:
        if not app.allow_server_data:
            raise user_error("Server folders are disabled. Start the app with --allow-server-data "
                           "(or IQA_ALLOW_SERVER_DATA=1) to train on data already on this machine.")
        folder = Path(form.server_dir.strip()).expanduser()
        if not form.server_dir.strip() or not folder.is_dir():
            raise user_error(f"'{esc(form.server_dir)}' is not a folder on the server. Give the dataset folder's path.")
        return folder.resolve(), None
    if not form.zip_file:
        raise user_error("Upload the dataset as a .zip first (the dataset folder, zipped).")
    name = Path(form.zip_file).name
    dest = app.runs_dir / DATASETS_SUBDIR / f"{safe_stem(name)}-{file_sha256(form.zip_file)[:UPLOAD_HASH_CHARS]}"
    try:
        root, created = unpack_once(form.zip_file, dest, name=name)
    except ArchiveError as e:
        raise user_error(esc(str(e)), "Dataset zip refused") from None
    return root, dest if created else None


def _dataset_format(root: Path, chosen: str) -> str:
    """The chosen format, or the one the folder's files show when auto-detecting."""
    if chosen == AUTO_FORMAT:
        fmt = detect_format(root)
        if fmt is None:
            raise user_error(f"Could not tell the dataset's layout from the files in {esc(root.name)}. "
                           f"Choose the format ({', '.join(FORMATS)}); 'generic' needs a meta.csv with "
                           "image and mos columns.")
        return fmt
    if chosen not in FORMATS:
        raise user_error(f"Unknown format '{esc(chosen)}'.")
    return chosen


def _label_file(root: Path, text: str) -> str | None:
    """The label file as an absolute path inside the dataset folder (never elsewhere on the server)."""
    text = text.strip()
    if not text:
        return None
    if escapes_folder(text):
        raise user_error(f"Label file '{esc(text)}' must be a path inside the dataset folder, such as meta.csv.")
    path = root / text.replace("\\", "/")
    if not path.is_file():
        raise user_error(f"Label file '{esc(text)}' is not in the dataset folder {esc(root.name)}.")
    return str(path)


def prepare(app: AppState, form: TrainForm, checkpoint: str | None, data: Path | None = None,
            stamp: str | None = None) -> TrainSpec:
    """Check the form and turn it into a `TrainSpec` (unpacking an uploaded zip). Raises `gr.Error`."""
    hw = hardware()
    if not hw.can_train:
        raise user_error("This Space has no GPU, so it cannot train. Use a GPU Space or run the app locally.")
    if form.source == SOURCE_ZIP and not form.zip_file and data is None:  # what a user fixes first
        raise user_error("Upload the dataset as a .zip first (the dataset folder, zipped).")
    if form.preset not in PRESETS:
        raise user_error(f"Unknown preset '{esc(form.preset)}'; choose one of {', '.join(PRESETS)}.")
    try:
        parse_ratios(form.ratios)
    except ValueError as e:
        raise user_error(esc(str(e))) from None
    epochs = _positive(form.epochs, "Epochs", int)
    batch = _positive(form.batch, "Batch size", int)
    lr = _positive(form.lr, "Learning rate", float)
    init = None
    if form.finetune:
        choice = app.choice(checkpoint)
        if choice.is_preset:
            raise user_error("Fine-tuning needs a trained checkpoint: pick one in the selector above, "
                           "or untick “fine-tune”.")
        init = choice.path
    diffusion = None
    if form.diffusion == DIFFUSION_BUNDLED and init is None:
        if form.preset != BUNDLED_PRESET:
            raise user_error(f"The bundled diffusion network is a {BUNDLED_PRESET} network: choose the "
                             f"{BUNDLED_PRESET} preset, or an untrained diffusion network.")
        if not (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
            raise user_error("The bundled default checkpoint is missing: choose an untrained diffusion network.")
        diffusion = DEFAULT_CHECKPOINT
    if form.device == "cuda" and not cuda_available():
        raise user_error("Device 'cuda' was chosen but no GPU is available; choose auto or cpu.")
    if hw.needs_confirm and not form.confirm_cpu:
        raise user_error("No GPU found: tick “run on the CPU anyway” to train on the CPU (slow).",
                         "Confirm CPU training")
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    root, unpacked = (data, None) if data else dataset_root(app, form)
    try:
        fmt = _dataset_format(root, form.format)
        csv = _label_file(root, form.csv)
    except gr.Error:
        if unpacked:  # a refused form leaves no unpacked copy behind
            shutil.rmtree(unpacked, ignore_errors=True)
        raise
    run_dir = app.runs_dir / f"{stamp}-{form.preset}"
    return TrainSpec(data=root, format=fmt, run_dir=run_dir, preset=form.preset, ratios=form.ratios.strip(),
                     csv=csv, init=init, epochs=epochs, batch=batch, lr=lr,
                     device=form.device, freeze_backbones=form.freeze, diffusion=diffusion)


def job_view(app: AppState):
    """(status Markdown, curves, console text) of the current or last run."""
    job = app.jobs.job
    if job is None:
        return "No training run yet.", render.training_curves([]), ""
    return job.status_text(), render.training_curves(read_records(job.run_dir)), console_tail(job.run_dir)


def start_run(app: AppState, form: TrainForm, checkpoint: str | None) -> TrainJob:
    """Check the form and launch `iqa splits` + `iqa train` in the background."""
    spec = prepare(app, form, checkpoint)
    try:
        return app.jobs.start(TrainJob(build_commands(spec), spec.run_dir, epochs=spec.epochs))
    except RuntimeError as e:
        raise user_error(esc(e)) from None


def start_try(app: AppState) -> TrainJob:
    """The "try it" button: a tiny synthetic dataset from bundled sample photos and a one-epoch CPU run."""
    root = app.runs_dir / DATASETS_SUBDIR / "try-it"
    pristine = write_try_photos(root / "pristine")
    run_dir = app.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-try-it"
    try:
        return app.jobs.start(TrainJob(try_commands(pristine, root / "data", run_dir), run_dir, epochs=TRY_EPOCHS))
    except RuntimeError as e:
        raise user_error(esc(e)) from None


def stop_run(app: AppState):
    """Stop button: end the run's processes; (status, curves, console)."""
    job = app.jobs.job
    if job is None or not job.running:
        gr.Info("No training run is going.")
    else:
        job.stop()
        job.wait(timeout=TICK_S)
    return job_view(app)


def tick(app: AppState, checkpoint: str | None):
    """Timer: (status, curves, console, timer, checkpoint selector). Once the run has ended the timer
    stops and the selector is refreshed, so the run's best checkpoint becomes selectable."""
    job = app.jobs.job
    if job is not None and job.running:
        return (*job_view(app), gr.update(), gr.update())
    return (*job_view(app), gr.Timer(active=False), gr.update(choices=app.dropdown_choices(), value=checkpoint))


def page_load(app: AppState):
    """A page opened while a run is going shows it and follows it; the selector lists current runs."""
    job = app.jobs.job
    return (*job_view(app), gr.Timer(active=job is not None and job.running),
            gr.update(choices=app.dropdown_choices()))


@dataclass
class TrainTab:
    start: gr.Button
    stop: gr.Button
    status: gr.Markdown
    timer: gr.Timer
    on_load: Callable  # page load: show the current run, resume the timer, refresh the checkpoint list
    load_outputs: list


def build(app: AppState, checkpoint: gr.Dropdown) -> TrainTab:
    hw = hardware()
    gr.Markdown(hw.note, elem_id="iqa-hardware")
    with gr.Row():
        with gr.Column():
            sources = [SOURCE_ZIP, SOURCE_SERVER] if app.allow_server_data else [SOURCE_ZIP]
            source = gr.Radio(sources, value=SOURCE_ZIP, label="Dataset", visible=len(sources) > 1)
            zip_file = gr.File(label="Dataset .zip (the dataset folder, zipped)", file_types=[".zip"], type="filepath")
            server_dir = gr.Textbox(label="Dataset folder on the server", visible=False,
                                    placeholder="/data/koniq10k")
            fmt = gr.Dropdown([AUTO_FORMAT, *((DISPLAY_NAMES[f], f) for f in FORMATS)], value=AUTO_FORMAT,
                              label="Format",
                              info="auto-detect recognises the standard layouts from the folder's files")
            csv = gr.Textbox(label="Label file (optional)", placeholder="inside the dataset folder, e.g. meta.csv")
            ratios = gr.Dropdown(list(RATIO_PRESETS), value=SPLIT_RATIOS, allow_custom_value=True,
                                 label="Split train:val:test", info="content-disjoint; validation picks the best epoch")
            with gr.Accordion("Dataset formats", open=False):
                gr.Markdown(formats_help(), elem_id="iqa-formats")
        with gr.Column():
            preset = gr.Dropdown(list(PRESETS), value=DEFAULT_PRESET, label="Preset",
                                 info="paper = GPU size; lite = CPU-friendly; tiny = smoke tests")
            with gr.Row():
                epochs = gr.Number(0, precision=0, minimum=0, label="Epochs", info="0 = preset default")
                batch = gr.Number(0, precision=0, minimum=0, label="Batch", info="0 = preset default")
                lr = gr.Number(0, minimum=0, label="Learning rate", info="0 = preset default")
            device = gr.Radio(device_choices(), value="auto", label="Device")
            diffusion = gr.Dropdown([DIFFUSION_BUNDLED, DIFFUSION_NONE], value=DIFFUSION_BUNDLED,
                                    label="Diffusion network (makes y0, y1, y2; not trained here)",
                                    info="a fine-tuned checkpoint keeps its own")
            finetune = gr.Checkbox(False, label="Fine-tune from the checkpoint selected above")
            freeze = gr.Checkbox(False, label="Freeze backbones")
            confirm = gr.Checkbox(False, label="No GPU: run on the CPU anyway (slow)", visible=hw.needs_confirm)
            with gr.Row():
                start = gr.Button("Start training", variant="primary", interactive=hw.can_train)
                stop = gr.Button("Stop", variant="stop")
            try_it = gr.Button("Try it: a short demo run on sample photos (CPU, about a minute)",
                               interactive=hw.can_train, elem_id="iqa-try-it")
    status = gr.Markdown("No training run yet.", elem_id="iqa-train-status")
    curves = gr.Plot(label="Loss and validation SRCC / PLCC", elem_id="iqa-train-curves")
    console = gr.Textbox(label="Log", lines=LOG_ROWS, max_lines=LOG_ROWS, autoscroll=True, interactive=False,
                         elem_id="iqa-train-log")
    timer = gr.Timer(TICK_S, active=False)
    form_inputs = [source, zip_file, server_dir, fmt, csv, ratios, preset, epochs, lr, batch, device, finetune,
                   freeze, confirm, diffusion]

    def on_source(src):
        return gr.update(visible=src == SOURCE_ZIP), gr.update(visible=src == SOURCE_SERVER)

    def on_start(*values, progress=gr.Progress()):
        *form_values, key = values
        progress(0, desc="preparing the dataset")
        start_run(app, TrainForm(*form_values), key)
        return (*job_view(app), gr.Timer(active=True))

    def on_try(progress=gr.Progress()):
        progress(0, desc="writing the sample photos")
        start_try(app)
        return (*job_view(app), gr.Timer(active=True))

    source.change(on_source, source, [zip_file, server_dir], api_visibility="private", show_progress="hidden")
    try_it.click(on_try, None, [status, curves, console, timer], api_visibility="private", concurrency_id="train")
    start.click(on_start, [*form_inputs, checkpoint], [status, curves, console, timer], api_visibility="private",
                concurrency_id="train")
    stop.click(lambda: (*stop_run(app), gr.update()), None, [status, curves, console, timer],
               api_visibility="private", concurrency_id="train-stop")
    timer.tick(lambda key: tick(app, key), checkpoint, [status, curves, console, timer, checkpoint],
               api_visibility="private", show_progress="hidden")
    return TrainTab(start, stop, status, timer, lambda: page_load(app), [status, curves, console, timer, checkpoint])
