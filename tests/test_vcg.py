"""VCG branch: whether its per-patch weights read the image or are one fixed pattern."""
from __future__ import annotations

import torch
from torch import nn

from tests.helpers import tiny_model


class FixedPattern(nn.Module):
    """A weight head that ignores its tokens (B, N, C) and gives one 0/1 pattern over the N positions."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("pattern", (torch.arange(n) % 3 == 0).float())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pattern.expand(tokens.shape[0], -1)[..., None]


def test_weights_of_a_fresh_head_read_the_input():
    assert not tiny_model().vcg.weights_fixed()


def test_a_constant_or_positional_weight_head_is_fixed():
    model = tiny_model()
    last = model.vcg.head.weight[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(30.0)  # sigmoid saturates: every patch weighs 1
    assert model.vcg.weights_fixed()
    model.vcg.head.weight = FixedPattern(model.cfg.vcg.grid ** 2)
    assert model.vcg.weights_fixed() and not model.vcg.training  # the probe leaves eval mode as it was
    model.vcg.train()
    assert model.vcg.weights_fixed() and model.vcg.training
