"""Conditional diffusion restoration network (the paper's SR3-based one): training loss and samplers.

The distorted image is the condition, the pristine reference the target; both (B, 3, H, W) in
[−1, 1]. `restore` runs the reverse process from pure noise and returns the restored image y0 and
two noisy intermediate states y1 (less noisy) and y2 (more noisy) for the quality branches.

Paper: the process diffuses the reference image itself and the U-Net predicts the noise ε. Options
(`DiffusionConfig.target` / `.predict`) let it diffuse the residual reference − distorted instead
(as SRDiff does) and predict the clean sample x0; with both, the U-Net's last convolution starts at
zero so an untrained network returns the distorted image unchanged instead of noise (the `lite`
preset). States are always returned in image space: y = distorted + residual state. With
`DiffusionConfig.unet_scale` > 1 the U-Net sees its input average-pooled and its prediction is
upsampled (`Diffusion.predict`), except in the last `full_res_steps` sampling steps; the states stay
at full resolution. Both are sampling settings: `loss` always trains the U-Net at full resolution.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from iqa.config import DiffusionConfig
from iqa.schedule import alpha_bars
from iqa.unet import UNet

SAMPLERS = ("ancestral", "ddim")
LOSSES = ("l1", "l2")
TARGETS = ("image", "residual")
PREDICTIONS = ("eps", "x0")
IMAGE_CHANNELS = 3


@dataclass
class Restoration:
    """Output of `Diffusion.restore`. Images are (B, 3, H, W) in [−1, 1] at the input size.

    `steps` = (t1, t2) are the timesteps of y1 and y2 on the `n_steps`-step sampling schedule and
    `alpha_bars` their signal levels ᾱ (noise std = sqrt(1 − ᾱ)); ᾱ(y1) > ᾱ(y2).
    """

    y0: torch.Tensor
    y1: torch.Tensor
    y2: torch.Tensor
    steps: tuple[int, int]
    alpha_bars: tuple[float, float]
    sampler: str
    n_steps: int


def _randn(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of `shape` on `like`'s device/dtype, drawn on the generator's own device."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _check_images(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != IMAGE_CHANNELS:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor in [-1, 1], got {shape}")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad (B, C, H, W) so H and W are multiples of `multiple`; returns the padded tensor and the
    (left, right, top, bottom) pads. Reflect padding, or replicate where the image is too small to reflect."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph == 0 and pw == 0:
        return x, pads
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    return F.pad(x, pads, mode=mode), pads


def check_full_res_steps(steps: int) -> int:
    """`steps` if it is a valid `DiffusionConfig.full_res_steps` (an integer >= 0), else a ValueError."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"diffusion full_res_steps must be an integer >= 0, got {steps!r}")
    return steps


