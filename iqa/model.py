"""DiffV2IQA: diffusion restoration network + VCG branch + VDA branch, fused as S = S1 + lambda*S2."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from iqa.backbones import Backbone
from iqa.config import ModelConfig
from iqa.diffusion import Diffusion
from iqa.vcg import VCG
from iqa.vda import VDA

N_STATES = 4  # x, y0, y1, y2
WEIGHT_TOLERANCE = 1e-5  # VCG weight maps closer than this everywhere count as the same (`fixed_vcg_weights`)
PROBE_BLOCK = 16  # px: the block size of the piecewise-flat probe image


@dataclass
class Features:
    """Backbone outputs for B crops; with frozen backbones these can be cached.

    vcg: (B, C_sel, g, g) selected intermediate maps of all states; vda: (B, 4, D) global vectors.
    """

    vcg: torch.Tensor | None
    vda: torch.Tensor | None


@dataclass
class Quality:
    """Model outputs for B crops: scores (B,) and per-patch maps (B, g, g) of each branch."""

    score: torch.Tensor
    s1: torch.Tensor | None = None
    f1: torch.Tensor | None = None
    w1: torch.Tensor | None = None
    s2: torch.Tensor | None = None
    f2: torch.Tensor | None = None
    w2: torch.Tensor | None = None


class DiffV2IQA(nn.Module):
    """states: (B, 4, 3, h, w) crops of x, y0, y1, y2 in [-1, 1] -> `Quality`.

    `restore` runs the diffusion network on the distorted image to make y0, y1, y2. Without diffusion
    (`use_diffusion=False`) every state is x and the backbone runs on the first state only.
    `load_pretrained=False` skips backbone weight loading (weights then come from a checkpoint).
    """

    _trained_counts: dict[str, int] | None = None  # parameter counts before `fold_batchnorm`, once folded

    def __init__(self, cfg: ModelConfig, load_pretrained: bool = True):
        super().__init__()
        if not (cfg.use_vcg or cfg.use_vda):
            raise ValueError("at least one branch (use_vcg, use_vda) must be enabled")
        self.cfg = cfg
        self.diffusion = Diffusion(cfg.diffusion) if cfg.use_diffusion else None
        share = cfg.vda.share_vcg_backbone or not cfg.use_vda
        self.backbone = Backbone(cfg.vcg.backbone, load_pretrained) if (cfg.use_vcg or share) else None
        self.vda_backbone = None
        if cfg.use_vda and not cfg.vda.share_vcg_backbone:
            self.vda_backbone = Backbone(cfg.vda.backbone, load_pretrained)
        self.vcg = VCG(cfg.vcg, self.backbone.channels) if cfg.use_vcg else None
        vda_src = self.vda_backbone or self.backbone
        self.vda = VDA(cfg.vda, vda_src.head_dim(cfg.vda.feature)) if cfg.use_vda else None
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    def weights_sources(self) -> dict[str, str]:
        out = {}
        if self.backbone is not None:
            out[self.cfg.vcg.backbone.name] = self.backbone.weights_source
        if self.vda_backbone is not None:
            out[self.cfg.vda.backbone.name] = self.vda_backbone.weights_source
        return out

    def to_channels_last(self) -> "DiffV2IQA":
        """Store the backbones' and heads' weights in NHWC (faster oneDNN convolutions on CPUs) but keep
        the diffusion U-Net in NCHW: its GroupNorm runs ~19x slower on channels_last bf16 tensors."""
        for name, child in self.named_children():
            if name != "diffusion":
                child.to(memory_format=torch.channels_last)
        return self

    def fold_batchnorm(self) -> "DiffV2IQA":
        """For inference only: fold the backbones' BatchNorms into their convolutions
        (`backbones.fold_batchnorm`; the U-Net and the heads have none). The weights then no longer
        match a checkpoint's layout, so `save_checkpoint` refuses the model."""
        if not self.batchnorm_folded:
            self._trained_counts = self.parameter_counts()
            for b in (self.backbone, self.vda_backbone):
                if b is not None:
                    b.fold_batchnorm()
        return self

    @property
    def batchnorm_folded(self) -> bool:
        return self._trained_counts is not None

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts per part, as trained (before any BatchNorm folding)."""
        if self._trained_counts is not None:
            return dict(self._trained_counts)
        return {"diffusion": count_parameters(self.diffusion),
                "backbones": count_parameters(self.backbone) + count_parameters(self.vda_backbone),
                "vcg": count_parameters(self.vcg), "vda": count_parameters(self.vda), "total": count_parameters(self)}

    @torch.no_grad()
    def fixed_vcg_weights(self, seed: int = 0) -> torch.Tensor | None:
        """The VCG per-patch weight map (g, g) when it is the same on unlike images, else None.

        The probes are four generated crops (smooth gradient, fine noise, flat blocks, stripes), each as
        every state: a weight head that gives all of them one map weighs a patch by its place in the crop,
        not by what it shows, so that map is no explanation of an image."""
        if self.vcg is None or self.backbone is None:
            return None
        c = self.cfg.crop
        p = next(self.parameters())
        g = torch.Generator().manual_seed(seed)
        ramp = torch.linspace(-1, 1, c)
        smooth = (ramp[None, :] * 0.8 + 0.2 * torch.sin(6 * ramp)[:, None]).expand(3, c, c)
        noise = torch.rand(3, c, c, generator=g) * 2 - 1
        blocks = torch.rand(3, c // PROBE_BLOCK, c // PROBE_BLOCK, generator=g).repeat_interleave(
            PROBE_BLOCK, 1).repeat_interleave(PROBE_BLOCK, 2) * 2 - 1
        stripes = torch.sign(torch.sin((ramp[None, :] + ramp[:, None]) * 20)).expand(3, c, c)
        was_training = self.training
        self.eval()
        try:
            first = None
            for x in (smooth, noise, blocks, stripes):  # one at a time: a head that reads its input stops at two
                maps, _ = self.backbone(self.normalise(x[None].to(p.device, p.dtype)), maps=True)
                w = self.vcg(self.vcg.select([maps] * N_STATES))[2][0].float()  # the crop as every state
                if first is None:
                    first = w
                elif not bool(((w - first).abs() <= WEIGHT_TOLERANCE).all()):
                    return None
        finally:
            self.train(was_training)
        return first.cpu()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, h, w) in [-1, 1] -> the backbones' normalised input."""
        return ((x + 1) / 2 - self.mean) / self.std

    def backbone_input(self, states: torch.Tensor) -> tuple[torch.Tensor, int]:
        """states (B, 4, 3, h, w) in [-1, 1] -> normalised backbone input (nB, 3, h, w) and n, the
        states per crop that need a pass: 4, or 1 without diffusion (every state is x)."""
        n = N_STATES if self.cfg.use_diffusion else 1
        return self.normalise(states[:, :n].flatten(0, 1)), n

    def features(self, states: torch.Tensor) -> Features:
        b = states.shape[0]
        x, n = self.backbone_input(states)
        head = self.cfg.vda.feature if (self.vda is not None and self.vda_backbone is None) else None
        vcg = vda = None
        if self.backbone is not None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.vcg.backbone.frozen):
                maps, g = self.backbone(x, maps=self.vcg is not None, head=head)
            if self.vcg is not None:
                per_state = [[m.view(b, n, *m.shape[1:])[:, min(s, n - 1)] for m in maps] for s in range(N_STATES)]
                vcg = self.vcg.select(per_state)
            if g is not None:
                vda = g.view(b, n, -1).expand(b, N_STATES, -1)
        if self.vda_backbone is not None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.vda.backbone.frozen):
                _, g = self.vda_backbone(x, maps=False, head=self.cfg.vda.feature)
            vda = g.view(b, n, -1).expand(b, N_STATES, -1)
        return Features(vcg=vcg, vda=vda)

    def heads(self, feats: Features) -> Quality:
        out = Quality(score=torch.zeros(()))
        score = 0
        if self.vcg is not None:
            out.s1, out.f1, out.w1 = self.vcg(feats.vcg)
            score = score + self.cfg.vcg_weight * out.s1
        if self.vda is not None:
            out.s2, out.f2, out.w2 = self.vda(feats.vda)
            score = score + self.cfg.vda_weight * out.s2
        out.score = score
        return out

    def forward(self, states: torch.Tensor) -> Quality:
        return self.heads(self.features(states))


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
