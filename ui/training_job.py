"""Training from the app: the `python -m iqa splits` + `python -m iqa train` commands, run as a separate
process group in the background so the UI never blocks, and read back from the run folder.

A run folder gets `console.log` (both commands' output), `splits.json`, and what `iqa train` writes:
`log.jsonl` (one JSON per epoch: epoch, loss, val_srcc, val_plcc, lr, images_per_s), `best/`, `last/`.
"""
from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = "console.log"
LOG = "log.jsonl"
SPLITS = "splits.json"
SPLIT_RATIOS = "7:1:2"
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long
TAIL_BYTES = 20_000  # console text read for the UI
TAIL_LINES = 12  # lines the Log box shows: the latest ones


@dataclass
class TrainSpec:
    """One training run as the form describes it (paths already checked)."""

    data: Path
    format: str
    run_dir: Path
    preset: str
    ratios: str = SPLIT_RATIOS
    csv: str | None = None
    init: Path | None = None  # fine-tune from this checkpoint folder
    epochs: int | None = None  # None: the command's default
    batch: int | None = None
    lr: float | None = None
    device: str = "auto"
    freeze_backbones: bool = False
    split_seed: int = 0
    diffusion: Path | None = None  # checkpoint whose trained diffusion network makes y0, y1, y2

    @property
    def split_file(self) -> Path:
        return self.run_dir / SPLITS


def build_commands(spec: TrainSpec, python: str = sys.executable) -> list[list[str]]:
    """[splits command, train command] as argument lists (no shell)."""
    csv = ["--csv", spec.csv] if spec.csv else []
    splits = [python, "-m", "iqa", "splits", "--data", str(spec.data), "--format", spec.format, *csv,
              "--ratios", spec.ratios, "--count", "1", "--seed", str(spec.split_seed), "--out", str(spec.split_file)]
    train = [python, "-m", "iqa", "train", "--data", str(spec.data), "--format", spec.format, *csv,
             "--split-file", str(spec.split_file), "--split-index", "0"]
    # Fine-tuning takes the checkpoint's own config, so the preset is only named for a fresh model.
    train += ["--init", str(spec.init)] if spec.init is not None else ["--preset", spec.preset]
    for flag, value in (("--epochs", spec.epochs), ("--batch", spec.batch), ("--lr", spec.lr)):
        if value is not None:
            train += [flag, str(value)]
    if spec.device != "auto":
        train += ["--device", spec.device]
    if spec.freeze_backbones:
        train.append("--freeze-backbones")
    if spec.diffusion is not None and spec.init is None:  # a fine-tuned checkpoint keeps its own network
        train += ["--diffusion", str(spec.diffusion)]
    train += ["--out", str(spec.run_dir)]
    return [splits, train]


TRY_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # scikit-image's sample photos (public domain / CC0)
TRY_KINDS = ("gaussian_blur", "white_noise")
TRY_LEVELS, TRY_SIZE, TRY_EPOCHS, TRY_PRESET = 3, "224x224", 1, "tiny"


def write_try_photos(folder: Path) -> Path:
    """The try-it run's pristine photos (scikit-image's samples) as PNGs in `folder`."""
    from PIL import Image
    from skimage import data
    folder.mkdir(parents=True, exist_ok=True)
    for name in TRY_PHOTOS:
        path = folder / f"{name}.png"
        if not path.is_file():
            Image.fromarray(getattr(data, name)()).save(path)
    return folder


def try_commands(pristine: Path, data: Path, run_dir: Path, python: str = sys.executable) -> list[list[str]]:
    """A one-minute demonstration run: a synthetic dataset from `pristine` (pseudo-MOS labels), its
    split, and one epoch of the tiny preset on the CPU."""
    synth = [python, "-m", "iqa", "synth", "--pristine", str(pristine), "--out", str(data), "--size", TRY_SIZE,
             "--kinds", *TRY_KINDS, "--levels", str(TRY_LEVELS), "--workers", "1"]
    spec = TrainSpec(data=data, format="generic", run_dir=run_dir, preset=TRY_PRESET, ratios="4:1:1",
                     epochs=TRY_EPOCHS, device="cpu")
    return [synth, *build_commands(spec, python)]


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Epoch records of log.jsonl; a half-written last line (training still writing) is skipped."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def console_tail(run_dir: Path, limit: int = TAIL_BYTES, lines: int = TAIL_LINES) -> str:
    """The run's latest console lines; a progress bar redrawn with carriage returns counts as one
    line, its latest state."""
    path = Path(run_dir) / CONSOLE
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        text = f.read().decode(errors="replace")
    shown = [seg.rstrip("\r").split("\r")[-1] for seg in text.split("\n")]
    shown = [s for s in shown if s.strip()]
    return "\n".join(shown[-lines:])


