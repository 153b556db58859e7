"""Result dataclasses returned by the assessor (what the CLI prints and the UI draws)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class NoisyState:
    """One kept diffusion state: image (H, W, 3) uint8, its timestep and noise level."""

    name: str  # "y1" (less noisy) or "y2" (more noisy)
    image: np.ndarray
    step: int  # timestep t of the sampling schedule
    alpha_bar: float  # signal level; noise std = sqrt(1 - alpha_bar)

    @property
    def noise_std(self) -> float:
        return float(np.sqrt(max(0.0, 1.0 - self.alpha_bar)))


@dataclass
class PatchMaps:
    """Per-patch maps of one branch on the whole image's token grid.

    `score`, `weight`: (gh, gw) float arrays; cells no crop covered are NaN.
    `boxes`: (gh, gw, 4) int array, the pixel box (x0, y0, x1, y1) of each cell in the image.
    `spatial`: whether a cell's values come from that place of the image. The VDA branch's tokens are
    made from one global feature vector per crop, so its maps are not spatial and are not drawn.
    `weight_fixed`: the model gives every crop the same weight map whatever it shows (`DiffV2IQA.fixed_vcg_weights`),
    so the weights follow a patch's place in its crop and the weight map is no explanation of the image.
    """

    score: np.ndarray
    weight: np.ndarray
    boxes: np.ndarray
    spatial: bool = True
    weight_fixed: bool = False

    @property
    def coverage(self) -> float:
        """Share of the image's cells that some crop covered."""
        return float(np.isfinite(self.score).mean())

    @property
    def product(self) -> np.ndarray:
        return self.score * self.weight

    def cell_at(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the cell holding pixel (x, y)."""
        b = self.boxes
        col = int(np.clip(np.searchsorted(b[0, :, 2], x, side="right"), 0, b.shape[1] - 1))
        row = int(np.clip(np.searchsorted(b[:, 0, 3], y, side="right"), 0, b.shape[0] - 1))
        return row, col


@dataclass
class RestorationChange:
    """How much the restored image y0 differs from the input, over the restored pixels: mean absolute
    change in 8-bit levels, and the share of pixels whose largest channel change exceeds `threshold`."""

    mean_abs: float
    changed_share: float
    threshold: int = 2
    NEGLIGIBLE_MEAN = 0.5  # 8-bit levels: below this the change is invisible

    @property
    def negligible(self) -> bool:
        return self.mean_abs < self.NEGLIGIBLE_MEAN

    def sentence(self) -> str:
        text = (f"The restoration changed {self.changed_share:.1%} of the pixels by more than {self.threshold}/255 "
                f"(mean change {self.mean_abs:.2f}/255).")
        if self.negligible:
            text += (" That is negligible: restored and input look the same, and the score rests on the input and "
                     "the noisy states y1, y2 rather than on a visible restoration.")
        return text


@dataclass
class Assessment:
    """Everything one `Assessor.assess` call produced for one image.

    score = vcg_weight * s1 + vda_weight * s2 (1 and 1: the paper's plain sum). Scores are on the scale of the
    training labels: [0, 1], higher = better. `restored` and states are whole-image arrays (H, W, 3) uint8 at
    the analysed size.
    """

    score: float
    s1: float | None  # VCG branch score (None when the branch is disabled)
    s2: float | None  # VDA branch score
    vcg: PatchMaps | None
    vda: PatchMaps | None
    image: np.ndarray  # the analysed image (after orientation / downscaling)
    restored: np.ndarray
    states: list[NoisyState]
    crops: list[tuple[int, int, int, int]]  # (x0, y0, x1, y1) of each crop on `image`
    crop_scores: list[float]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    notices: list[str] = field(default_factory=list)  # conversions made on the input
    source: str = ""  # file name or description
    cached: bool = False  # True: the same image and settings were assessed before; stage timings not rerun
    crop_s1: list[float] = field(default_factory=list)  # per crop, VCG
    crop_s2: list[float] = field(default_factory=list)  # per crop, VDA
    restoration: RestorationChange | None = None  # None without a diffusion network

    def summary(self) -> dict:
        """Numbers only (JSON-ready)."""
        return {
            "source": self.source,
            "score": self.score,
            "s1": self.s1,
            "s2": self.s2,
            "crops": [list(c) for c in self.crops],
            "crop_scores": self.crop_scores,
            "crop_s1": self.crop_s1,
            "crop_s2": self.crop_s2,
            "coverage": None if self.vcg is None else self.vcg.coverage,
            "restoration": None if self.restoration is None else {
                "mean_abs": self.restoration.mean_abs, "changed_share": self.restoration.changed_share,
                "threshold": self.restoration.threshold, "negligible": self.restoration.negligible},
            "states": [{"name": s.name, "step": s.step, "alpha_bar": s.alpha_bar,
                        "noise_std": s.noise_std} for s in self.states],
            "timings": self.timings,
            "cached": self.cached,
            "notices": self.notices,
            "size": [int(self.image.shape[1]), int(self.image.shape[0])],
        }
