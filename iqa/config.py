"""Typed configuration for DiffV2IQA.

Every checkpoint stores its `ModelConfig` as JSON, so a checkpoint alone is enough to rebuild
the model. Presets (`paper`, `lite`, `tiny`) are plain instances; see `preset()`.
Numbers follow the paper (arXiv 2402.14401) and the MANIQA / SR3 code it builds on.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UNetConfig:
    """SR3 conditional U-Net. Input = concat(condition, noisy sample) on channels."""

    in_channels: int = 6
    out_channels: int = 3
    inner_channel: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4, 8, 8)
    attn_levels: tuple[int, ...] = (3,)  # level index (0 = full resolution); SR3's "res 16" of 128
    res_blocks: int = 2
    dropout: float = 0.2
    norm: str = "batch"  # "batch" (paper) or "group" (SR3)
    norm_groups: int = 32  # used by GroupNorm only
    noise_embed_dim: int = 0  # 0 = inner_channel (SR3)

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (one stride-2 downsample between levels)."""
        return 2 ** (self.levels - 1)


@dataclass
class DiffusionConfig:
    """Noise schedule, training timesteps and the sampler (the paper's Algorithm 2)."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: str = "cosine"  # "cosine" (paper) or "linear" (SR3)
    cosine_s: float = 8e-3
    linear_start: float = 1e-6
    linear_end: float = 1e-2
    train_steps: int = 2000  # T used to draw training noise levels
    sample_steps: int = 50  # steps of the sampling schedule
    sampler: str = "ancestral"  # "ancestral" (paper) or "ddim" (deterministic, eta = 0)
    keep_steps: tuple[int, int] = (5, 10)  # timesteps t whose states x_t are kept: y1 (less noisy), y2
    loss: str = "l1"  # "l1" or "l2" on the network output
    target: str = "image"  # x0 the process diffuses: the "image" (paper) or the "residual" reference − distorted
    predict: str = "eps"  # the U-Net predicts the noise "eps" (paper) or the clean sample "x0"
    # Where diffusion runs: the whole "image" (paper), each 224 "crops" (CPU), or the "region": the smallest
    # rectangle holding every crop when it has fewer pixels than the crops together (overlapping crops
    # share their pixels' restoration), else each crop.
    on: str = "image"
    # The U-Net runs at 1/unet_scale of the image's resolution: its input average-pooled, its prediction
    # upsampled bilinearly; the sampler's states (and their noise) stay at full resolution. 1: the paper.
    # A sampling setting: training (`Diffusion.loss`) always runs the U-Net at full resolution.
    unet_scale: int = 1
    # With unet_scale > 1: the last (least noisy) sampling steps that still run at full resolution, so that
    # the least noisy states take their fine detail from the full-resolution U-Net (with keep_steps (1, 2):
    # y0 with 1, y1 too with 2). 0: every step at 1/unet_scale.
    full_res_steps: int = 0


@dataclass
class BackboneConfig:
    """A timm backbone. `indices` are the intermediate outputs taken (ViT blocks or CNN stages)."""

    name: str = "vit_base_patch8_224"
    indices: tuple[int, ...] = (6, 7, 8, 9)
    pretrained: str = "auto"  # "auto" (registry package / local file / hub when online), "none", or a file path
    frozen: bool = False
    allow_random: bool = False  # with "auto" and no weights reachable: build on random weights instead of failing


@dataclass
class VCGConfig:
    """Visual compensation guidance branch: MANIQA tail on 4:2:1:1 selected features."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # Which intermediate (position in backbone.indices) each image state contributes: x, y0, y1, y2.
    select_x: tuple[int, ...] = (0, 1, 2, 3)
    select_y0: tuple[int, ...] = (0, 1)
    select_y1: tuple[int, ...] = (2,)
    select_y2: tuple[int, ...] = (3,)
    noise_embed_dim: int = 192
    grid: int = 28  # token grid side; 28 x 28 = 784 tokens of 8 x 8 px on a 224 crop
    tab_blocks: int = 2
    reduce_dims: tuple[int, int] = (2304, 768)  # 1x1 convs after the first TABs
    swin_dims: tuple[int, int] = (768, 384)  # stage 1 dim (= reduce_dims[-1]) and stage 2 dim
    swin_depths: tuple[int, ...] = (2, 2)
    swin_heads: tuple[int, ...] = (4, 4)
    window: int = 4
    mlp_hidden: int = 768
    drop_path: float = 0.1
    swin_scale: float = 0.8
    dropout: float = 0.1
    # Last activation of the per-patch score head: "relu" (the paper's, MANIQA's) or "sigmoid", which keeps
    # patch scores on the 0-1 label scale and cannot die (a ReLU head can end at 0 for every patch).
    score_activation: str = "relu"
    # LayerNorm on the tokens before the per-patch score MLP: the tokens reach magnitudes of ~1e3, so an
    # unnormalised sigmoid head saturates at exactly 0 or 1 within a few steps (tied patch scores).
    score_norm: bool = False
    # Channels of a 1x1 projection of the selected backbone maps fed, beside the tokens, to the per-patch
    # score MLP (0: off, the paper). The TAB/Swin trunk loses where a crop is damaged: a per-cell linear
    # probe finds the damaged half at AUC 0.52 on its output, 0.99 on its input (scripts/locality_probe.py).
    local_skip: int = 0


