"""`python -m iqa train-rank`: teach a checkpoint the order of quality on an online stream of series.

RankIQA's supervision (Liu et al., ICCV 2017) inside the full model: every batch holds a few ranked
series from `iqa.data.stream` (a clean crop, several kinds at several levels each); the loss is a
hinge on every ordered pair (clean above each distortion, within a kind each level above the higher
ones) plus a weighted MSE to the pseudo-MOS, which keeps scores comparable across kinds. The later
backbone blocks are fine-tuned with BatchNorm statistics frozen (batches are small and hold one
content per series), the heads with a larger learning rate; the diffusion network stays fixed.

The run lives in `--out`: `state.pt` (saved every `save_every_min`, read with weights_only), `last/`
(a checkpoint), `snapshots/step-N/` (kept for the learning curve), `log.jsonl`; with `--ema` these
checkpoints hold the weights' moving average and `last-raw/`, `step-N-raw/` the weights themselves.
Stopped at any moment, the same command resumes it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from iqa.assess import resolve_device
from iqa.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from iqa.data.stream import (CLEAN, Batch, SeriesStream, StreamConfig, add_stream_options, diffusion_states,
                             ordered_pairs)
from iqa.model import DiffV2IQA
from iqa.rank_optim import freeze_norms, prepare, rate_factor, set_rates
from iqa.revive import revive_score_head
from iqa.training import JsonlLog, atomic_save, load_state, moving_average, seed_everything

STATE = "state.pt"
LOG = "log.jsonl"
LOG_EVERY = 10  # steps between log lines (and the first step of a run)
LOSSES = ("both", "rank", "mse")
DIFFUSION_IN = ("workers", "trainer")
NOISE_SEED_STRIDE = 1_000_003  # the trainer's diffusion noise is seeded by seed * stride + the step it resumes from


class RankError(ValueError):
    """A run that cannot start; the message says what to change."""


@dataclass
class RankConfig:
    """One ranking run; stored in its state and in every checkpoint's card.

    free_from_block: backbone stages with this index and later are trained (see `iqa.rank_optim.stages`; the stem
    and earlier stages stay frozen); None freezes the whole backbone. loss: "both" (hinge + MSE),
    "rank" (hinge only) or "mse" (regression only), for the ablation."""

    init: str = "checkpoints/default"
    no_diffusion: bool = False
    steps: int = 3000
    series_per_batch: int = 3
    accumulate: int = 1  # batches of series_per_batch series whose gradients add up to one step (memory-bound CPUs)
    free_from_block: int | None = 4
    lr_backbone: float = 1e-4
    lr_heads: float = 1e-3
    lr_patch_head: float = 0.0  # own rate of the VCG per-patch score MLP (a revived one starts afresh); 0: lr_heads
    weight_decay: float = 1e-4
    warmup_steps: int = 0  # learning rates ramp up linearly over these steps (a fresh optimiser on trained weights)
    decay_steps: int = 0  # after the warm-up, rates fall along a cosine to lr_floor x base at this step; 0: constant
    lr_floor: float = 0.0  # the decayed rates' end, as a share of each group's base rate
    ema: float = 0.0  # checkpoints hold a moving average of the weights, this decay per step; 0: the weights
    loss: str = "both"
    margin: float = 0.05
    clean_weight: float = 1.0  # weight of the pairs "clean above a distortion" in the hinge (mild levels are hard)
    mse_weight: float = 0.5
    local_weight: float = 0.0  # weight of the MSE of the VCG patch scores to the local quality maps
    revive_vcg: bool = False  # restart the VCG score layer as a sigmoid (patch scores on 0-1) when a run starts
    local_skip: int = 0  # with revive_vcg: channels of the backbone-map skip into the score MLP (VCGConfig.local_skip)
    save_every_min: float = 5.0
    max_minutes: float = 0.0  # stop (saved, resumable) after this many minutes of this invocation; 0: no limit
    snapshot_every_min: float = 30.0
    threads: int = 1
    diffusion_in: str = "workers"  # where the states y0-y2 are made: the stream's CPU workers, or the trainer's device
    channels_last: bool = True  # 1.8x the images/s of float32 NCHW on the 2-core CPU (`benchmark --train`)
    device: str = "auto"
    seed: int = 0
    stream: StreamConfig = field(default_factory=StreamConfig)

    def __post_init__(self):
        if isinstance(self.stream, dict):
            s = dict(self.stream)
            for key in ("scale", "kinds", "base_blur", "base_contrast", "base_noise", "base_jpeg", "gamma",
                        "saturation"):
                if key in s:
                    s[key] = tuple(s[key])
            self.stream = StreamConfig(**s)

    def check(self) -> None:
        """Raise `RankError` for settings that cannot run, naming the option to change."""
        if self.local_skip and not self.revive_vcg:
            raise RankError("--local-skip needs --revive-vcg: the score MLP is rebuilt for the wider input")
        if self.loss not in LOSSES:
            raise RankError(f"--loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        if not self.clean_weight > 0:
            raise RankError(f"--clean-weight {self.clean_weight}: must be > 0 (1 weighs every pair alike)")
        if self.accumulate < 1 or self.series_per_batch < 1:
            raise RankError(f"--series-per-batch {self.series_per_batch}, --accumulate {self.accumulate}: "
                            "each at least 1")
        if self.decay_steps and (self.decay_steps <= self.warmup_steps or not 0 <= self.lr_floor <= 1):
            raise RankError(f"--decay-steps {self.decay_steps}, --lr-floor {self.lr_floor}: the decay must end after "
                            f"the warm-up (--warmup-steps {self.warmup_steps}) at a floor from 0 to 1")
        if not 0 <= self.ema < 1:
            raise RankError(f"--ema {self.ema}: a decay from 0 (off) to below 1, as train-diffusion --ema")
        if self.diffusion_in not in DIFFUSION_IN:
            raise RankError(f"--diffusion-in {self.diffusion_in!r}: choose one of {', '.join(DIFFUSION_IN)}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def same_run(self, other: "RankConfig") -> list[str]:
        """Settings that differ from a saved run's (steps, saving, threads, workers and the buffer may
        change on resume)."""
        free = {"steps", "save_every_min", "max_minutes", "snapshot_every_min", "threads", "channels_last", "device",
                "diffusion_in"}
        a, b = self.to_dict(), other.to_dict()
        for d in (a, b):
            for key in ("workers", "buffer"):
                d["stream"].pop(key)
        return sorted(k for k in a if k not in free and a[k] != b[k])


@dataclass
class StepStats:
    """One optimisation step: losses, the share of ordered pairs the model already ranks right."""

    loss: float
    rank: float
    mse: float
    pair_accuracy: float
    images: int
    local: float = 0.0

    @staticmethod
    def mean(parts: list["StepStats"]) -> "StepStats":
        """One step's stats from its accumulated batches (images added up, the rest averaged)."""
        avg = {k: sum(getattr(p, k) for p in parts) / len(parts)
               for k in ("loss", "rank", "mse", "pair_accuracy", "local")}
        return StepStats(images=sum(p.images for p in parts), **avg)


