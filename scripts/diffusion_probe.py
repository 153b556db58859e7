"""Diagnostics for a `train-diffusion` run: does its network restore, and at which image sizes?

For held-out (distorted, reference) pairs of the run's own data and split (the split's val part, or
the groups `train-diffusion` held out), at each crop size asked for, it prints the PSNR against the
reference of:

- `input`: the distorted crop;
- `t=k`: the network's one-step estimate of the clean image at the sampler's level t = k, given the
  *true* target noised to that level (what training asks of it). At low noise this can beat the
  input by denoising the noisy truth it is handed; at the highest level (t = n, almost pure noise)
  the input carries no truth, so that column is what the network restores from the distorted image
  alone;
- `restore`: y0 of the full sampler (`Diffusion.restore`), what the quality model is given.

Both the raw weights and the EMA weights of RUN/state.pt are probed (the checkpoint RUN/last holds
the EMA weights when the run used --ema). One global MSE per cell (identical pairs do not make it
infinite). Deterministic: the same pairs, windows and noise every time.

    python scripts/diffusion_probe.py runs/diffusion [--sizes 64 128 224] [--pairs 48] [--kinds KIND ... | all]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from iqa.diffusion import Diffusion
from iqa.schedule import alpha_bars
from iqa.train_diffusion import (DiffusionTrainOptions, PairBank, build_model, kind_names,
                                 of_kinds, pair_records)

PEAK_SQUARED = 4.0  # images in [-1, 1]: peak-to-peak range 2
EMA_PREFIX = "module."


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two batches in [-1, 1] from their global mean squared error."""
    return float(10 * torch.log10(PEAK_SQUARED / ((a - b) ** 2).mean()))


def run_options(run: Path) -> DiffusionTrainOptions:
    """The options the run was started with (RUN/options.json)."""
    return DiffusionTrainOptions(**json.loads((run / "options.json").read_text()))


def networks(run: Path) -> dict[str, Diffusion]:
    """{"raw": ..., "ema": ...} networks from RUN/state.pt (the latest saved step; a run stopped
    before its end has no RUN/last), configured as the run's training built them."""
    cfg = build_model(run_options(run)).cfg
    state = torch.load(run / "state.pt", map_location="cpu", weights_only=True)
    out = {}
    for name, key in (("raw", "diffusion"), ("ema", "ema")):
        if key not in state:
            continue
        sd = {k.removeprefix(EMA_PREFIX): v for k, v in state[key].items() if k != "n_averaged"}
        net = Diffusion(cfg.diffusion)
        net.load_state_dict(sd)
        out[name] = net.eval()
    return out


@torch.no_grad()
def probe(net: Diffusion, dist: torch.Tensor, ref: torch.Tensor, seed: int) -> list[float]:
    """PSNR of the one-step estimate at t = 1..n, then of the sampler's y0. dist, ref: (B, 3, s, s)."""
    cfg = net.cfg
    residual = cfg.target == "residual"
    x0 = ref - dist if residual else ref
    ab = alpha_bars(cfg, cfg.sample_steps)
    g = torch.Generator().manual_seed(seed)
    row = []
    for t in range(1, cfg.sample_steps + 1):
        a = float(ab[t])
        x_t = a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(x0.shape, generator=g)
        out = net.unet(torch.cat([dist, x_t], dim=1), torch.full((len(dist),), a**0.5))
        x0_hat = out if cfg.predict == "x0" else (x_t - (1 - a) ** 0.5 * out) / a**0.5
        row.append(psnr(((dist + x0_hat) if residual else x0_hat).clamp(-1, 1), ref))
    row.append(psnr(net.restore(dist, generator=torch.Generator().manual_seed(seed)).y0, ref))
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a train-diffusion run folder (options.json, state.pt); its data "
                                          "and split are used, the held-out part probed")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224], help="crop sides to probe")
    p.add_argument("--pairs", type=int, default=48, help="held-out pairs (evenly spaced over the val part)")
    p.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                   help="probe only held-out pairs of these distortion kinds (default: the run's own --kinds; "
                        "'all': every kind)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    opts = run_options(args.run)
    kinds = kind_names(args.kinds) or opts.kinds
    opts.kinds = None  # every held-out pair; the kinds asked for are picked below
    _train, held = pair_records(opts)
    if kinds == ("all",):
        kinds = None
    if kinds:
        try:
            held = of_kinds(held, tuple(kinds))
        except ValueError as err:
            sys.exit(f"error: {err}")
    if not held:
        sys.exit(f"error: {args.run}: no held-out pairs to probe")
    bank = PairBank(held[:: max(1, len(held) // args.pairs)][: args.pairs], "loading held-out pairs")
    nets = networks(args.run)
    steps = next(iter(nets.values())).cfg.sample_steps
    step = torch.load(args.run / "state.pt", map_location="cpu", weights_only=True)["step"]
    which = f" of {', '.join(kinds)}" if kinds else ""
    print(f"{args.run} (step {step}): {len(bank.pairs)} held-out pairs{which}, PSNR (dB) against the reference; "
          f"t=1..{steps}: one-step estimate given the noised truth; restore: the sampler's y0")
    print("| size | weights | input | " + " | ".join(f"t={t}" for t in range(1, steps + 1)) + " | restore |")
    print("|---" * (steps + 4) + "|")
    for size in args.sizes:
        dist, ref = bank.batch(len(bank.pairs), size, np.random.default_rng(args.seed))
        for name, net in nets.items():
            row = probe(net, dist, ref, args.seed)
            print(f"| {size} | {name} | {psnr(dist, ref):.2f} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
