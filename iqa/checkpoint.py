"""Checkpoints: a folder with `model.safetensors` (weights; config and card in its metadata),
`config.json` and `card.json` (the model card: preset, training data, metrics, provenance).

Only safetensors are read, so a checkpoint cannot run code when loaded. A path may name the folder
or the `.safetensors` file itself.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from iqa.config import ModelConfig
from iqa.model import DiffV2IQA

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "card.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def weights_path(path: str | Path) -> Path:
    path = Path(path)
    return path / WEIGHTS if path.is_dir() or path.suffix != ".safetensors" else path


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_checkpoint(model: DiffV2IQA, path: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint folder `path` atomically (each file via a temporary + rename)."""
    if model.batchnorm_folded:
        raise ValueError("this model's BatchNorms are folded into its convolutions for inference (an Assessor "
                         "made from it folds them), so its weights no longer fit a checkpoint; save the model "
                         "it was made from, or load the checkpoint again")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    card = dict(card or {})
    card.setdefault("preset", model.cfg.name)
    card["parameters"] = model.parameter_counts()
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".model.", suffix=".safetensors")
    os.close(fd)
    save_model(model, tmp, metadata={"config": model.cfg.to_json(), "card": json.dumps(card)})
    os.replace(tmp, path / WEIGHTS)
    _atomic_write_text(path / CONFIG, model.cfg.to_json())
    _atomic_write_text(path / CARD, json.dumps(card, indent=2))
    return path


def read_metadata(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(config, card) stored in a checkpoint, without loading its weights."""
    wp = weights_path(path)
    if not wp.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS} found. Name a checkpoint folder or .safetensors file.")
    try:
        with safe_open(str(wp), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{wp}: not a valid safetensors file ({e}).") from None
    if "config" not in meta:
        raise CheckpointError(f"{wp}: no model config in its metadata; was it saved by iqa.checkpoint?")
    try:
        card = json.loads(meta.get("card", "{}"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{wp}: its model card is not valid JSON ({e}).") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{wp}: its model card is not a JSON object; re-save the checkpoint.")
    return ModelConfig.from_json(meta["config"]), card


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DiffV2IQA, dict[str, Any]]:
    """(model in eval mode, card). Backbone weights come from the checkpoint, not from the hub."""
    cfg, card = read_metadata(path)
    model = DiffV2IQA(cfg, load_pretrained=False)
    missing, unexpected = load_model(model, str(weights_path(path)), strict=False, device=str(device))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match its config (missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]}).")
    return model.to(device).eval(), card
