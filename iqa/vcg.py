"""Visual compensation guidance (VCG) branch: MANIQA's tail on diffusion-guided features.

Each image state (x, y0, y1, y2) contributes the backbone intermediates named by the 4:2:1:1
selection, resampled to the token grid, plus its own learnable noise-level embedding (zero-init).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iqa.attention import TAB, DualHead, SwinStage, score_mlp
from iqa.config import VCGConfig

STATES = ("x", "y0", "y1", "y2")


def to_grid(m: torch.Tensor, grid: int) -> torch.Tensor:
    """Resample a (B, C, H, W) map to (B, C, grid, grid): area pooling down, bilinear up."""
    if m.shape[-2:] == (grid, grid):
        return m
    if m.shape[-1] > grid:
        return F.adaptive_avg_pool2d(m, grid)
    return F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)


class VCG(nn.Module):
    """feats: (B, C_sel, g, g) selected maps of all states -> (S1 (B,), f1 (B, g, g), w1 (B, g, g)).

    `channels` = channels of each backbone intermediate (in `cfg.backbone.indices` order).
    """

    def __init__(self, cfg: VCGConfig, channels: list[int]):
        super().__init__()
        self.cfg = cfg
        g = cfg.grid
        self.selection = [cfg.select_x, cfg.select_y0, cfg.select_y1, cfg.select_y2]
        self.state_channels = [sum(channels[i] for i in sel) for sel in self.selection]
        self.noise_embed = nn.Parameter(torch.zeros(len(STATES), cfg.noise_embed_dim))
        c_in = sum(self.state_channels) + len(STATES) * cfg.noise_embed_dim
        r0, r1 = cfg.reduce_dims
        d1, d2 = cfg.swin_dims
        swin = dict(resolution=g, depths=cfg.swin_depths, heads=cfg.swin_heads, window=cfg.window,
                    mlp_hidden=cfg.mlp_hidden, drop_path=cfg.drop_path, scale=cfg.swin_scale)
        self.tab1 = nn.Sequential(*[TAB(g * g, cfg.dropout) for _ in range(cfg.tab_blocks)])
        self.reduce = nn.Sequential(nn.Conv2d(c_in, r0, 1), nn.Conv2d(r0, r1, 1),
                                    *([nn.Conv2d(r1, d1, 1)] if r1 != d1 else []))
        self.swin1 = SwinStage(d1, **swin)
        self.tab2 = nn.Sequential(*[TAB(g * g, cfg.dropout) for _ in range(cfg.tab_blocks)])
        self.reduce2 = nn.Conv2d(d1, d2, 1)
        self.swin2 = SwinStage(d2, **swin)
        self.head = DualHead(d2, cfg.dropout, cfg.score_activation, cfg.score_norm)
        self.skip = None
        if cfg.local_skip:
            self.add_local_skip(cfg.local_skip)

    def add_local_skip(self, channels: int) -> None:
        """Feed the score MLP the tokens (normalised) and a normalised 1x1 projection of the selected
        backbone maps, which keep each position's own evidence (`VCGConfig.local_skip`); the score MLP is
        rebuilt for the wider input."""
        self.cfg.local_skip = channels
        d2 = self.cfg.swin_dims[1]
        self.skip = nn.ModuleDict(dict(proj=nn.Conv2d(sum(self.state_channels), channels, 1),
                                       norm=nn.LayerNorm(channels), token_norm=nn.LayerNorm(d2)))
        self.head.score = score_mlp(d2 + channels, self.cfg.dropout, self.cfg.score_activation, self.cfg.score_norm)
        nn.init.constant_(self.head.score[-2].bias, DualHead.INIT_SCORE)

    def patch_score_parameters(self) -> list[nn.Parameter]:
        """The per-patch score MLP and its local skip: the part a revived head learns from scratch."""
        return [*self.head.score.parameters(), *(self.skip.parameters() if self.skip is not None else ())]

    def select(self, maps: list[list[torch.Tensor]]) -> torch.Tensor:
        """maps[state][i] backbone intermediates -> (B, C_sel, g, g), the cacheable backbone part."""
        return torch.cat([to_grid(maps[s][i], self.cfg.grid)
                          for s, sel in enumerate(self.selection) for i in sel], dim=1)

    def forward(self, feats: torch.Tensor):
        b, _, g, _ = feats.shape
        splits = feats.split(self.state_channels, dim=1)
        emb = self.noise_embed[:, :, None, None].expand(-1, -1, g, g)
        x = torch.cat([t for s, f in enumerate(splits) for t in (f, emb[s].expand(b, -1, -1, -1))], dim=1)
        x = self.tab1(x.flatten(2)).view(b, -1, g, g)
        x = self.swin1(self.reduce(x))
        x = self.tab2(x.flatten(2)).view(b, -1, g, g)
        x = self.swin2(self.reduce2(x))
        # The heads run in float32 even under bf16 autocast: bf16 keeps 3 significant digits, which would
        # quantise every patch score and S1 (~2e-3 steps) and tie nearby images.
        with torch.autocast(feats.device.type, enabled=False):
            tokens = x.flatten(2).transpose(1, 2).float()
            score_in = None
            if self.skip is not None:
                local = self.skip["norm"](self.skip["proj"](feats.float()).flatten(2).transpose(1, 2))
                score_in = torch.cat([self.skip["token_norm"](tokens), local], dim=-1)
            s, f, w = self.head(tokens, score_in)
        return s, f.view(b, g, g), w.view(b, g, g)