@dataclass
class VDAConfig:
    """Visual difference analysis branch: global features, RTAB, TAB, dual heads."""

    backbone: BackboneConfig = field(
        default_factory=lambda: BackboneConfig(name="resnet50", indices=(4,))
    )
    share_vcg_backbone: bool = False  # reuse the VCG backbone (one pass per state) instead of a second one
    feature: str = "logits"  # "logits" (released code: 1000-d), "pooled" (pre-logits) or "stats" (map mean/std)
    input_norm: bool = False  # standardise g and each difference (running mean / std) before the token maps
    grid: int = 28
    token_dim: int = 64  # channels per token after the Linear to the 784-token layout
    dropout: float = 0.1


@dataclass
class ModelConfig:
    """The whole model: diffusion restoration network + two quality branches + fusion."""

    name: str = "paper"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    vcg: VCGConfig = field(default_factory=VCGConfig)
    vda: VDAConfig = field(default_factory=VDAConfig)
    use_diffusion: bool = True  # False: every state is the distorted image (MANIQA-like ablation)
    use_vcg: bool = True
    use_vda: bool = True
    vda_weight: float = 1.0  # lambda in S = S1 + lambda * S2 (paper eq. 11: plain sum)
    # Weight of S1 in the fusion. 1 is the paper's plain sum; a revived VCG head (train-rank --revive-vcg)
    # uses 0.5 / 0.5, the mean, so that S1, S2 and the per-patch scores all sit on the 0-1 label scale.
    vcg_weight: float = 1.0
    crop: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # backbone input normalisation
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def fusion_text(self) -> str:
        """The fusion formula with its weights, e.g. "S = S1 + 1·S2" or "S = 0.5·S1 + 0.5·S2"."""
        w1 = "" if self.vcg_weight == 1 else f"{self.vcg_weight:g}·"
        return f"S = {w1}S1 + {self.vda_weight:g}·S2"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, d)

    @classmethod
    def from_json(cls, s: str) -> "ModelConfig":
        return cls.from_dict(json.loads(s))


