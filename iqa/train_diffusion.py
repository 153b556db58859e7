"""`python -m iqa train-diffusion`: train the restoration network on (distorted, reference) pairs.

As in the paper: the distorted image is the condition, the pristine reference the target; random
small crops (64x64, the same window on both) with flips, large batches, cosine schedule, L1 on the
U-Net's output (the noise for `paper`; the clean residual for `lite`, see the README).
bf16 autocast on CUDA, optional EMA, resumable (`RUN_DIR/state.pt`), a sample grid
(distorted | y2 | y1 | restored | reference) and PSNR/SSIM of the restoration on held-out pairs.
The result is a normal checkpoint folder (`RUN_DIR/last/`) whose diffusion weights
`python -m iqa train --diffusion RUN_DIR/last` takes.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqa.assess import resolve_device
from iqa.checkpoint import load_checkpoint, save_checkpoint
from iqa.config import preset
from iqa.data.datasets import FORMATS, Record, load_dataset
from iqa.data.splits import load_splits
from iqa.images import load_image
from iqa.model import DiffV2IQA
from iqa.progress import progress_bar
from iqa.training import JsonlLog, atomic_save, autocast, init_distributed, load_state, moving_average, seed_everything

VAL_CROP = 128  # side of the centre crops the restoration is measured on


@dataclass
class DiffusionTrainOptions:
    data: str
    format: str = "generic"
    csv: str | None = None
    split_file: str | None = None
    split_index: int = 0
    kinds: tuple[str, ...] | None = None  # train (and measure) only on pairs of these distortion kinds
    preset: str = "lite"
    init: str | None = None  # start from this checkpoint's diffusion weights (and config)
    out: str = "runs/diffusion"
    steps: int = 2000
    batch: int = 32
    crop: int = 64
    lr: float = 1e-5  # paper: Adam 1e-5 at batch 256
    lr_schedule: str = "cosine"  # "cosine" (annealed to 0 over the steps) or "constant" (the paper's)
    ema: float = 0.0  # EMA decay; 0 = off
    save_every: int = 200  # 0: at the end only
    sample_every: int = 500  # 0: at the end only
    val_pairs: int = 8
    device: str = "auto"
    seed: int = 0


LR_SCHEDULES = ("cosine", "constant")
# The paper's diffusion training (`--preset paper` defaults to it); other presets default to CPU settings.
PAPER_TRAINING = {"batch": 256, "crop": 64, "lr": 1e-5, "lr_schedule": "constant"}
CPU_TRAINING = {"batch": 32, "crop": 64, "lr": 1e-5, "lr_schedule": "cosine"}


def training_defaults(preset_name: str) -> dict:
    """Batch, crop, learning rate and schedule a preset trains with unless told otherwise."""
    return dict(PAPER_TRAINING if preset_name.partition(":")[0] == "paper" else CPU_TRAINING)


@dataclass
class RestorationQuality:
    """PSNR (dB) / SSIM against the reference, of the distorted input and of the restored y0."""

    psnr_distorted: float
    psnr_restored: float
    ssim_distorted: float
    ssim_restored: float
    pairs: int
    per_pair: list[dict] = field(default_factory=list)


def pair_records(opts: DiffusionTrainOptions) -> tuple[list[Record], list[Record]]:
    """(train, held-out) records that have a reference. With a split file: its train / (val or test) parts."""
    if opts.split_file:
        splits = load_splits(opts.split_file)
        train = splits.part(opts.split_index, "train")
        held = splits.part(opts.split_index, "val" if "val" in splits.part_names else "test")
    else:
        ds = load_dataset(opts.data, opts.format, csv=opts.csv)
        groups = sorted({r.group for r in ds.records})
        rng = np.random.default_rng(opts.seed)
        held_groups = set(rng.choice(groups, max(1, len(groups) // 10), replace=False)) if len(groups) > 1 else set()
        train = [r for r in ds.records if r.group not in held_groups]
        held = [r for r in ds.records if r.group in held_groups]
    train, held = [r for r in train if r.ref], [r for r in held if r.ref]
    if opts.kinds:
        train, held = of_kinds(train, opts.kinds), of_kinds(held, opts.kinds, check=False)
    if not train:
        raise SystemExit("error: no (distorted, reference) pairs in the training data: the diffusion network "
                         "trains on datasets with references (synthetic sets, LIVE, CSIQ, TID2013, KADID-10k, PIPAL, "
                         "or a generic CSV with a `ref` column)")
    return train, held


def kind_names(values: list[str] | None) -> tuple[str, ...] | None:
    """--kinds as given (space or comma separated) -> names, or None when not given."""
    names = tuple(n.strip() for v in values or () for n in v.split(",") if n.strip())
    return names or None


def of_kinds(records: list[Record], kinds: tuple[str, ...], check: bool = True) -> list[Record]:
    """The records whose distortion kind (`Record.extra["distortion"]`) is one of `kinds`; with
    `check`, a ValueError when the records carry no kinds or lack one of `kinds`."""
    keep = [r for r in records if str(r.extra.get("distortion")) in kinds]
    if not check:
        return keep
    present = {str(r.extra.get("distortion")) for r in records if r.extra.get("distortion") is not None}
    if records and not present:
        raise ValueError("--kinds: this dataset does not label the distortion kind of its images "
                         "(synthetic sets, LIVE, CSIQ, TID2013 and KADID-10k do); leave --kinds out")
    unknown = sorted(set(kinds) - present)
    if unknown and records:
        raise ValueError(f"--kinds: no pairs of kind {', '.join(unknown)} here; "
                         f"kinds present: {', '.join(sorted(present))}")
    return keep


class PairBank:
    """All training pairs decoded once into memory as uint8 (H, W, 3); references shared."""

    def __init__(self, records: list[Record], desc: str = "loading pairs"):
        self.refs: dict[Path, np.ndarray] = {}
        self.pairs: list[tuple[np.ndarray, Path]] = []
        for r in progress_bar(records, desc=desc, unit="img"):
            if r.ref not in self.refs:
                self.refs[r.ref] = load_image(r.ref).array
            dist = load_image(r.image).array
            if dist.shape != self.refs[r.ref].shape:
                raise SystemExit(f"error: {r.image} is {dist.shape[1]}x{dist.shape[0]} but its reference {r.ref} "
                                 f"is {self.refs[r.ref].shape[1]}x{self.refs[r.ref].shape[0]}; pairs must align")
            self.pairs.append((dist, r.ref))

    def batch(self, n: int, crop: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(distorted, reference) batches (n, 3, crop, crop) in [-1, 1]: same window and flip on both."""
        d_out, r_out = [], []
        for i in rng.integers(0, len(self.pairs), n):
            dist, ref_key = self.pairs[i]
            ref = self.refs[ref_key]
            h, w = dist.shape[:2]
            y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            d, r = dist[y:y + crop, x:x + crop], ref[y:y + crop, x:x + crop]
            if rng.random() < 0.5:
                d, r = d[:, ::-1], r[:, ::-1]
            d_out.append(d)
            r_out.append(r)

        def to_t(a: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 127.5 - 1

        return to_t(d_out), to_t(r_out)


def centre(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return a[y:y + size, x:x + size]


@torch.no_grad()
def measure(diffusion, bank: PairBank, device: torch.device, seed: int,
            grid_path: Path | None = None) -> RestorationQuality:
    """Restore the centre crop of each held-out pair; PSNR/SSIM vs reference; optional sample grid."""
    import piq

    if not bank.pairs:
        return RestorationQuality(math.nan, math.nan, math.nan, math.nan, 0)
    size = min(VAL_CROP, *(min(d.shape[:2]) for d, _ in bank.pairs))
    dist = torch.stack([torch.from_numpy(centre(d, size).copy()) for d, _ in bank.pairs])
    ref = torch.stack([torch.from_numpy(centre(bank.refs[k], size).copy()) for _, k in bank.pairs])

    def to_t(a: torch.Tensor) -> torch.Tensor:  # (N, h, w, 3) uint8 -> (N, 3, h, w) in [-1, 1]
        return a.permute(0, 3, 1, 2).float().to(device) / 127.5 - 1

    gen = torch.Generator(device=device).manual_seed(seed)
    r = diffusion.restore(to_t(dist), generator=gen)

    def as01(t: torch.Tensor) -> torch.Tensor:  # [-1, 1] -> [0, 1] on the CPU
        return ((t.float() + 1) / 2).clamp(0, 1).cpu()

    d01, r01, y01 = as01(to_t(dist)), as01(to_t(ref)), as01(r.y0)
    p_d = piq.psnr(d01, r01, reduction="none")
    p_y = piq.psnr(y01, r01, reduction="none")
    s_d = piq.ssim(d01, r01, reduction="none")
    s_y = piq.ssim(y01, r01, reduction="none")
    if grid_path is not None:
        cols = [d01, as01(r.y2), as01(r.y1), y01, r01]
        rows = [torch.cat([c[i] for c in cols], dim=2) for i in range(len(d01))]
        img = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        grid_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(grid_path)
    per = [{"psnr_distorted": float(a), "psnr_restored": float(b), "ssim_distorted": float(c),
            "ssim_restored": float(d)} for a, b, c, d in zip(p_d, p_y, s_d, s_y)]
    return RestorationQuality(float(p_d.mean()), float(p_y.mean()), float(s_d.mean()), float(s_y.mean()),
                              len(per), per)


def validate(opts: DiffusionTrainOptions) -> None:
    """Raise ValueError naming the option when a setting cannot work."""
    checks = [
        (opts.steps >= 1, f"--steps must be at least 1, got {opts.steps}"),
        (opts.batch >= 1, f"--batch must be at least 1, got {opts.batch}"),
        (opts.crop >= 8, f"--crop must be at least 8 pixels, got {opts.crop}"),
        (opts.lr > 0, f"--lr must be positive, got {opts.lr}"),
        (0 <= opts.ema < 1, f"--ema must be in [0, 1) (0 = off), got {opts.ema}"),
        (opts.save_every >= 0, f"--save-every must be >= 0 (0 = at the end only), got {opts.save_every}"),
        (opts.sample_every >= 0, f"--sample-every must be >= 0 (0 = at the end only), got {opts.sample_every}"),
        (opts.val_pairs >= 1, f"--val-pairs must be at least 1, got {opts.val_pairs}"),
        (opts.lr_schedule in LR_SCHEDULES,
         f"--lr-schedule {opts.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


def _due(step: int, every: int, last: int) -> bool:
    """True every `every` steps (never when 0) and at the last step."""
    return (every > 0 and step % every == 0) or step == last


def build_model(opts: DiffusionTrainOptions) -> DiffV2IQA:
    if opts.init:
        model, _ = load_checkpoint(opts.init)
        return model
    return DiffV2IQA(preset(opts.preset))


@dataclass
class _Training:
    """The optimiser side of a train-diffusion run: what state.pt saves and restores."""

    diffusion: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    ema: torch.optim.swa_utils.AveragedModel | None
    step: int = 0

    @classmethod
    def start(cls, diffusion: torch.nn.Module, opts: DiffusionTrainOptions) -> "_Training":
        """Adam at `opts.lr` with a cosine or constant schedule over `opts.steps`, and the EMA copy."""
        opt = torch.optim.Adam(diffusion.parameters(), lr=opts.lr)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=opts.steps) if opts.lr_schedule == "cosine"
                 else torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0))
        return cls(diffusion, opt, sched, moving_average(diffusion, opts.ema) if opts.ema > 0 else None)

    def state(self) -> dict:
        s = {"diffusion": self.diffusion.state_dict(), "optimizer": self.opt.state_dict(),
             "scheduler": self.sched.state_dict(), "step": self.step}
        if self.ema is not None:
            s["ema"] = self.ema.state_dict()
        return s

    def load(self, state: dict) -> None:
        self.diffusion.load_state_dict(state["diffusion"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])


def train_diffusion(opts: DiffusionTrainOptions) -> RestorationQuality:
    """Train (or resume) the diffusion network on distorted/reference pairs; returns its held-out quality."""
    validate(opts)
    device = resolve_device(opts.device)
    dist_info = init_distributed(device)
    if device.type == "cuda" and dist_info.world > 1:
        device = torch.device("cuda", dist_info.local_rank)
    seed_everything(opts.seed + dist_info.rank)
    out = Path(opts.out)
    model = build_model(opts)
    if model.diffusion is None:
        raise SystemExit("error: this configuration has no diffusion network (use_diffusion = false)")
    diffusion = model.diffusion.to(device).train()
    train_recs, held_recs = pair_records(opts)
    bank = PairBank(train_recs)
    held = PairBank(held_recs[:: max(1, len(held_recs) // opts.val_pairs)][: opts.val_pairs], "loading held-out")
    tr = _Training.start(diffusion, opts)
    if dist_info.main:
        print(f"train-diffusion: preset {opts.preset}, batch {opts.batch}, crop {opts.crop}, lr {opts.lr:g} "
              f"({opts.lr_schedule}), {opts.steps} steps", flush=True)
    rng = np.random.default_rng(opts.seed + 1000 * dist_info.rank)
    state = load_state(out)
    if state is not None:
        tr.load(state)
        rng = np.random.default_rng([opts.seed, tr.step, dist_info.rank])
        print(f"resuming {out} from step {tr.step}", file=sys.stderr)
    net = diffusion
    if dist_info.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(diffusion, device_ids=ids)
    if dist_info.main:
        (out / "options.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "options.json").write_text(json.dumps(asdict(opts), indent=2))
    _train_steps(opts, tr, net, bank, held, rng, device, dist_info.main)
    quality = measure(_eval_module(diffusion, tr.ema), held, device, opts.seed, out / "samples" / "final.png")
    if dist_info.main:
        if tr.ema is not None:
            diffusion.load_state_dict(tr.ema.module.state_dict())
        card = {"stage": "diffusion network trained; quality heads untrained", "training_data": str(opts.data),
                "split_file": opts.split_file, "split_index": opts.split_index, "diffusion_steps": tr.step,
                "diffusion_options": asdict(opts), "restoration": asdict(quality)}
        save_checkpoint(model, out / "last", card)
        print(f"held-out restoration: PSNR {quality.psnr_distorted:.2f} -> {quality.psnr_restored:.2f} dB, "
              f"SSIM {quality.ssim_distorted:.4f} -> {quality.ssim_restored:.4f} ({quality.pairs} pairs); "
              f"checkpoint {out / 'last'}")
    return quality


def _train_steps(opts: DiffusionTrainOptions, tr: _Training, net: torch.nn.Module, bank: PairBank, held: PairBank,
                 rng: np.random.Generator, device: torch.device, main: bool) -> None:
    """The steps left: a batch of random crops, the diffusion loss, the state and log every `save_every`
    steps, restoration samples every `sample_every` steps (on the main process)."""
    out = Path(opts.out)
    log = JsonlLog(out / "log.jsonl")
    bar = progress_bar(total=opts.steps, initial=tr.step, desc="diffusion", unit="step", disable=not main)
    t0, losses = time.perf_counter(), []
    while tr.step < opts.steps:
        d, r = (t.to(device) for t in bank.batch(opts.batch, opts.crop, rng))
        with autocast(device):
            loss = net(r, d)
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        tr.opt.step()
        tr.sched.step()
        if tr.ema is not None:
            tr.ema.update_parameters(tr.diffusion)
        tr.step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if _due(tr.step, opts.save_every, opts.steps):
            if main:
                atomic_save(tr.state(), out / "state.pt")
                log.write(step=tr.step, loss=float(np.mean(losses)), lr=tr.sched.get_last_lr()[0],
                          pairs_per_s=len(losses) * opts.batch / (time.perf_counter() - t0))
            t0, losses = time.perf_counter(), []
        if main and _due(tr.step, opts.sample_every, opts.steps):
            q = measure(_eval_module(tr.diffusion, tr.ema), held, device, opts.seed,
                        out / "samples" / f"step{tr.step:06d}.png")
            log.write(step=tr.step, **{k: v for k, v in asdict(q).items() if k != "per_pair"})
    bar.close()


def _eval_module(diffusion, ema):
    return ema.module if ema is not None else diffusion


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-diffusion",
                       help="train the diffusion restoration network on (distorted, reference) pairs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DiffusionTrainOptions(data="")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--format", default=d.format, choices=FORMATS, help="dataset layout")
    p.add_argument("--csv", default=None, help="label file for the generic layout (default DIR/meta.csv)")
    p.add_argument("--split-file", default=None, help="splits JSON (python -m iqa splits); trains on its train part")
    p.add_argument("--split-index", type=int, default=d.split_index, help="which split of the file")
    p.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                   help="train only on pairs of these distortion kinds (space or comma separated)")
    p.add_argument("--preset", default=d.preset, help="paper, lite or tiny")
    p.add_argument("--init", default=None, help="continue from this checkpoint's diffusion weights")
    p.add_argument("--out", default=d.out, help="run folder (re-running the same command resumes)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    p.add_argument("--batch", type=int, default=None,
                   help=f"pairs per step (default: {PAPER_TRAINING['batch']} for --preset paper, as in the paper; "
                        f"{CPU_TRAINING['batch']} otherwise)")
    p.add_argument("--crop", type=int, default=PAPER_TRAINING["crop"], help="training crop side (as in the paper)")
    p.add_argument("--lr", type=float, default=PAPER_TRAINING["lr"], help="Adam learning rate (as in the paper)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="learning-rate schedule "
                        "(default: constant for --preset paper, as in the paper; cosine otherwise)")
    p.add_argument("--ema", type=float, default=d.ema, help="EMA decay, e.g. 0.999 (0 = off)")
    p.add_argument("--save-every", type=int, default=d.save_every,
                   help="steps between resumable states (0: at the end only)")
    p.add_argument("--sample-every", type=int, default=d.sample_every,
                   help="steps between sample grids and held-out PSNR/SSIM (0: at the end only)")
    p.add_argument("--val-pairs", type=int, default=d.val_pairs, help="held-out pairs for PSNR/SSIM")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of crops, flips, noise and initial weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fields = DiffusionTrainOptions.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    base = training_defaults(given.get("preset", DiffusionTrainOptions.preset))
    opts = DiffusionTrainOptions(**{**base, **given})
    opts.kinds = kind_names(opts.kinds)
    try:
        train_diffusion(opts)
    except (ValueError, OSError) as err:  # bad options, DatasetError, CheckpointError, missing files
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