def check_unet_scale(scale: int) -> int:
    """`scale` if it is a valid `DiffusionConfig.unet_scale` (an integer >= 1), else a ValueError."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"diffusion unet_scale must be an integer >= 1, got {scale!r}")
    return scale


class Diffusion(nn.Module):
    """SR3-style conditional diffusion: `loss(x0, cond)` for training, `restore(cond)` for inference."""

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        if cfg.loss not in LOSSES:
            raise ValueError(f"unknown diffusion loss {cfg.loss!r}; choose one of {LOSSES}")
        if cfg.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {cfg.sampler!r}; choose one of {SAMPLERS}")
        if cfg.target not in TARGETS:
            raise ValueError(f"unknown diffusion target {cfg.target!r}; choose one of {TARGETS}")
        if cfg.predict not in PREDICTIONS:
            raise ValueError(f"unknown diffusion prediction {cfg.predict!r}; choose one of {PREDICTIONS}")
        self.cfg = cfg
        self.unet = UNet(cfg.unet)
        if cfg.target == "residual" and cfg.predict == "x0":
            nn.init.zeros_(self.unet.final.conv.weight)  # predicted residual 0: y0 = the distorted input
            nn.init.zeros_(self.unet.final.conv.bias)
        check_unet_scale(cfg.unet_scale)
        check_full_res_steps(cfg.full_res_steps)
        # sqrt(ᾱ_0..ᾱ_T) of the training schedule (not a buffer: rebuilt from cfg, not in checkpoints)
        self._train_sqrt_ab = alpha_bars(cfg, cfg.train_steps).sqrt()

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (the U-Net's, times `unet_scale`); `restore` pads to it."""
        return self.cfg.unet.size_multiple * self.cfg.unet_scale

    def predict(self, x: torch.Tensor, gamma: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """The U-Net's prediction for concat([cond, x_t]) (B, 6, H, W) at noise level γ (B,) -> (B, 3, H, W),
        run at 1/`scale` resolution (default `unet_scale`) when that is > 1 (input average-pooled, output
        bilinearly upsampled)."""
        s = self.cfg.unet_scale if scale is None else scale
        if s == 1:
            return self.unet(x, gamma)
        return F.interpolate(self.unet(F.avg_pool2d(x, s), gamma), scale_factor=s, mode="bilinear",
                             align_corners=False)

    def forward(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Same as `loss` (so wrappers such as DataParallel can call the module)."""
        return self.loss(x0, cond, generator=generator)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss (scalar): noise x0 to a random continuous level γ and regress ε (or x0).

        t ~ U{1..T}, γ ~ U(sqrt ᾱ_t, sqrt ᾱ_{t−1}), x_t = γ·x0 + sqrt(1 − γ²)·ε; L1 / L2 (mean) between
        U-Net(concat[cond, x_t], γ) and ε (or x0). x0 = the reference, or reference − cond with
        target "residual". reference, cond (distorted): (B, 3, h, w) in [−1, 1].
        """
        _check_images("x0 (reference)", x0)
        _check_images("cond (distorted)", cond)
        if x0.shape != cond.shape:
            raise ValueError("reference and distorted batches differ in shape: "
                             f"{tuple(x0.shape)} vs {tuple(cond.shape)}")
        if self.cfg.target == "residual":
            x0 = x0 - cond
        b = x0.shape[0]
        steps = self.cfg.train_steps
        device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(1, steps + 1, (b,), generator=generator, device=device).cpu()
        hi, lo = self._train_sqrt_ab[t - 1], self._train_sqrt_ab[t]
        u = torch.rand((b,), generator=generator, device=device, dtype=torch.float64).cpu()
        gamma = (lo + (hi - lo) * u).to(device=x0.device, dtype=x0.dtype)
        eps = _randn(tuple(x0.shape), x0, generator)
        g = gamma[:, None, None, None]
        x_t = g * x0 + (1 - g**2).sqrt() * eps
        out = self.unet(torch.cat([cond, x_t], dim=1), gamma)  # full resolution: unet_scale is for sampling
        want = x0 if self.cfg.predict == "x0" else eps
        if self.cfg.loss == "l1":
            return F.l1_loss(out, want)
        return F.mse_loss(out, want)

    @torch.no_grad()
    def restore(
        self,
        cond: torch.Tensor,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        keep_steps: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
        noise: torch.Tensor | None = None,
    ) -> Restoration:
        """Restore distorted images cond (B, 3, H, W) in [−1, 1], any H×W, from pure noise.

        `steps` / `sampler` / `keep_steps` default to the config. Sampler "ancestral" is the paper's
        Algorithm 2; "ddim" is deterministic (eta = 0) given the starting noise. keep_steps = (t1, t2)
        with 1 <= t1 < t2 <= steps: y1 = x_{t1}, y2 = x_{t2}. `progress(i, n)` is called after each of
        the n steps. `noise`: the starting noise, shaped like `cond` (default: drawn from `generator`),
        so that windows of one noise field restore alike wherever they are cut. The U-Net runs in eval
        mode (its train/eval mode is restored afterwards).
        """
        _check_images("cond (distorted image)", cond)
        n, sampler, (t1, t2) = self._sampling(steps, sampler, keep_steps)
        h, w = cond.shape[-2:]
        cond_p, (left, _, top, _) = pad_to_multiple(cond, self.size_multiple)
        ab = alpha_bars(self.cfg, n).tolist()
        residual = self.cfg.target == "residual"
        # x̂0 is clamped so that the restored image stays in [−1, 1]
        lo, hi = (-1 - cond_p, 1 - cond_p) if residual else (-1.0, 1.0)
        if noise is None:
            x = _randn(tuple(cond_p.shape), cond_p, generator)
        elif noise.shape != cond.shape:
            raise ValueError(f"starting noise {tuple(noise.shape)} must have the shape of cond {tuple(cond.shape)}")
        else:
            x = pad_to_multiple(noise.to(cond_p), self.size_multiple)[0]
        kept = {n: x} if t2 == n else {}

        was_training = self.unet.training
        self.unet.eval()
        try:
            for i, t in enumerate(range(n, 0, -1), start=1):
                a_t, a_prev = ab[t], ab[t - 1]
                gamma = torch.full((x.shape[0],), a_t**0.5, device=x.device, dtype=x.dtype)
                scale = 1 if t <= self.cfg.full_res_steps else self.cfg.unet_scale
                out = self.predict(torch.cat([cond_p, x], dim=1), gamma, scale)
                if self.cfg.predict == "x0":
                    x0_hat = out
                else:
                    x0_hat = (1 / a_t) ** 0.5 * x - (1 / a_t - 1) ** 0.5 * out
                x0_hat = torch.clamp(x0_hat, lo, hi)
                if sampler == "ancestral":
                    x = self._ancestral_step(x, x0_hat, a_t, a_prev, last=t == 1, generator=generator)
                else:
                    eps = (x - a_t**0.5 * x0_hat) / (1 - a_t) ** 0.5  # consistent with the clamped x̂0
                    x = a_prev**0.5 * x0_hat + (1 - a_prev) ** 0.5 * eps
                if t - 1 in (t1, t2):
                    kept[t - 1] = x
                if progress is not None:
                    progress(i, n)
        finally:
            self.unet.train(was_training)

        def crop(z: torch.Tensor) -> torch.Tensor:
            if residual:
                z = cond_p + z
            return z[..., top:top + h, left:left + w].clamp(-1, 1)

        return Restoration(
            y0=crop(x), y1=crop(kept[t1]), y2=crop(kept[t2]), steps=(t1, t2),
            alpha_bars=(float(ab[t1]), float(ab[t2])), sampler=sampler, n_steps=n,
        )

    def _sampling(self, steps: int | None, sampler: str | None,
                  keep_steps: tuple[int, int] | None) -> tuple[int, str, tuple[int, int]]:
        """`restore`'s (steps, sampler, (t1, t2)), the config's where not given; ValueError when invalid."""
        n = self.cfg.sample_steps if steps is None else steps
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"sampling steps must be an integer >= 1, got {n!r}")
        sampler = self.cfg.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
        keep = self.cfg.keep_steps if keep_steps is None else keep_steps
        try:
            t1, t2 = (int(k) for k in keep)
        except (TypeError, ValueError):
            raise ValueError(f"keep_steps must be two timesteps (t1, t2), got {keep!r}") from None
        if not 1 <= t1 < t2 <= n:
            raise ValueError(
                f"keep_steps {(t1, t2)} invalid for {n} sampling steps: need 1 <= t1 < t2 <= {n} "
                "(t1 = less noisy state y1, t2 = more noisy state y2)"
            )
        return n, sampler, (t1, t2)

    @staticmethod
    def _ancestral_step(x: torch.Tensor, x0_hat: torch.Tensor, a_t: float, a_prev: float, *, last: bool,
                        generator: torch.Generator | None) -> torch.Tensor:
        """One step of Algorithm 2: sample x_{t−1} ~ q(x_{t−1} | x_t, x̂0) (the posterior mean at t = 1)."""
        beta = 1 - a_t / a_prev
        coef_x0 = beta * a_prev**0.5 / (1 - a_t)
        coef_xt = (1 - a_prev) * (1 - beta) ** 0.5 / (1 - a_t)
        mean = coef_x0 * x0_hat + coef_xt * x
        if last:
            return mean
        var = beta * (1 - a_prev) / (1 - a_t)
        return mean + var**0.5 * _randn(tuple(x.shape), x, generator)