def _from_dict(cls, d: dict[str, Any]):
    """Rebuild a (nested) dataclass from `asdict` output; lists become tuples; unknown keys fail."""
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    for name, value in d.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            value = _from_dict(type(default), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def paper() -> ModelConfig:
    """The paper configuration (GPU): ViT-B/8 blocks 6-9, ResNet-50, SR3 64-ch U-Net, 50 steps."""
    return ModelConfig(name="paper")


def lite() -> ModelConfig:
    """CPU-friendly: same classes, smaller sizes. One shared EfficientNet-Lite0 (ImageNet weights
    available offline), a small U-Net run on the crops, deterministic DDIM with 5 steps, a
    14 x 14 token grid (16 px cells) instead of 28 x 28, one TAB per position instead of two and
    narrower Swin stages (128 / 64). The VDA branch compares the channel mean / std statistics of
    the four backbone stages (`iqa.backbones.map_statistics`), standardised, instead of the logits.
    The diffusion runs on the residual reference − distorted with x0 prediction and GroupNorm (see
    iqa/diffusion.py): untrained, it returns its input, not noise."""
    unet = UNetConfig(inner_channel=8, channel_mults=(1, 2, 4, 8), attn_levels=(), res_blocks=1,
                      dropout=0.1, norm="group", norm_groups=8)
    return ModelConfig(
        name="lite",
        diffusion=DiffusionConfig(unet=unet, sample_steps=5, sampler="ddim", keep_steps=(1, 2),
                                  train_steps=1000, on="region", target="residual", predict="x0"),
        vcg=VCGConfig(
            backbone=BackboneConfig(name="efficientnet_lite0", indices=(1, 2, 3, 4)),
            noise_embed_dim=32, tab_blocks=1, reduce_dims=(256, 128), swin_dims=(128, 64),
            swin_heads=(4, 4), mlp_hidden=128, grid=14, window=7,
        ),
        vda=VDAConfig(backbone=BackboneConfig(name="efficientnet_lite0", indices=(4,)),
                      share_vcg_backbone=True, token_dim=32, grid=14, feature="stats", input_norm=True),
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )


def tiny() -> ModelConfig:
    """Test-size model: random-init tiny backbone, 2 sampling steps. For tests only."""
    cfg = lite()
    cfg.name = "tiny"
    cfg.diffusion.unet = UNetConfig(inner_channel=8, channel_mults=(1, 2, 2, 2), attn_levels=(),
                                    res_blocks=1, dropout=0.0, norm="group", norm_groups=4)
    cfg.diffusion.sample_steps, cfg.diffusion.keep_steps, cfg.diffusion.train_steps = 3, (1, 2), 50
    cfg.vcg.backbone = BackboneConfig(name="resnet10t", indices=(1, 2, 3, 4), pretrained="none")
    cfg.vcg.noise_embed_dim, cfg.vcg.reduce_dims, cfg.vcg.swin_dims = 8, (32, 16), (16, 16)
    cfg.vcg.swin_depths, cfg.vcg.swin_heads, cfg.vcg.mlp_hidden = (1, 1), (2, 2), 16
    cfg.vda.backbone = dataclasses.replace(cfg.vcg.backbone, indices=(4,))
    cfg.vda.token_dim = 8
    return cfg


PRESETS = {"paper": paper, "lite": lite, "tiny": tiny}

# Ablations of the paper (Table 5), as switches on any preset: "lite:vcg-only" etc.
ABLATIONS = {
    "full": {},
    "no-diffusion": {"use_diffusion": False},  # every state is the distorted image (MANIQA-like)
    "vcg-only": {"use_vda": False},
    "vda-only": {"use_vcg": False},
}


def preset(name: str, allow_random_backbone: bool = False) -> ModelConfig:
    """A fresh `ModelConfig` for a preset name, optionally with an ablation: "PRESET[:ABLATION]".
    `allow_random_backbone`: build on random backbone weights when no pretrained ones are reachable
    (otherwise that is an error)."""
    base, _, ablation = name.partition(":")
    if base not in PRESETS:
        raise ValueError(f"unknown preset {base!r}; choose one of {sorted(PRESETS)}")
    if ablation and ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {sorted(ABLATIONS)}")
    cfg = PRESETS[base]()
    if ablation and ablation != "full":
        cfg = dataclasses.replace(cfg, name=name, **ABLATIONS[ablation])
    if allow_random_backbone:
        cfg.vcg.backbone.allow_random = cfg.vda.backbone.allow_random = True
    return cfg
