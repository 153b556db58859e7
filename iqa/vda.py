"""Visual difference analysis (VDA) branch: global-feature differences through RTAB."""
from __future__ import annotations

import torch
from torch import nn

from iqa.attention import RTAB, TAB, DualHead
from iqa.config import VDAConfig


class VDA(nn.Module):
    """g: (B, 4, D) global features of x, y0, y1, y2 -> (S2 (B,), f2 (B, g, g), w2 (B, g, g)).

    Q, K, V come from |g - g0|, |g - g1|, |g - g2| (the ablation's best: V from the noisier state).
    """

    def __init__(self, cfg: VDAConfig, dim_in: int):
        super().__init__()
        self.grid = cfg.grid
        self.norms = nn.ModuleList(Standardise(dim_in) if cfg.input_norm else nn.Identity() for _ in range(4))
        self.rtab = RTAB(dim_in, cfg.grid, cfg.token_dim, cfg.dropout)
        self.tab = TAB(cfg.grid * cfg.grid, cfg.dropout)
        self.head = DualHead(cfg.token_dim, cfg.dropout)

    def forward(self, g: torch.Tensor):
        x, y0, y1, y2 = g.unbind(1)
        inputs = (x, (x - y0).abs(), (x - y1).abs(), (x - y2).abs())
        tokens = self.rtab(*(norm(v) for norm, v in zip(self.norms, inputs)))  # (B, N, c)
        tokens = self.tab(tokens.transpose(1, 2)).transpose(1, 2)
        s, f, w = self.head(tokens)
        b = g.shape[0]
        return s, f.view(b, self.grid, self.grid), w.view(b, self.grid, self.grid)


class Standardise(nn.Module):
    """x (B, D) -> (x - mean) / std per dimension, with running statistics of the training inputs.

    Global features mix scales of several orders of magnitude (channel means and stds of different
    stages), so without it a few dimensions dominate the token maps. Unlike BatchNorm it always uses
    the running statistics, so a sample's output does not depend on its batch and a batch of one works.
    The statistics start from the first training batch and then follow an exponential moving average.
    """

    EPS = 1e-8  # small: some feature dimensions vary on the scale of 1e-3

    def __init__(self, dim: int, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                xf = x.detach().float()
                if not self.started:
                    self.mean.copy_(xf.mean(0))
                    self.var.copy_(xf.var(0, unbiased=False) if len(xf) > 1 else torch.ones_like(self.var))
                    self.started.fill_(True)
                else:
                    self.mean.lerp_(xf.mean(0), self.momentum)
                    self.var.lerp_((xf - self.mean).pow(2).mean(0), self.momentum)
        return (x - self.mean) / (self.var + self.EPS).sqrt()
