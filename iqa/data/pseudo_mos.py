"""Pseudo-MOS: the label of a synthetic image, from an ensemble of four full-reference metrics.

No human opinions can be collected here, so each distorted image is scored against its pristine
reference by four full-reference (FR) metrics from `piq` (CPU, no downloads):

    metric     range      perfect  mapped to 0 at   what it looks at
    ms_ssim    0..1       1        0.50             multi-scale structure, per RGB channel
    vif_p      0..~1      1        0.00             information fidelity of luminance (pixel domain)
    gmsd       0..~0.35   0        0.30             deviation of gradient-magnitude similarity
    fsim       0..1       1        0.65             phase congruency + gradient, with chroma (FSIMc)

Each value v becomes a quality q = clip((v - worst) / (perfect - worst), 0, 1), a fixed affine map
chosen once so the metric's range over KADID-strength distortions spans about [0, 1]: "mapped to 0"
sits at or a little beyond the 0.5th percentile of the metric over the 25 x 5 distortions of 11
pristine photos (1375 images), so under 0.5 % of images clip. The pseudo-MOS is the plain mean of
the four q's: in [0, 1], higher = better, 1 for the reference itself. MS-SSIM uses as many of its 5
standard scales as the image allows (all 5 from 161 px on the short side). Limits: docs/SYNTH.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import piq
import torch

# MS-SSIM: standard 5-scale weights (Wang et al. 2003) and window; scales dropped for small crops.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_KERNEL = 11


def _ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    side = min(x.shape[-2:])
    scales = max(1, min(len(MS_SSIM_WEIGHTS), 1 + int(math.log2((side - 1) / (MS_SSIM_KERNEL - 1)))))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=x.dtype)
    return piq.multi_scale_ssim(x, y, data_range=1.0, reduction="none", kernel_size=MS_SSIM_KERNEL,
                                scale_weights=weights)


def _vif_p(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return piq.vif_p(x, y, data_range=1.0, reduction="none")


def _gmsd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return piq.gmsd(x, y, data_range=1.0, reduction="none")


def _fsim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return piq.fsim(x, y, data_range=1.0, reduction="none", chromatic=True)


@dataclass(frozen=True)
class FRMetric:
    """A full-reference metric `compute(distorted, reference) -> (B,)` on (B, 3, H, W) tensors in [0, 1],
    and the fixed affine map of its value to a quality in [0, 1]: `perfect` -> 1, `worst` -> 0."""

    name: str
    compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    perfect: float
    worst: float

    def quality(self, value: float) -> float:
        return float(np.clip((value - self.worst) / (self.perfect - self.worst), 0.0, 1.0))


METRICS: dict[str, FRMetric] = {m.name: m for m in [
    FRMetric("ms_ssim", _ms_ssim, perfect=1.0, worst=0.5),
    FRMetric("vif_p", _vif_p, perfect=1.0, worst=0.0),
    FRMetric("gmsd", _gmsd, perfect=0.0, worst=0.3),
    FRMetric("fsim", _fsim, perfect=1.0, worst=0.65),
]}


@dataclass
class PseudoMOS:
    """Ensemble label of one distorted image: `mos` in [0, 1] (higher = better) and the raw metrics."""

    mos: float
    metrics: dict[str, float]


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def pseudo_mos(distorted: Sequence[np.ndarray] | np.ndarray, reference: np.ndarray) -> list[PseudoMOS]:
    """Score each distorted RGB uint8 image (H, W, 3) against `reference` (H, W, 3) with the ensemble."""
    batch = distorted if isinstance(distorted, np.ndarray) else np.stack([np.asarray(d) for d in distorted])
    if batch.ndim == 3:
        batch = batch[None]
    if batch.shape[1:] != reference.shape:
        raise ValueError(f"distorted images {batch.shape[1:]} and reference {reference.shape} differ in shape")
    x = _to_tensor(batch)
    y = _to_tensor(reference[None]).expand_as(x).contiguous()
    raw = {name: m.compute(x, y).double().numpy() for name, m in METRICS.items()}
    out = []
    for i in range(len(batch)):
        values = {name: float(raw[name][i]) for name in METRICS}
        out.append(PseudoMOS(mos=ensemble_mos(values), metrics=values))
    return out


def ensemble_mos(metrics: dict[str, float]) -> float:
    """Raw metric values -> pseudo-MOS in [0, 1]: the mean of the fixed per-metric quality maps."""
    return float(np.mean([METRICS[name].quality(metrics[name]) for name in METRICS]))
