"""Noise schedules of the diffusion restoration network.

A schedule of T steps is given by its cumulative signal levels ᾱ_0..ᾱ_T (ᾱ_0 = 1, no noise):
x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε. Everything is float64 so that the sampler's coefficients
(e.g. sqrt(1/ᾱ_T) near pure noise) stay accurate.
"""
from __future__ import annotations

import math

import torch

from iqa.config import DiffusionConfig

BETA_MAX = 0.999  # cap on a step's noise variance (Nichol & Dhariwal): avoids ᾱ_T = 0 exactly
SCHEDULES = ("cosine", "linear")


def cosine_alpha_bars_closed(steps: int, s: float) -> torch.Tensor:
    """Unclamped cosine ᾱ (steps+1,) float64: cos²(((t/T + s)/(1 + s))·π/2), normalised so ᾱ_0 = 1."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps + s
    f = torch.cos(t / (1 + s) * math.pi / 2) ** 2
    return f / f[0]


def betas(cfg: DiffusionConfig, steps: int) -> torch.Tensor:
    """Per-step noise variances β_1..β_T, shape (steps,) float64, for `cfg.schedule` with T = `steps`."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"a noise schedule needs an integer number of steps >= 1, got {steps!r}")
    if cfg.schedule == "cosine":
        ab = cosine_alpha_bars_closed(steps, cfg.cosine_s)
        return (1 - ab[1:] / ab[:-1]).clamp(max=BETA_MAX)
    if cfg.schedule == "linear":
        return torch.linspace(cfg.linear_start, cfg.linear_end, steps, dtype=torch.float64)
    raise ValueError(f"unknown diffusion schedule {cfg.schedule!r}; choose one of {SCHEDULES}")


def alpha_bars(cfg: DiffusionConfig, steps: int) -> torch.Tensor:
    """Cumulative signal levels ᾱ_0..ᾱ_T, shape (steps+1,) float64, ᾱ_0 = 1 and decreasing."""
    b = betas(cfg, steps)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - b, dim=0)])