def train_mode(model: DiffV2IQA) -> None:
    """Dropout on in the heads; backbones and diffusion keep eval behaviour (frozen statistics)."""
    model.train()
    if model.diffusion is not None:
        model.diffusion.eval()
    for bb in (model.backbone, model.vda_backbone):
        if bb is not None:
            freeze_norms(bb)


def rank_loss(scores: torch.Tensor, batch: Batch, margin: float,
              clean_weight: float = 1.0) -> tuple[torch.Tensor, float]:
    """Hinge over every ordered pair of the batch's series, relu(margin - (s_better - s_worse)), averaged
    with weight `clean_weight` on the pairs whose better item is the clean crop (1 elsewhere), and the
    share of pairs already ordered."""
    better, worse = ordered_pairs(batch)
    diff = scores[better] - scores[worse]
    w = torch.where(batch.kind[better].to(diff.device) == CLEAN, clean_weight, 1.0).to(diff)
    return (w * F.relu(margin - diff)).sum() / w.sum(), float((diff > 0).float().mean())


def step_loss(model: DiffV2IQA, batch: Batch, cfg: RankConfig, device: torch.device,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, StepStats]:
    """The step's loss on one batch; with `cfg.diffusion_in == "trainer"` the batch holds x only and the
    diffusion states are made here, on `device` (noise from `generator`)."""
    states = batch.states.to(device)
    if model.cfg.use_diffusion and states.shape[1] == 1:
        if cfg.diffusion_in != "trainer":
            raise RankError("the stream gives x only but the model uses diffusion states")
        states = diffusion_states(states[:, 0], model.diffusion, generator)
    states = states.float() / 127.5 - 1
    if states.shape[1] == 1:
        states = states.expand(-1, 4, -1, -1, -1)
    q = model(states)
    scores = q.score.float()
    rank, acc = rank_loss(scores, batch, cfg.margin, cfg.clean_weight)
    mse = F.mse_loss(scores, batch.mos.to(device).float())
    total = {"both": rank + cfg.mse_weight * mse, "rank": rank, "mse": mse}[cfg.loss]
    local = torch.zeros(())
    if cfg.local_weight > 0 and q.f1 is not None:
        local = F.mse_loss(q.f1.float(), batch.local.to(device).float())
        total = total + cfg.local_weight * local
    return total, StepStats(total.item(), rank.item(), mse.item(), acc, len(scores), local.item())


