"""Small shared test fixtures: photos that installed packages carry, tiny models."""
from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

import numpy as np
import torch

from iqa.config import tiny
from iqa.model import DiffV2IQA


def photo(w: int = 500, h: int = 333) -> np.ndarray:
    """scikit-image's astronaut resized to (h, w, 3) uint8."""
    from PIL import Image
    from skimage.data import astronaut

    return np.asarray(Image.fromarray(astronaut()).resize((w, h), Image.Resampling.BICUBIC))


def tiny_model(seed: int = 0, **overrides) -> DiffV2IQA:
    torch.manual_seed(seed)
    cfg = tiny()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return DiffV2IQA(cfg).eval()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(runs_dir: Path):
    """The Gradio app on the tiny preset, served on a free localhost port; yields its URL."""
    from ui.app import build_app, launch_kwargs

    demo = build_app("tiny", runs_dir=runs_dir)
    demo.launch(**launch_kwargs(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, ssr_mode=False))
    try:
        yield demo.local_url
    finally:
        demo.close()


def load_script(name: str):
    """Import scripts/<name>.py as a module (the scripts folder is not a package)."""
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


class FixedPattern(torch.nn.Module):
    """A VCG weight head that ignores its tokens (B, N, C) and gives one 0/1 pattern over the N positions."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("pattern", (torch.arange(n) % 3 == 0).float())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pattern.expand(tokens.shape[0], -1)[..., None]
