"""Attention blocks shared by the two quality branches.

- `TAB`: MANIQA's transposed attention (channel attention; Linear layers act on the token axis).
- `RTAB`: residual attention between the three feature differences of the VDA branch.
- `SwinStage`: MANIQA's Swin stage (timm Swin blocks + conv3x3/ReLU, scaled residual per layer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerStage
from torch import nn


class TAB(nn.Module):
    """Transposed attention block. x: (B, C, N) -> (B, C, N).

    q, k, v = Linear(N -> N) on the token axis; attn = softmax(q k^T / sqrt(N)) is (C x C).
    """

    def __init__(self, tokens: int, dropout: float = 0.1):
        super().__init__()
        self.q = nn.Linear(tokens, tokens)
        self.k = nn.Linear(tokens, tokens)
        self.v = nn.Linear(tokens, tokens)
        self.scale = tokens ** -0.5
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = (self.q(x) @ self.k(x).transpose(-2, -1) * self.scale).softmax(dim=-1)
        return x + self.drop(attn @ self.v(x))


class RTAB(nn.Module):
    """Residual attention over feature differences of the VDA branch.

    Each input vector (B, D) becomes a token map (B, N, c): Linear(D -> N) gives one value per token
    of the grid x grid layout, and a 3x3 conv lifts it to c channels (a full Linear(D -> N*c) would
    cost D*N*c parameters). Then out = softmax(Q K^T / sqrt(c)) V + P(g), with Q from |g - g0|,
    K from |g - g1|, V from |g - g2| and P(g) the same token projection of g itself.
    """

    def __init__(self, dim_in: int, grid: int, channels: int, dropout: float = 0.1):
        super().__init__()
        self.grid = grid
        self.q, self.k, self.v, self.res = (TokenMap(dim_in, grid, channels) for _ in range(4))
        self.scale = channels ** -0.5
        self.drop = nn.Dropout(dropout)

    def forward(self, g: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(d0), self.k(d1), self.v(d2)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # (B, N, N)
        return self.res(g) + self.drop(attn @ v)  # (B, N, c)


class TokenMap(nn.Module):
    """(B, D) vector -> (B, N, c) tokens on a grid x grid layout (Linear to the grid, conv3x3 lift)."""

    def __init__(self, dim_in: int, grid: int, channels: int):
        super().__init__()
        self.grid = grid
        self.linear = nn.Linear(dim_in, grid * grid)
        self.lift = nn.Conv2d(1, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.linear(x).view(-1, 1, self.grid, self.grid)
        return self.lift(m).flatten(2).transpose(1, 2)


class SwinStage(nn.Module):
    """MANIQA-style Swin stage. x: (B, C, H, W) -> (B, C, H, W).

    One layer per entry of `depths`: Swin blocks (window attention, shifted on odd blocks, relative
    position bias) -> conv3x3 -> ReLU, then x = scale * layer(x) + x.
    """

    def __init__(self, dim: int, resolution: int, depths: tuple[int, ...], heads: tuple[int, ...],
                 window: int, mlp_hidden: int, drop_path: float, scale: float):
        super().__init__()
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.scale = scale
        self.blocks = nn.ModuleList()
        self.convs = nn.ModuleList()
        start = 0
        for depth, n_heads in zip(depths, heads):
            self.blocks.append(SwinTransformerStage(
                dim=dim, out_dim=dim, input_resolution=(resolution, resolution), depth=depth,
                downsample=False, num_heads=n_heads, window_size=window, mlp_ratio=mlp_hidden / dim,
                qkv_bias=True, drop_path=rates[start:start + depth]))
            self.convs.append(nn.Conv2d(dim, dim, 3, padding=1))
            start += depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blocks, conv in zip(self.blocks, self.convs):
            y = blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # timm Swin works in NHWC
            x = self.scale * F.relu(conv(y)) + x
        return x


SCORE_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def score_mlp(dim: int, dropout: float, activation: str, norm: bool = False) -> nn.Sequential:
    """(B, N, dim) tokens -> (B, N, 1) per-token scores: [LayerNorm,] Linear, ReLU, Dropout, Linear, activation.
    The score layer is always at index -2."""
    layers = [nn.LayerNorm(dim)] if norm else []
    return nn.Sequential(*layers, nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, 1),
                         SCORE_ACTIVATIONS[activation]())


class DualHead(nn.Module):
    """Per-token score and weight heads; pooled score = sum(f * w) / sum(w).

    tokens: (B, N, C) -> score (B,), f (B, N) >= 0 (in (0, 1) with `score_activation="sigmoid"`),
    w (B, N) in (0, 1). `score_norm` puts a LayerNorm before the score MLP.
    """

    EPS = 1e-8
    INIT_SCORE = 0.5  # labels are normalised to [0, 1]

    def __init__(self, dim: int, dropout: float = 0.1, score_activation: str = "relu", score_norm: bool = False):
        super().__init__()
        if score_activation not in SCORE_ACTIVATIONS:
            raise ValueError(f"score activation {score_activation!r}: choose one of {', '.join(SCORE_ACTIVATIONS)}")
        self.score = score_mlp(dim, dropout, score_activation, score_norm)
        self.weight = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(dim, 1), nn.Sigmoid())
        # Start the score inside the label range so the final ReLU is not dead for every token.
        nn.init.constant_(self.score[-2].bias, self.INIT_SCORE)

    def forward(self, tokens: torch.Tensor, score_in: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`score_in` (B, N, C'), when given, feeds the score MLP instead of `tokens` (the weights keep them)."""
        f = self.score(tokens if score_in is None else score_in).squeeze(-1)
        w = self.weight(tokens).squeeze(-1)
        return (f * w).sum(-1) / (w.sum(-1) + self.EPS), f, w