class TrainJob:
    """Runs `commands` one after another in a background thread, each in its own process group."""

    def __init__(self, commands: list[list[str]], run_dir: str | Path, cwd: Path = ROOT, epochs: int | None = None):
        self.commands = commands
        self.run_dir = Path(run_dir)
        self.cwd = cwd
        self.epochs = epochs
        self.started = time.time()
        self.finished_at: float | None = None
        self.returncode: int | None = None
        self.stopped = False
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"train-{self.run_dir.name}", daemon=True)

    def start(self) -> "TrainJob":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def best(self) -> Path:
        return self.run_dir / "best"

    def _run(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        rc = 0
        try:
            with (self.run_dir / CONSOLE).open("ab") as console:
                for cmd in self.commands:
                    with self._lock:
                        if self.stopped:
                            break
                        console.write(f"$ {shlex.join(cmd)}\n".encode())
                        console.flush()
                        self._proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, cwd=self.cwd,
                                                      env=env, start_new_session=True)
                    rc = self._proc.wait()
                    if rc != 0:
                        break
        except OSError as e:
            rc = -1
            with (self.run_dir / CONSOLE).open("a") as console:
                console.write(f"could not start: {e}\n")
        self.returncode = rc
        self.finished_at = time.time()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """End the running command (and its children): SIGTERM, then SIGKILL after `grace_s`."""
        with self._lock:
            self.stopped = True
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._signal(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL)
            proc.wait()

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # its own session: the group is the training process and its workers
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def status_text(self) -> str:
        """One Markdown line: phase, latest epoch numbers, elapsed time or outcome."""
        records = [r for r in read_records(self.run_dir) if "epoch" in r]
        last = records[-1] if records else None
        total = f"/{self.epochs}" if self.epochs else ""
        parts = []
        if last:
            parts.append(f"epoch {last['epoch']}{total}")
            for key, name, fmt in (("loss", "loss", "{:.4f}"), ("val_srcc", "val SRCC", "{:.3f}"),
                                   ("val_plcc", "PLCC", "{:.3f}"), ("images_per_s", "img/s", "{:.1f}")):
                if isinstance(last.get(key), (int, float)):
                    parts.append(f"{name} {fmt.format(last[key])}")
        numbers = " · ".join(parts)
        elapsed = (self.finished_at or time.time()) - self.started
        where = f"`{self.run_dir}`"
        if self.running:
            phase = "making the split" if not (self.run_dir / SPLITS).is_file() else "training"
            return f"**Running** ({phase}, {elapsed / 60:.1f} min) in {where}. {numbers}"
        if self.stopped:
            return f"**Stopped** after {elapsed / 60:.1f} min. {numbers}"
        if self.returncode == 0:
            best = " Its best checkpoint is now in the selector." if (self.best / "model.safetensors").is_file() else ""
            return f"**Finished** in {elapsed / 60:.1f} min. {numbers}{best}"
        return f"**Failed** (exit {self.returncode}) after {elapsed / 60:.1f} min: see the log below. {numbers}"


class JobSlot:
    """At most one training job per server (training takes the whole GPU). A run still going when the
    app exits is stopped with it, so no training process outlives the UI that controls it."""

    def __init__(self) -> None:
        self.job: TrainJob | None = None
        self._lock = threading.Lock()
        atexit.register(self.stop)

    def start(self, job: TrainJob) -> TrainJob:
        with self._lock:
            if self.job is not None and self.job.running:
                raise RuntimeError(f"a training run is already going ({self.job.run_dir.name}); stop it first.")
            self.job = job.start()
            return job

    def stop(self) -> None:
        job = self.job
        if job is not None and job.running:
            job.stop()
