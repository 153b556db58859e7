"""Visual difference analysis (VDA) branch: global-feature differences through RTAB (design §3)."""
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
        self.rtab = RTAB(dim_in, cfg.grid, cfg.token_dim, cfg.dropout)
        self.tab = TAB(cfg.grid * cfg.grid, cfg.dropout)
        self.head = DualHead(cfg.token_dim, cfg.dropout)

    def forward(self, g: torch.Tensor):
        x, y0, y1, y2 = g.unbind(1)
        tokens = self.rtab(x, (x - y0).abs(), (x - y1).abs(), (x - y2).abs())  # (B, N, c)
        tokens = self.tab(tokens.transpose(1, 2)).transpose(1, 2)
        s, f, w = self.head(tokens)
        b = g.shape[0]
        return s, f.view(b, self.grid, self.grid), w.view(b, self.grid, self.grid)
