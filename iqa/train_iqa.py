"""`python -m iqa train`: train DiffV2IQA's quality branches on a rated dataset.

Protocol (the paper's): per sample the same random crop window and the same random horizontal flip on
x, y0, y1, y2; MSE between the fused score and the normalised MOS; Adam (lr 1e-5, weight decay 1e-5)
with cosine annealing over the epochs. A validation part (7:1:2, 6:2:2 splits) picks the best epoch by
SRCC; without one (8:2) the last epoch is used. The test part is scored once, at the end, with the
chosen weights, averaging the K fixed crops (`iqa.assess.crop_boxes`, as `Assessor.assess` does).

The diffusion network is not trained here (see `train-diffusion`): its outputs come from the
`DiffusionCache`, computed once per image. In "crops" mode only the K fixed windows are restored, so
the random crop is one of them. `--freeze-backbones` also caches the backbone features once
(`FeatureCache`) and trains the heads only: the fast CPU path.

A run folder holds log.jsonl (one line per epoch), state.pt (resumable; saved every epoch and every
`--save-every` steps), best/ and last/ (checkpoint folders), metrics.json (test) and, with `--splits N`,
one split_KK/ run per split plus results.json (median, mean ± std over the splits). Re-running the
same command resumes. Multi-GPU / multi-node: launch with torchrun (DDP; `--batch` is per process).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_model
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from iqa.assess import DEFAULT_CROPS, Assessor, resolve_device
from iqa.cache import DEFAULT_SEED, FEATURES_DIR, STATES_DIR, DiffusionCache, FeatureCache, FeatureLayout
from iqa.checkpoint import WEIGHTS, CheckpointError, load_checkpoint, read_metadata, save_checkpoint, weights_path
from iqa.config import ABLATIONS, PRESETS, preset
from iqa.data.datasets import FORMATS, Record, load_dataset
from iqa.data.splits import SplitSet, load_splits
from iqa.diffusion import Diffusion
from iqa.metrics import MIN_PAIRS, Correlations, MetricSummary, correlations, summarise
from iqa.model import DiffV2IQA
from iqa.training import (LOG, STATE, DistInfo, JsonlLog, atomic_save, autocast, init_distributed, load_state,
                          seed_everything)

DEFAULT_PRESET = "lite"
DEFAULT_EPOCHS = 50  # the paper's cosine T_max
DEFAULT_BATCH = 4
DEFAULT_LR = 1e-5
DEFAULT_WEIGHT_DECAY = 1e-5
DEFAULT_SAVE_EVERY = 200  # optimizer steps between mid-epoch state saves (0: at epoch ends only)
DEFAULT_WORKERS = 2
DEFAULT_OUT = "runs/train"
EVAL_CROPS_PER_BATCH = 16  # crops per forward pass when scoring val / test images
FLIP_PROBABILITY = 0.5
STATE_VERSION = 1
BEST, LAST = "best", "last"
CACHE_DIR, METRICS_FILE, RESULTS_FILE = "cache", "metrics.json", "results.json"
SPLIT_DIR = "split_{:02d}"
NO_VAL_NOTICE = ("no validation part in this split ({ratios}): the LAST epoch's weights are used "
                 "(the test part never selects a checkpoint)")


class TrainError(ValueError):
    """A training request that cannot run; the message says what to change."""


@dataclass
class TrainOptions:
    """Everything `train` needs; field names match the CLI options."""

    data: str | Path
    format: str
    split_file: str | Path
    csv: str | None = None
    split_index: int = 0
    splits: int | None = None  # run split indices 0..splits-1 (10-split protocol) instead of split_index
    preset: str | None = None  # default: lite (ignored with `init`)
    allow_random_backbone: bool = False  # build the preset on random backbone weights when none are reachable
    init: str | Path | None = None  # checkpoint to fine-tune (its weights and config)
    diffusion: str | Path | None = None  # checkpoint whose trained diffusion network is used
    epochs: int = DEFAULT_EPOCHS
    batch: int = DEFAULT_BATCH  # per process
    lr: float = DEFAULT_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    crops: int = DEFAULT_CROPS  # K fixed crop windows per image (test average; restored windows in "crops" mode)
    freeze_backbones: bool = False
    flip_features: bool = True  # with frozen backbones, also cache the flipped crops
    out: str | Path = DEFAULT_OUT
    cache: str | Path | None = None  # default: OUT/cache (shared by the splits of a run)
    device: str = "auto"
    workers: int = DEFAULT_WORKERS
    seed: int = 0
    save_every: int = DEFAULT_SAVE_EVERY
    progress: bool = True  # tqdm bars and progress lines
    command: str | None = None  # recorded in the checkpoint card


@dataclass
class SplitResult:
    """One trained split."""

    index: int
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    epochs: int
    best_epoch: int
    selection: str  # "val_srcc" or "last_epoch"
    val: Correlations | None
    test: Correlations | None  # None when the test part has fewer than 3 images
    resumed_from: tuple[int, int] | None = None  # (completed epochs, step) of the state resumed from
    seconds: float = 0.0


@dataclass
class TrainResult:
    """A training run: one split, or the splits of the N-split protocol with their summary."""

    run_dir: Path
    splits: list[SplitResult]
    summary: dict[str, MetricSummary] | None = None
    results_file: Path | None = None

    @property
    def test(self) -> Correlations | None:
        return self.splits[0].test if len(self.splits) == 1 else None


# ---------------------------------------------------------------------------------------------
# Small public pieces (also used by tests)


def build_optimizer(model: nn.Module, lr: float = DEFAULT_LR,
                    weight_decay: float = DEFAULT_WEIGHT_DECAY) -> torch.optim.Adam:
    """Adam over the trainable parameters (the paper's L2-style weight decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainError("the model has no trainable parameters")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def quality_loss(pred: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
    """MSE between predicted scores (B,) and normalised MOS (B,), in float32."""
    return F.mse_loss(pred.float(), mos.float())


def prepare_model(model: DiffV2IQA, freeze_backbones: bool) -> DiffV2IQA:
    """Set what trains: never the diffusion network; the backbones unless `freeze_backbones`."""
    if model.diffusion is not None:
        model.diffusion.requires_grad_(False)
    for cfg, bb in ((model.cfg.vcg.backbone, model.backbone), (model.cfg.vda.backbone, model.vda_backbone)):
        cfg.frozen = freeze_backbones
        if bb is not None:
            bb.requires_grad_(not freeze_backbones)
    return model


class Scorer(nn.Module):
    """What DDP wraps: uint8 states (B, 4, 3, c, c) -> scores (B,), or, with a `FeatureLayout`,
    cached feature rows (B, D) -> scores (B,) through the heads only."""

    def __init__(self, model: DiffV2IQA, layout: FeatureLayout | None = None):
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.layout is None:
            return self.model(batch.float() / 127.5 - 1).score
        return self.model.heads(self.layout.decode(batch)).score


# ---------------------------------------------------------------------------------------------
# Data


class _SkipSampler(Sampler):
    """The first `skip` indices of `base` left out (resuming mid-epoch)."""

    def __init__(self, base: Sampler, skip: int):
        self.base, self.skip = base, skip

    def __iter__(self):
        return islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


class _TrainSet(Dataset):
    """Training samples: a random crop window + random flip of the four states (or a random cached
    feature row with frozen backbones) and the normalised MOS. Randomness comes from
    (seed, epoch, index), so it does not depend on workers, processes or resuming."""

    def __init__(self, records: list[Record], states: DiffusionCache, features: FeatureCache | None, seed: int):
        self.paths = [r.image for r in records]
        self.mos = [float(r.mos) for r in records]
        self.states, self.features, self.seed = states, features, seed
        self.crop = states.assessor.cfg.crop
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        target = torch.tensor(self.mos[i], dtype=torch.float32)
        if self.features is not None:
            rows = self.features.get(self.paths[i])
            return torch.from_numpy(np.array(rows[rng.integers(len(rows))])), target
        entry = self.states.get(self.paths[i])
        x0, y0, x1, y1 = (int(v) for v in entry.boxes[rng.integers(len(entry.boxes))])
        c = self.crop
        ox = x0 + int(rng.integers(x1 - x0 - c + 1))
        oy = y0 + int(rng.integers(y1 - y0 - c + 1))
        s = entry.crop((ox, oy, ox + c, oy + c))
        if rng.random() < FLIP_PROBABILITY:
            s = np.ascontiguousarray(s[..., ::-1])
        return torch.from_numpy(s), target


class _EvalSet(Dataset):
    """The K fixed crops of one image: uint8 states (n, 4, 3, c, c), or feature rows (n, D)."""

    def __init__(self, records: list[Record], states: DiffusionCache, features: FeatureCache | None):
        self.paths = [r.image for r in records]
        self.states, self.features = states, features

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.features is not None:
            rows = self.features.get(self.paths[i])
            return torch.from_numpy(np.array(rows[: len(rows) // self.features.variants_per_crop]))
        entry = self.states.get(self.paths[i])
        return torch.from_numpy(np.stack([entry.crop(b) for b in self.states.eval_boxes(entry)]))


def _keep_list(items: list[torch.Tensor]) -> list[torch.Tensor]:
    """Collate for `_EvalSet`: images may have different crop counts, so keep them apart."""
    return items


@torch.no_grad()
def predict(scorer: Scorer, records: list[Record], states: DiffusionCache, features: FeatureCache | None,
            device: torch.device, workers: int = 0, dist: DistInfo | None = None) -> np.ndarray:
    """Scores (N,) of `records`: mean over each image's K fixed crops. With several processes each
    scores a share and the results are gathered."""
    dist = dist or DistInfo()
    if not records:
        return np.zeros(0)
    mine = list(range(dist.rank, len(records), dist.world))
    per_image = max(1, EVAL_CROPS_PER_BATCH // states.crops)
    loader = DataLoader(_EvalSet([records[i] for i in mine], states, features), batch_size=per_image,
                        num_workers=workers, collate_fn=_keep_list)
    was_training = scorer.training
    scorer.eval()
    out: list[float] = []
    try:
        for items in loader:
            counts = [len(t) for t in items]
            batch = torch.cat(items).to(device, non_blocking=True)
            # float32: bf16 would quantise the scores (~2e-3) that SRCC and the best checkpoint rest on
            scores = torch.cat([scorer(chunk) for chunk in batch.split(EVAL_CROPS_PER_BATCH)]).float().cpu()
            out.extend(float(s.mean()) for s in scores.split(counts))
    finally:
        scorer.train(was_training)
    if dist.world == 1:
        return np.array(out)
    gathered: list[Any] = [None] * dist.world
    tdist.all_gather_object(gathered, list(zip(mine, out)))
    result = np.zeros(len(records))
    for part in gathered:
        for i, v in part:
            result[i] = v
    return result


def _correlate(pred: np.ndarray, records: list[Record]) -> Correlations | None:
    if len(records) < MIN_PAIRS:
        return None
    return correlations(pred, [r.mos for r in records])


# ---------------------------------------------------------------------------------------------
# Model, checkpoints, files


def _diffusion_from(path: str | Path):
    """(DiffusionConfig, diffusion state dict) of a checkpoint made by train-diffusion (or any full one)."""
    cfg, _card = read_metadata(path)
    if not cfg.use_diffusion:
        raise TrainError(f"{path}: this checkpoint has no diffusion network (use_diffusion is false).")
    prefix = "diffusion."
    with safe_open(str(weights_path(path)), framework="pt") as f:
        sd = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    if not sd:
        raise TrainError(f"{path}: no diffusion weights (keys 'diffusion.*') in {WEIGHTS}.")
    return cfg.diffusion, sd


def build_model(opts: TrainOptions) -> tuple[DiffV2IQA, list[str]]:
    """The model to train (from `init` or a preset, with `diffusion` weights) and notices for the user."""
    notices = []
    if opts.init:
        model, _card = load_checkpoint(opts.init, device="cpu")
        if opts.preset and opts.preset != model.cfg.name:
            notices.append(f"--init {opts.init}: using that checkpoint's config ({model.cfg.name}); "
                           f"--preset {opts.preset} is ignored")
    else:
        model = DiffV2IQA(preset(opts.preset or DEFAULT_PRESET, opts.allow_random_backbone))
    if opts.diffusion:
        if not model.cfg.use_diffusion:
            raise TrainError(f"--diffusion {opts.diffusion}: the model ({model.cfg.name}) is configured "
                             "without diffusion (use_diffusion false); leave --diffusion out.")
        dcfg, sd = _diffusion_from(opts.diffusion)
        model.cfg.diffusion = dcfg
        model.diffusion = Diffusion(dcfg)
        try:
            model.diffusion.load_state_dict(sd)
        except RuntimeError as err:
            raise CheckpointError(f"{opts.diffusion}: diffusion weights do not match its config ({err}).") from None
    elif model.cfg.use_diffusion and not opts.init:
        notices.append("no --diffusion checkpoint: the diffusion network has random weights, so y0, y1, y2 "
                       "are not restorations. Train one with `python -m iqa train-diffusion` and pass it "
                       "with --diffusion.")
    model.train()
    return prepare_model(model, opts.freeze_backbones), notices


def _plain(obj: Any) -> Any:
    """JSON-ready copy: dataclasses to dicts, paths to str, NaN / inf to None."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_plain(data), indent=2))
    tmp.replace(path)


def _correlations_from(d: dict | None) -> Correlations | None:
    if not d:
        return None
    names = {f.name for f in fields(Correlations)}
    kw = {k: (float("nan") if v is None and k != "logistic_params" else v) for k, v in d.items() if k in names}
    if kw.get("logistic_params") is not None:
        kw["logistic_params"] = tuple(kw["logistic_params"])
    return Correlations(**kw)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class _Run:
    """What the splits of one `train` call share."""

    opts: TrainOptions
    device: torch.device
    dist: DistInfo
    splits: SplitSet
    cache_root: Path
    fingerprint: dict = field(default_factory=dict)

    def say(self, msg: str) -> None:
        if self.dist.main and self.opts.progress:
            tqdm.write(msg)

    def barrier(self) -> None:
        if self.dist.world > 1:
            tdist.barrier()


def _validate(opts: TrainOptions) -> None:
    checks = [
        (opts.epochs >= 1, f"--epochs must be at least 1, got {opts.epochs}"),
        (opts.batch >= 1, f"--batch must be at least 1, got {opts.batch}"),
        (opts.lr > 0, f"--lr must be positive, got {opts.lr}"),
        (opts.weight_decay >= 0, f"--weight-decay must be >= 0, got {opts.weight_decay}"),
        (opts.crops >= 1, f"--crops must be at least 1, got {opts.crops}"),
        (opts.workers >= 0, f"--workers must be >= 0, got {opts.workers}"),
        (opts.save_every >= 0, f"--save-every must be >= 0 (0 = at epoch ends only), got {opts.save_every}"),
        (opts.splits is None or opts.splits >= 1, f"--splits must be at least 1, got {opts.splits}"),
        (opts.preset is None or (opts.preset.partition(":")[0] in PRESETS
                                 and opts.preset.partition(":")[2] in ("", *ABLATIONS)),
         f"unknown preset {opts.preset!r}; choose one of {', '.join(PRESETS)}, optionally with "
         f":{'|:'.join(ABLATIONS)}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TrainError(msg)
    for name in ("init", "diffusion"):
        path = getattr(opts, name)
        if path and not weights_path(path).is_file():
            raise TrainError(f"--{name} {path}: no checkpoint there (expected a folder with {WEIGHTS} "
                             "or a .safetensors file).")
    if not Path(opts.split_file).is_file():
        raise TrainError(f"split file {opts.split_file} not found; make one with "
                         f"`python -m iqa splits --data {opts.data} --format {opts.format} --out {opts.split_file}`.")


def train(options: TrainOptions) -> TrainResult:
    """Train (or resume) one split, or the first `options.splits` splits, as the options say."""
    opts = options
    _validate(opts)
    device = resolve_device(opts.device)
    dist = init_distributed(device)
    if device.type == "cuda" and dist.world > 1:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    try:
        dataset = load_dataset(opts.data, opts.format, csv=opts.csv)
        splits = load_splits(opts.split_file, dataset=dataset)
        indices = list(range(opts.splits)) if opts.splits else [opts.split_index]
        if indices[-1] >= len(splits) or indices[0] < 0:
            want = f"--splits {opts.splits}" if opts.splits else f"--split-index {opts.split_index}"
            raise TrainError(f"{want}: {opts.split_file} holds {len(splits)} split(s) (indices 0..{len(splits) - 1}).")
        out = Path(opts.out)
        run = _Run(opts, device, dist, splits, Path(opts.cache) if opts.cache else out / CACHE_DIR)
        run.fingerprint = {
            "version": STATE_VERSION, "data": str(dataset.root), "format": dataset.format, "csv": opts.csv,
            "split_file": str(Path(opts.split_file).resolve()), "preset": opts.preset,
            "init": str(opts.init) if opts.init else None, "diffusion": str(opts.diffusion) if opts.diffusion else None,
            "epochs": opts.epochs, "batch": opts.batch, "lr": opts.lr, "weight_decay": opts.weight_decay,
            "crops": opts.crops, "freeze_backbones": opts.freeze_backbones, "flip_features": opts.flip_features,
            "seed": opts.seed, "world": dist.world,
        }
        results = [_train_split(run, k, out / SPLIT_DIR.format(k) if opts.splits else out) for k in indices]
        summary = results_file = None
        if opts.splits:
            tests = [r.test for r in results if r.test is not None]
            summary = summarise(tests) if tests else None
            results_file = out / RESULTS_FILE
            if dist.main:
                _write_json(results_file, {
                    "dataset": dataset.name, "format": dataset.format, "split_file": str(opts.split_file),
                    "ratios": list(splits.ratios), "selection": results[0].selection,
                    "splits": [{"index": r.index, "run_dir": r.run_dir, "best_epoch": r.best_epoch,
                                **({m: getattr(r.test, m) for m in ("srcc", "plcc", "krcc", "rmse", "plcc_logistic")}
                                   if r.test else {})} for r in results],
                    "summary": summary, "note": "plcc: raw Pearson; plcc_logistic: after the 4-parameter logistic fit",
                })
                if summary:
                    s = summary
                    run.say(f"{len(tests)} splits: SRCC median {s['srcc'].median:.4f} (mean {s['srcc'].mean:.4f} "
                            f"± {s['srcc'].std:.4f}), PLCC median {s['plcc'].median:.4f} "
                            f"(mean {s['plcc'].mean:.4f} ± {s['plcc'].std:.4f}); wrote {results_file}")
        return TrainResult(run_dir=out, splits=results, summary=summary, results_file=results_file)
    finally:
        if dist.world > 1 and tdist.is_initialized():
            tdist.destroy_process_group()


def _train_split(run: _Run, index: int, run_dir: Path) -> SplitResult:
    opts, dist, device = run.opts, run.dist, run.device
    t_start = time.perf_counter()
    parts = run.splits.part_names
    train_recs = run.splits.part(index, "train")
    val_recs = run.splits.part(index, "val") if "val" in parts else []
    test_recs = run.splits.part(index, "test")
    ratios = ":".join(f"{r:g}" for r in run.splits.ratios)
    if not train_recs:
        raise TrainError(f"split {index} of {opts.split_file} has no training images.")
    run_dir.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(run_dir / LOG)
    fingerprint = {**run.fingerprint, "split_index": index}

    state = load_state(run_dir)
    if state is not None and state.get("fingerprint") != json.dumps(fingerprint, sort_keys=True):
        old = json.loads(state.get("fingerprint") or "{}")
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        raise TrainError(f"{run_dir} holds a run with other settings ({', '.join(diff)} differ); "
                         "re-run its exact command to resume, or pick another --out.")
    if state is not None and state.get("finished") and (run_dir / METRICS_FILE).is_file():
        run.say(f"split {index}: already finished ({run_dir / METRICS_FILE}); use another --out to train again")
        return _finished_result(index, run_dir)

    seed_everything(opts.seed)
    model, notices = build_model(opts)
    for n in notices:
        run.say(f"note: {n}")
    if not val_recs:
        run.say("note: " + NO_VAL_NOTICE.format(ratios=ratios))
    assessor = Assessor(model, device=str(device))  # moves the model to the device
    states = DiffusionCache(run.cache_root / STATES_DIR, assessor, opts.crops, seed=DEFAULT_SEED)
    everything = [r.image for r in train_recs + val_recs + test_recs]
    states.fill(everything, dist.rank, dist.world, progress=dist.main and opts.progress)
    run.barrier()
    features = None
    if opts.freeze_backbones:
        features = FeatureCache(run.cache_root / FEATURES_DIR, model, states, flips=opts.flip_features)
        features.fill(everything, dist.rank, dist.world, progress=dist.main and opts.progress)
        run.barrier()

    scorer = Scorer(model, features.layout if features else None)
    optimizer = build_optimizer(model, opts.lr, opts.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.epochs)
    epoch, step, global_step = 0, 0, 0
    loss_sum, loss_count = 0.0, 0
    best_srcc, best_epoch = None, 0
    resumed = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        epoch, step, global_step = int(state["epoch"]), int(state["step"]), int(state["global_step"])
        loss_sum, loss_count = float(state["loss_sum"]), int(state["loss_count"])
        best_srcc, best_epoch = state["best_srcc"], int(state["best_epoch"])
        resumed = (epoch, step)
        run.say(f"resuming from epoch {epoch}, step {step} ({run_dir / STATE})")

    train_set = _TrainSet(train_recs, states, features, opts.seed)
    sampler = DistributedSampler(train_set, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=opts.seed)
    steps_per_epoch = math.ceil(len(sampler) / opts.batch)
    net: nn.Module = scorer
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(
            scorer, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    card_base = _card_base(run, index, len(train_recs), len(val_recs), len(test_recs), ratios)
    card_base["backbone_weights"] = model.weights_sources()

    def save_state(finished: bool = False) -> None:
        if dist.main:
            atomic_save({
                "version": STATE_VERSION, "fingerprint": json.dumps(fingerprint, sort_keys=True),
                "epoch": epoch, "step": step, "global_step": global_step, "loss_sum": loss_sum,
                "loss_count": loss_count, "best_srcc": best_srcc, "best_epoch": best_epoch, "finished": finished,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            }, run_dir / STATE)
        run.barrier()

    model.train()
    while epoch < opts.epochs:
        t_epoch = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        first_step = step
        loader = DataLoader(train_set, batch_size=opts.batch, sampler=_SkipSampler(sampler, step * opts.batch),
                            num_workers=opts.workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(opts.seed))
        bar = tqdm(loader, total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}/{opts.epochs}",
                   unit="step", disable=not (dist.main and opts.progress), leave=False)
        images = 0
        for x, mos in bar:
            x, mos = x.to(device, non_blocking=True), mos.to(device, non_blocking=True)
            with autocast(device):
                pred = net(x)
            loss = quality_loss(pred, mos)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            global_step += 1
            images += len(x) * dist.world
            loss_sum += float(loss.detach()) * len(x)
            loss_count += len(x)
            bar.set_postfix(loss=f"{loss_sum / max(loss_count, 1):.4f}")
            if opts.save_every and global_step % opts.save_every == 0 and step < steps_per_epoch:
                save_state()
        bar.close()
        train_seconds = time.perf_counter() - t_epoch
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        epoch += 1
        val = _correlate(predict(scorer, val_recs, states, features, device, opts.workers, dist), val_recs) \
            if val_recs else None
        improved = val is None or best_srcc is None or (math.isfinite(val.srcc) and val.srcc > best_srcc)
        if improved:
            best_srcc = val.srcc if (val is not None and math.isfinite(val.srcc)) else best_srcc
            best_epoch = epoch
        if dist.main:
            card = {**card_base, "epochs": epoch, "metrics": {"val": val}}
            save_checkpoint(model, run_dir / LAST, _plain(card))
            if improved:
                save_checkpoint(model, run_dir / BEST, _plain({**card, "best_epoch": epoch}))
            loss_mean = loss_sum / max(loss_count, 1)
            record = {"epoch": epoch, "loss": loss_mean, "val_srcc": val.srcc if val else None,
                      "val_plcc": val.plcc if val else None, "lr": lr,
                      "images_per_s": images / max(train_seconds, 1e-9),
                      "seconds": time.perf_counter() - t_epoch, "steps": step - first_step}
            if first_step:
                record["resumed_at_step"] = first_step
            if not any(r.get("epoch") == epoch for r in log.read()):  # a kill just after logging: no duplicate
                log.write(**_plain(record))
            val_text = f", val SRCC {val.srcc:.4f} PLCC {val.plcc:.4f}" if val else ""
            run.say(f"epoch {epoch}/{opts.epochs}: loss {loss_mean:.5f}{val_text}, lr {lr:.2e}, "
                    f"{record['images_per_s']:.1f} img/s")
        step, loss_sum, loss_count = 0, 0.0, 0
        save_state()

    # Test once, with the chosen weights.
    run.barrier()
    load_model(model, str(run_dir / BEST / WEIGHTS), device=str(device))
    test_pred = predict(scorer, test_recs, states, features, device, opts.workers, dist)
    test = _correlate(test_pred, test_recs)
    val_best = None
    if val_recs:
        val_best = _correlate(predict(scorer, val_recs, states, features, device, opts.workers, dist), val_recs)
    selection = "val_srcc" if val_recs else "last_epoch"
    result = SplitResult(index=index, run_dir=run_dir, best_checkpoint=run_dir / BEST,
                         last_checkpoint=run_dir / LAST, epochs=epoch, best_epoch=best_epoch,
                         selection=selection, val=val_best, test=test, resumed_from=resumed,
                         seconds=time.perf_counter() - t_start)
    if dist.main:
        dataset = run.splits.dataset()
        metrics = {"split_index": index, "selection": selection, "best_epoch": best_epoch, "epochs": epoch,
                   "val": val_best, "test": test,
                   "note": "mean over the K fixed crops per image; plcc raw, plcc_logistic after a 4-parameter fit",
                   "predictions": [{"image": dataset.relative(r.image), "mos": r.mos, "pred": float(p)}
                                   for r, p in zip(test_recs, test_pred)]}
        _write_json(run_dir / METRICS_FILE, metrics)
        card = {**card_base, "epochs": epoch, "best_epoch": best_epoch, "metrics": {"val": val_best, "test": test}}
        save_checkpoint(model, run_dir / BEST, _plain(card))
        if test is not None and np.ptp(test_pred) == 0:
            run.say(f"warning: the model gives every test image the same score ({test_pred[0]:.4g}); its score "
                    "head may be stuck at 0 (ReLU). Try another --seed, a higher --lr or more epochs.")
        if test is not None:
            run.say(f"split {index} test ({len(test_recs)} images, best epoch {best_epoch}, "
                    f"{'by val SRCC' if val_recs else 'last epoch'}): {test.line()}")
        else:
            run.say(f"split {index}: test part has {len(test_recs)} image(s), fewer than {MIN_PAIRS}: no correlations")
        run.say(f"checkpoints: {run_dir / BEST} (used), {run_dir / LAST}; metrics: {run_dir / METRICS_FILE}")
    save_state(finished=True)
    return result


def _diffusion_card(path: str | Path) -> dict:
    """The diffusion checkpoint's card, less its `stage` (which says that checkpoint's heads are untrained)."""
    return {k: v for k, v in read_metadata(path)[1].items() if k != "stage"}


def _card_base(run: _Run, index: int, n_train: int, n_val: int, n_test: int, ratios: str) -> dict:
    opts = run.opts
    dataset = run.splits.dataset()
    return {
        "trained": True,
        "training": {"dataset": dataset.name, "format": dataset.format, "root": str(dataset.root),
                     "csv": opts.csv, "split_file": str(opts.split_file), "split_index": index,
                     "ratios": ratios, "images": {"train": n_train, "val": n_val, "test": n_test}},
        "selection": "best epoch by validation SRCC" if n_val else "last epoch (no validation part)",
        "init": str(opts.init) if opts.init else None,
        "diffusion_checkpoint": str(opts.diffusion) if opts.diffusion else None,
        "diffusion_training": _diffusion_card(opts.diffusion) if opts.diffusion else None,
        "optimizer": {"name": "Adam", "lr": opts.lr, "weight_decay": opts.weight_decay, "schedule": "cosine",
                      "t_max": opts.epochs, "batch_per_process": opts.batch, "processes": run.dist.world,
                      "loss": "MSE on normalised MOS"},
        "crops": opts.crops, "freeze_backbones": opts.freeze_backbones, "seed": opts.seed,
        "command": opts.command or f"train({_plain(asdict(opts))})",
    }


def _finished_result(index: int, run_dir: Path) -> SplitResult:
    m = json.loads((run_dir / METRICS_FILE).read_text())
    return SplitResult(index=index, run_dir=run_dir, best_checkpoint=run_dir / BEST,
                       last_checkpoint=run_dir / LAST, epochs=int(m["epochs"]), best_epoch=int(m["best_epoch"]),
                       selection=m["selection"], val=_correlations_from(m.get("val")),
                       test=_correlations_from(m.get("test")))


# ---------------------------------------------------------------------------------------------
# CLI


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the quality model on a rated dataset (one split or N splits)",
                              description=__doc__)
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="dataset layout")
    p.add_argument("--csv", default=None, help="label file instead of the layout's default (generic: meta.csv)")
    p.add_argument("--split-file", required=True, help="splits JSON made by `python -m iqa splits`")
    p.add_argument("--split-index", type=int, default=0, help="which split of the file to train (0-based)")
    p.add_argument("--splits", type=int, default=None,
                   help="run splits 0..N-1 (e.g. 10 for the 10-split protocol) and write results.json")
    p.add_argument("--preset", default=None, metavar="P",
                   help=f"{', '.join(sorted(PRESETS))}, optionally with an ablation such as lite:vcg-only "
                        f"({', '.join(ABLATIONS)}); default {DEFAULT_PRESET}")
    p.add_argument("--init", default=None, help="checkpoint to fine-tune (its weights and config)")
    p.add_argument("--allow-random-backbone", action="store_true",
                   help="build the preset on random backbone weights when no pretrained ones are reachable")
    p.add_argument("--diffusion", default=None, help="checkpoint with the trained diffusion network (train-diffusion)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs (also the cosine T_max)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="images per step and process")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY, help="Adam weight decay")
    p.add_argument("--crops", type=int, default=DEFAULT_CROPS, help="K fixed crops per image (test average)")
    p.add_argument("--freeze-backbones", action="store_true",
                   help="train the heads only, on backbone features cached once (fast on CPU)")
    p.add_argument("--flip-features", action=argparse.BooleanOptionalAction, default=True,
                   help="with --freeze-backbones, also cache the flipped crops (2x cache time)")
    p.add_argument("--out", default=DEFAULT_OUT, help="run folder")
    p.add_argument("--cache", default=None, help="cache folder for diffusion outputs and features (default OUT/cache)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="data-loading processes")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--save-every", type=int, default=DEFAULT_SAVE_EVERY,
                   help="also save the resumable state every N steps (0: at epoch ends only)")
    p.set_defaults(func=run)


def run(args) -> int:
    names = {f.name for f in fields(TrainOptions)} - {"command"}  # args.command is the sub-command name
    opts = TrainOptions(**{k: v for k, v in vars(args).items() if k in names},
                        command=shlex.join(["python", "-m", "iqa", *sys.argv[1:]]))
    try:
        result = train(opts)
    except (ValueError, OSError) as err:  # DatasetError, CheckpointError, TrainError, ImageError, missing files
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if result.splits else 1
