"""What a ranking run trains, and at which rates: the backbone stages it frees (BatchNorm statistics
stay fixed), the optimiser's parameter groups, and the rate schedule (warm-up, cosine decay)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from iqa.model import DiffV2IQA

if TYPE_CHECKING:
    from iqa.train_rank import RankConfig


def freeze_norms(module: nn.Module) -> None:
    """Put every BatchNorm in eval mode (running statistics fixed) and stop its affine updates."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            m.requires_grad_(False)


def stages(net: nn.Module) -> list[nn.Module]:
    """A timm network's stages in order: `blocks` (EfficientNet, ViT) or ResNet's layer1-4."""
    if hasattr(net, "blocks"):
        return list(net.blocks)
    return [getattr(net, f"layer{i}") for i in range(1, 5) if hasattr(net, f"layer{i}")]


def prepare(model: DiffV2IQA, cfg: RankConfig) -> list[dict]:
    """Set what trains and return the optimiser's parameter groups (backbone blocks, heads)."""
    if model.diffusion is not None:
        model.diffusion.requires_grad_(False)
    backbone_params = []
    for bcfg, bb in ((model.cfg.vcg.backbone, model.backbone), (model.cfg.vda.backbone, model.vda_backbone)):
        if bb is None:
            continue
        bb.requires_grad_(False)
        bcfg.frozen = cfg.free_from_block is None
        bb.cfg.frozen = bcfg.frozen
        if cfg.free_from_block is not None:
            blocks = stages(bb.model)
            if not 0 <= cfg.free_from_block < len(blocks):
                raise ValueError(f"--free-from-block {cfg.free_from_block}: backbone {bcfg.name} has "
                                f"{len(blocks)} stages (0-{len(blocks) - 1})")
            for blk in blocks[cfg.free_from_block:]:
                blk.requires_grad_(True)
        freeze_norms(bb)
        backbone_params += [p for p in bb.parameters() if p.requires_grad]
    heads = [p for m in (model.vcg, model.vda) if m is not None for p in m.parameters()]
    for p in heads:
        p.requires_grad_(True)
    groups = [{"params": heads, "lr": cfg.lr_heads, "name": "heads"}]
    if cfg.lr_patch_head > 0 and model.vcg is not None:
        patch = model.vcg.patch_score_parameters()
        own = {id(p) for p in patch}
        groups = [{"params": [p for p in heads if id(p) not in own], "lr": cfg.lr_heads, "name": "heads"},
                  {"params": patch, "lr": cfg.lr_patch_head, "name": "patch-head"}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": cfg.lr_backbone, "name": "backbone"})
    for g in groups:
        g["base_lr"] = g["lr"]
    return groups


def rate_factor(step: int, warmup_steps: int = 0, decay_steps: int = 0, floor: float = 0.0) -> float:
    """Share of the base rate at `step` (counting from 1): a linear warm-up over `warmup_steps`, times a
    cosine from 1 at the warm-up's end down to `floor` at `decay_steps` (then `floor`); 0 steps: none.
    AdamW's first steps on a fresh optimiser move every weight by about the full rate, whatever its
    gradient: from trained weights that is a shock the model first has to recover from (the warm-up).
    A constant rate on a replayed stream swings between snapshots minutes apart (docs/LEVELS.md, the
    GPU run): the decay lets a run end on settled weights instead of a lucky or unlucky moment."""
    factor = 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)
    if decay_steps > 0:
        span = max(1, decay_steps - warmup_steps)
        done = min(1.0, max(0.0, (step - warmup_steps) / span))
        factor *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))
    return factor


def set_rates(opt: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's rate to its base rate times `factor`."""
    for g in opt.param_groups:
        g["lr"] = g.setdefault("base_lr", g["lr"]) * factor  # a state saved before base_lr existed has none
