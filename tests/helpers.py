"""Small shared test fixtures: photos that installed packages carry, tiny models."""
from __future__ import annotations

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