def accumulate_gradients(model: DiffV2IQA, stream: SeriesStream, cfg: RankConfig, device: torch.device,
                         noise: torch.Generator) -> tuple[StepStats, float]:
    """Backpropagate `cfg.accumulate` batches of the stream, each loss divided by their number, so that
    the gradients add up to those of one batch holding them all; the step's stats and the seconds spent
    computing (not waiting for the stream)."""
    parts, busy = [], 0.0
    for _ in range(cfg.accumulate):
        batch = stream.batch(cfg.series_per_batch)
        t0 = time.time()
        loss, part = step_loss(model, batch, cfg, device, noise)
        (loss / cfg.accumulate).backward()
        parts.append(part)
        busy += time.time() - t0
    return StepStats.mean(parts), busy


def load_model(cfg: RankConfig) -> tuple[DiffV2IQA, dict]:
    """The model to train (from `cfg.init`; without its diffusion network for the no-diffusion
    ablation) and the init checkpoint's card."""
    try:
        model, card = load_checkpoint(cfg.init, device="cpu")
    except CheckpointError as err:
        raise RankError(str(err)) from None
    if cfg.no_diffusion:
        model.cfg = dataclasses.replace(model.cfg, use_diffusion=False, name=f"{model.cfg.name}:no-diffusion")
        model.diffusion = None
    elif model.diffusion is None:
        raise RankError(f"{cfg.init}: this checkpoint has no diffusion network; use --no-diffusion "
                        "or a full checkpoint")
    return model, card


def _accelerator(device: str) -> str | None:
    """The GPU's name when the run trains on one (the card's record of where it ran), else None."""
    dev = resolve_device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else None


def _card(cfg: RankConfig, init_card: dict, step: int, hours: float, images: int, weights: str) -> dict:
    return {"trained": True, "stage": "train-rank", "init": cfg.init,
            "init_training": init_card.get("training"), "diffusion_training": init_card.get("diffusion_training"),
            "rank_training": {"config": cfg.to_dict(), "steps": step, "images_seen": images,
                              "wall_hours": round(hours, 3), "threads": cfg.threads,
                              "workers": cfg.stream.workers, "accelerator": _accelerator(cfg.device),
                              "cpu_core_hours": round(hours * (cfg.threads + cfg.stream.workers), 3),
                              "weights": weights},
            "backbone_weights": init_card.get("backbone_weights"),
            "command": shlex.join(["python", "-m", "iqa", *sys.argv[1:]])}


