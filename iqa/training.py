"""Pieces shared by the training pipelines: run folders, JSONL logs, resumable state, DDP set-up.

A run folder holds `log.jsonl` (one JSON object per logged step/epoch), `state.pt` (the resumable
training state, written atomically, read back with `weights_only=True`) and checkpoint folders.
Killing a run at any moment loses at most the work since the last `state.pt`; re-running the same
command resumes from it.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

STATE = "state.pt"
LOG = "log.jsonl"


class JsonlLog:
    """Append-only JSON-lines log; every record gets a wall-clock `time`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        record.setdefault("time", time.time())
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The saved training state of a run, or None. Tensors and plain containers only."""
    path = Path(run_dir) / STATE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def moving_average(module: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of `module`'s weights and buffers (`--ema` of the trainers): its first
    `update_parameters` copies them, each later one does avg <- decay * avg + (1 - decay) * weights."""
    return torch.optim.swa_utils.AveragedModel(
        module, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class DistInfo:
    """Process-group facts; single-process runs have world 1, rank 0."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
