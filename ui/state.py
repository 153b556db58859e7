"""Server-side state shared by every session: which models can be chosen, and the loaded ones.

A *model key* is what the checkpoint selector holds: a preset name (`lite`, `tiny`: untrained heads)
or a checkpoint folder (relative to the repository when inside it). Only keys that `discover` lists
are ever loaded, so a client cannot make the server read arbitrary paths.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import iqa
from iqa.assess import DEFAULT_CHECKPOINT, resolve_device
from iqa.bundle import provisional_note
from iqa.checkpoint import WEIGHTS, read_metadata
from iqa.config import PRESETS, ModelConfig, preset
from ui.training_job import JobSlot

ROOT = Path(__file__).resolve().parent.parent
MODEL_ENV = "IQA_APP_MODEL"  # checkpoint folder or preset the app starts with
RUNS_ENV = "IQA_RUNS_DIR"  # where training runs go (default: <repo>/runs)
SERVER_DATA_ENV = "IQA_ALLOW_SERVER_DATA"  # "1": the Train tab may read dataset folders on the server
FALLBACK_PRESET = "lite"  # used when the bundled checkpoint is missing
UNTRAINED_LABEL = "preset (untrained: scores not meaningful)"  # a preset's name in the selector is followed by this
MAX_CACHED_MODELS = 2  # loaded (checkpoint, device) pairs kept in memory
DEVICES = ("auto", "cpu", "cuda")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def on_space() -> bool:
    """True on a Hugging Face Space (it sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def device_choices() -> list[str]:
    return [d for d in DEVICES if d != "cuda" or cuda_available()]


def key_for(path: Path) -> str:
    """Model key of a checkpoint folder: relative to the repository when inside it."""
    path = path.resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def is_untrained(card: dict[str, Any]) -> bool:
    return card.get("trained") is False or "untrained" in str(card.get("stage", "")).lower()


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the checkpoint selector."""

    key: str
    label: str
    path: Path | None  # checkpoint folder; None for a preset

    @property
    def is_preset(self) -> bool:
        return self.path is None


@dataclass
class ModelInfo:
    """What the Model tab shows: config and card, read without loading the weights."""

    choice: ModelChoice
    config: ModelConfig
    card: dict[str, Any]

    @property
    def untrained(self) -> bool:
        return self.choice.is_preset or is_untrained(self.card)

    @property
    def provisional_note(self) -> str:
        """Non-empty for a checkpoint bundled although it failed its acceptance checks."""
        return provisional_note(self.card)


def _checkpoint_choice(path: Path, label: str) -> ModelChoice:
    return ModelChoice(key_for(path), label, path.resolve())


@dataclass
class AppState:
    """Configuration of one app instance plus its model cache (shared by all sessions)."""

    default: str  # model key selected at start
    runs_dir: Path
    allow_server_data: bool = False
    jobs: JobSlot = field(default_factory=JobSlot)  # the server's training run
    _extra: dict[str, ModelChoice] = field(default_factory=dict)
    _models: "OrderedDict[tuple[str, str], iqa.Assessor]" = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, default: str | Path | None = None, runs_dir: str | Path | None = None,
               allow_server_data: bool | None = None) -> "AppState":
        """`default`: a checkpoint folder or preset; else $IQA_APP_MODEL, the bundled checkpoint, or `lite`."""
        runs = Path(runs_dir or os.environ.get(RUNS_ENV) or ROOT / "runs")
        allow = env_flag(SERVER_DATA_ENV) if allow_server_data is None else allow_server_data
        state = cls(default="", runs_dir=runs, allow_server_data=allow)
        src = default or os.environ.get(MODEL_ENV) or None
        if src is None:
            src = DEFAULT_CHECKPOINT if (DEFAULT_CHECKPOINT / WEIGHTS).is_file() else FALLBACK_PRESET
        state.default = state._register(src)
        return state

    def _register(self, src: str | Path) -> str:
        if isinstance(src, str) and src in PRESETS:
            return src
        path = Path(src)
        if not (path / WEIGHTS).is_file():
            raise FileNotFoundError(f"{path}: no {WEIGHTS} there. Name a checkpoint folder or a preset "
                                    f"({', '.join(PRESETS)}).")
        choice = _checkpoint_choice(path, f"{path.name} ({key_for(path)})")
        self._extra[choice.key] = choice
        return choice.key

    def choices(self) -> list[ModelChoice]:
        """The selector's entries: the start model, the bundled checkpoint, then runs/*/best (newest first)."""
        out: dict[str, ModelChoice] = {}
        if self.default in PRESETS:
            out[self.default] = ModelChoice(self.default, f"{self.default} {UNTRAINED_LABEL}", None)
        if (DEFAULT_CHECKPOINT / WEIGHTS).is_file():
            c = _checkpoint_choice(DEFAULT_CHECKPOINT, "bundled default (checkpoints/default)")
            out[c.key] = c
        elif FALLBACK_PRESET not in out:
            out[FALLBACK_PRESET] = ModelChoice(FALLBACK_PRESET, f"{FALLBACK_PRESET} {UNTRAINED_LABEL}", None)
        for k, c in self._extra.items():
            out.setdefault(k, c)
        runs = sorted(self.runs_dir.glob(f"*/best/{WEIGHTS}"), key=lambda p: p.stat().st_mtime, reverse=True)
        for w in runs:
            c = _checkpoint_choice(w.parent, f"run {w.parent.parent.name} (best)")
            out.setdefault(c.key, c)
        first = out.pop(self.default)
        return [first, *out.values()]

    def dropdown_choices(self) -> list[tuple[str, str]]:
        return [(c.label, c.key) for c in self.choices()]

    def choice(self, key: str | None) -> ModelChoice:
        """The listed entry for `key`; anything not listed is refused."""
        key = key or self.default
        for c in self.choices():
            if c.key == key:
                return c
        raise KeyError(f"model '{key}' is not one of the app's checkpoints; pick one from the selector.")

    def info(self, key: str | None) -> ModelInfo:
        c = self.choice(key)
        if c.is_preset:
            return ModelInfo(c, preset(c.key), {"preset": c.key, "trained": False})
        cfg, card = read_metadata(c.path)
        return ModelInfo(c, cfg, card)

    def assessor(self, key: str | None, device: str = "auto") -> iqa.Assessor:
        """The loaded model for (key, device); loaded once, least recently used dropped beyond the cap."""
        c = self.choice(key)
        dev = str(resolve_device(device))
        with self._lock:
            k = (c.key, dev)
            if k in self._models:
                self._models.move_to_end(k)
                return self._models[k]
            model = iqa.load(c.key if c.is_preset else c.path, device=dev)
            self._models[k] = model
            while len(self._models) > MAX_CACHED_MODELS:
                self._models.popitem(last=False)
            return model