def _save_state(path: Path, model: DiffV2IQA, opt: torch.optim.Optimizer, cfg: RankConfig, progress: dict,
                init_card: dict, ema: AveragedModel | None) -> None:
    extra = {"ema": ema.state_dict()} if ema is not None else {}
    atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "config": json.dumps(cfg.to_dict()),
                 "progress": json.dumps(progress), "init_card": json.dumps(init_card), **extra}, path)


def _resume(out: Path, cfg: RankConfig, model: DiffV2IQA, opt: torch.optim.Optimizer,
            init_card: dict, ema: AveragedModel | None) -> tuple[dict, dict]:
    """Load `out/state.pt` into model, optimiser and moving average; the saved progress (step, images,
    hours) and the card of the checkpoint the run started from (the init folder may have been rewritten
    since, e.g. by bundling this run), or zeros and `init_card`."""
    state = load_state(out)
    if state is None:
        return {"step": 0, "images": 0, "hours": 0.0}, init_card
    saved = RankConfig(**json.loads(state["config"]))
    changed = cfg.same_run(saved)
    if changed:
        raise RankError(f"{out} holds a run with other settings ({', '.join(changed)}); resume it with its "
                        "settings or choose another --out")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    return json.loads(state["progress"]), json.loads(state["init_card"]) if "init_card" in state else init_card


def _log(log: JsonlLog, say, window: list, progress: dict, made: int, steps: int) -> None:
    n = sum(s.images for s, _ in window)
    rec = {k: round(sum(getattr(s, k) for s, _ in window) / len(window), 5)
           for k in ("loss", "rank", "mse", "local", "pair_accuracy")}
    rate = n / max(sum(dt for _, dt in window), 1e-9)
    log.write(step=progress["step"], **rec, images_per_s=round(rate, 3), images=progress["images"],
              series_made=made, hours=round(progress["hours"], 4))
    say(f"step {progress['step']}/{steps}  loss {rec['loss']:.4f}  pairs ordered {rec['pair_accuracy']:.3f}  "
        f"{rate:.2f} images/s  {progress['hours']:.2f} h")


def train(cfg: RankConfig, out: str | Path, say=print) -> Path:
    """Run (or resume) a ranking run in `out`; returns the folder of its last checkpoint."""
    out = Path(out)
    cfg.check()
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model, init_card = load_model(cfg)
    if model.vcg is not None:
        cfg.stream = dataclasses.replace(cfg.stream, grid=model.cfg.vcg.grid)
    if cfg.revive_vcg:
        revive_score_head(model, cfg.local_skip)  # a resumed run's state overrides it below
    groups = prepare(model, cfg)
    model.to(device)
    if cfg.channels_last:
        model.to_channels_last()
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    ema = moving_average(model, cfg.ema) if cfg.ema else None
    if ema is not None:
        ema.update_parameters(model)  # the average starts at the init's weights (a resume loads its own)
    progress, init_card = _resume(out, cfg, model, opt, init_card, ema)
    start = progress["step"]
    log = JsonlLog(out / LOG)
    if start >= cfg.steps:
        say(f"{out}: already at step {start} of {cfg.steps}; raise --steps to go on")
        return out / "last"
    say(f"train-rank: {model.cfg.name} from {cfg.init}, steps {start} -> {cfg.steps}, "
        f"{sum(p.numel() for g in groups for p in g['params']):,} trained parameters, out {out}")
    last_save = last_snap = t_run = time.time()
    hours0, window = progress["hours"], []

    def save(where: Path) -> None:
        """The checkpoint at `where` (the moving average when there is one; the weights then beside it, `-raw`)."""
        card = partial(_card, cfg, init_card, progress["step"], progress["hours"], progress["images"])
        save_checkpoint(model if ema is None else ema.module, where, card("trained" if ema is None else "ema"))
        if ema is not None:
            save_checkpoint(model, where.with_name(where.name + "-raw"), card("trained"))

    in_workers = model.diffusion if cfg.diffusion_in == "workers" else None
    noise = torch.Generator().manual_seed(cfg.seed * NOISE_SEED_STRIDE + start)
    with SeriesStream(cfg.stream, in_workers, start=start) as stream:
        train_mode(model)
        try:
            for step in range(start + 1, cfg.steps + 1):
                opt.zero_grad(set_to_none=True)
                stats, busy = accumulate_gradients(model, stream, cfg, device, noise)
                t0 = time.time()
                set_rates(opt, rate_factor(step, cfg.warmup_steps, cfg.decay_steps, cfg.lr_floor))
                opt.step()
                if ema is not None:
                    ema.update_parameters(model)
                window.append((stats, busy + time.time() - t0))
                progress.update(step=step, images=progress["images"] + stats.images,
                                hours=hours0 + (time.time() - t_run) / 3600)
                if step % LOG_EVERY == 0 or step in (start + 1, cfg.steps):  # the first: a slow CPU shows it runs
                    _log(log, say, window, progress, stream.made, cfg.steps)
                    window = []
                now = time.time()
                out_of_time = cfg.max_minutes > 0 and now - t_run >= cfg.max_minutes * 60
                if now - last_save >= cfg.save_every_min * 60 or step == cfg.steps or out_of_time:
                    _save_state(out / STATE, model, opt, cfg, progress, init_card, ema)
                    save(out / "last")
                    last_save = now
                if now - last_snap >= cfg.snapshot_every_min * 60:
                    save(out / "snapshots" / f"step-{step}")
                    last_snap = now
                if out_of_time:
                    if window:  # steps since the last log line
                        _log(log, say, window, progress, stream.made, cfg.steps)
                    say(f"stopped after {cfg.max_minutes:g} min at step {step}; the same command resumes")
                    break
        except KeyboardInterrupt:
            if progress["step"] > start:
                _save_state(out / STATE, model, opt, cfg, progress, init_card, ema)
                save(out / "last")
            say(f"interrupted at step {progress['step']}; state saved, the same command resumes")
            raise
    say(f"done: {out / 'last'}")
    return out / "last"


