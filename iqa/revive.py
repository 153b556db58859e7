"""Restart the VCG branch's per-patch score layer (`train-rank --revive-vcg`).

A ReLU score head whose output is 0 everywhere gets no gradient, so no local loss can teach it; a revived
one is a normalised MLP with a sigmoid, every patch starting near a mid label, so that the local quality
maps can put the patch scores on the 0-1 label scale.
"""
from __future__ import annotations

import math

from torch import nn

from iqa.attention import score_mlp
from iqa.model import DiffV2IQA

REVIVE_START, REVIVE_STD = 0.6, 1e-3  # a restarted VCG score layer: patch scores start near a mid label
REVIVE_FUSION = (0.5, 0.5)  # (vcg_weight, vda_weight) of a revived model: S is the mean of S1 and S2


def revived_score_mlp(dim: int, dropout: float, start: float = REVIVE_START, std: float = REVIVE_STD) -> nn.Sequential:
    """A fresh per-patch score MLP, normalised and with a sigmoid, every patch at `start`. The LayerNorm
    keeps the sigmoid out of saturation: the tokens reach ~1e3, so without it the patch scores end at
    exactly 0 or 1 within a few steps and tie."""
    mlp = score_mlp(dim, dropout, "sigmoid", norm=True)
    nn.init.normal_(mlp[-2].weight, std=std)
    nn.init.constant_(mlp[-2].bias, math.log(start / (1 - start)))
    return mlp


def revive_score_head(model: DiffV2IQA, local_skip: int = 0) -> None:
    """Restart the VCG branch's per-patch score MLP (`revived_score_mlp`): a ReLU score head whose output
    is 0 everywhere gets no gradient, so no local loss can teach it. The fusion becomes the mean of S1 and
    S2 (`REVIVE_FUSION`): the local targets put the patch scores, hence S1, on the label scale, where S2
    already is; a mid-label start keeps S near the labels, and its order that of S2, while they learn."""
    if model.vcg is None:
        raise ValueError("--revive-vcg: this model has no VCG branch")
    cfg = model.cfg.vcg
    cfg.score_activation, cfg.score_norm = "sigmoid", True
    model.cfg.vcg_weight, model.cfg.vda_weight = REVIVE_FUSION
    if local_skip:
        model.vcg.add_local_skip(local_skip)
    head = model.vcg.head
    head.score = revived_score_mlp(head.score[-2].in_features, cfg.dropout)