def register(subparsers) -> None:
    d = RankConfig()
    p = subparsers.add_parser("train-rank", help="teach a checkpoint the order of quality (online ranked series)",
                              description=__doc__)
    p.add_argument("--photos", required=True, help="folder of pristine photos (split by name as `splits` does)")
    p.add_argument("--out", default="runs/rank", help="run folder; the same command resumes it")
    p.add_argument("--init", default=d.init, help="checkpoint to start from (its diffusion network stays fixed)")
    p.add_argument("--no-diffusion", action="store_true", help="ablation: drop the diffusion network (states = x)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimisation steps in all")
    p.add_argument("--series-per-batch", type=int, default=d.series_per_batch, help="series per batch")
    p.add_argument("--accumulate", type=int, default=d.accumulate, metavar="K",
                   help="K batches per optimisation step, their gradients added up: a large batch in little "
                        "memory (default 1)")
    p.add_argument("--free-from-block", type=int, default=d.free_from_block,
                   help="train backbone blocks from this index on (-1: keep the backbone frozen)")
    p.add_argument("--lr-backbone", type=float, default=d.lr_backbone, help="AdamW learning rate of backbone blocks")
    p.add_argument("--lr-heads", type=float, default=d.lr_heads, help="AdamW learning rate of the quality heads")
    p.add_argument("--lr-patch-head", type=float, default=d.lr_patch_head,
                   help="AdamW learning rate of the VCG per-patch score MLP (0: --lr-heads); a revived one "
                        "learns from scratch and needs more")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="ramp the learning rates up linearly over this many steps (0: full rates from the start)")
    p.add_argument("--decay-steps", type=int, default=d.decay_steps, metavar="N",
                   help="after the warm-up, every rate falls along a cosine to --lr-floor x its own at step N "
                        "(0: constant rates); kept by the run, unlike --steps")
    p.add_argument("--lr-floor", type=float, default=d.lr_floor, metavar="F",
                   help="with --decay-steps: the rates' end as a share of their start (default 0)")
    p.add_argument("--ema", type=float, default=d.ema, metavar="D",
                   help="checkpoints hold an exponential moving average of the weights (D per step, starting at "
                        "--init's; the weights themselves go to FOLDER-raw beside each); 0: off")
    p.add_argument("--loss", choices=LOSSES, default=d.loss, help="hinge + MSE, hinge only, or MSE only")
    p.add_argument("--margin", type=float, default=d.margin, help="hinge margin")
    p.add_argument("--clean-weight", type=float, default=d.clean_weight,
                   help="weight of the clean-above-distortion pairs in the hinge (1: every pair alike)")
    p.add_argument("--mse-weight", type=float, default=d.mse_weight, help="weight of the MSE to pseudo-MOS")
    p.add_argument("--local-weight", type=float, default=d.local_weight,
                   help="weight of the MSE of the VCG patch scores to local quality maps (0: off)")
    p.add_argument("--revive-vcg", action="store_true",
                   help="restart the VCG per-patch score layer at the start (for a dead, all-zero score map)")
    p.add_argument("--local-skip", type=int, default=d.local_skip, metavar="K",
                   help="with --revive-vcg: feed the score MLP a K-channel projection of the backbone maps too "
                        "(the VCG trunk mixes positions; 0: off, the paper)")
    add_stream_options(p, StreamConfig())
    p.add_argument("--threads", type=int, default=d.threads, help="trainer threads")
    p.add_argument("--max-minutes", type=float, default=d.max_minutes,
                   help="stop after this many minutes (state saved; 0: run to --steps)")
    p.add_argument("--save-every-min", type=float, default=d.save_every_min, help="minutes between saved states")
    p.add_argument("--snapshot-every-min", type=float, default=d.snapshot_every_min,
                   help="minutes between kept snapshots (the learning curve)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="channels_last memory format (faster on CPUs with AVX-512)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--diffusion-in", choices=DIFFUSION_IN, default=d.diffusion_in,
                   help="where the diffusion states are made: the CPU stream workers, or the trainer's device "
                        "(a GPU: the workers then only distort and label, several times as many series/s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.set_defaults(func=run)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _config(args) -> RankConfig:
    """The run's `RankConfig` from the parsed options (ValueError naming the setting if one is out of range)."""
    stream = StreamConfig(photos=args.photos, part=args.part, ratios=args.ratios, split_seed=args.split_seed,
                          crop=args.crop, kinds=tuple(args.kinds), kinds_per_series=args.kinds_per_series,
                          plain_share=args.plain_share, region_share=args.region_share,
                          base_share=args.base_share, base_blur=tuple(args.base_blur),
                          base_contrast=tuple(args.base_contrast), base_grain_share=args.base_grain_share,
                          base_noise=tuple(args.base_noise), base_jpeg=tuple(args.base_jpeg),
                          retone_share=args.retone_share, gamma=tuple(args.gamma), saturation=tuple(args.saturation),
                          levels_per_kind=args.levels_per_kind, buffer=args.buffer, workers=args.workers,
                          seed=args.seed)
    return RankConfig(init=args.init, no_diffusion=args.no_diffusion, steps=args.steps,
                      series_per_batch=args.series_per_batch, accumulate=args.accumulate,
                      free_from_block=None if args.free_from_block < 0 else args.free_from_block,
                      lr_backbone=args.lr_backbone, lr_heads=args.lr_heads,
                      lr_patch_head=args.lr_patch_head, weight_decay=args.weight_decay,
                      warmup_steps=args.warmup_steps, decay_steps=args.decay_steps, lr_floor=args.lr_floor,
                      ema=args.ema,
                      loss=args.loss, margin=args.margin, clean_weight=args.clean_weight, mse_weight=args.mse_weight,
                      local_weight=args.local_weight, revive_vcg=args.revive_vcg, local_skip=args.local_skip,
                      save_every_min=args.save_every_min, max_minutes=args.max_minutes,
                      snapshot_every_min=args.snapshot_every_min,
                      threads=args.threads, diffusion_in=args.diffusion_in, channels_last=args.channels_last,
                      device=args.device, seed=args.seed, stream=stream)


def run(args) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # a kill saves the state like Ctrl-C
    try:
        train(_config(args), args.out)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
