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
import shlex
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.distributed as tdist

from iqa.assess import resolve_device
from iqa.checkpoint import WEIGHTS, weights_path
from iqa.config import ABLATIONS, PRESETS
from iqa.data.datasets import FORMATS, load_dataset
from iqa.data.splits import load_splits
from iqa.metrics import Correlations, MetricSummary, summarise
from iqa.train_iqa_split import (DEFAULT_LR, DEFAULT_PRESET, DEFAULT_WEIGHT_DECAY, STATE_VERSION, RunContext,
                                 SplitResult, TrainError, build_model, build_optimizer, prepare_model, quality_loss,
                                 train_split, write_json)
from iqa.training import STATE, init_distributed

__all__ = ["STATE", "TrainError", "TrainOptions", "TrainResult", "SplitResult", "build_model", "build_optimizer",
           "prepare_model", "quality_loss", "train"]

DEFAULT_EPOCHS = 50  # the paper's cosine T_max
DEFAULT_BATCH = 4
DEFAULT_SAVE_EVERY = 200  # optimizer steps between mid-epoch state saves (0: at epoch ends only)
DEFAULT_WORKERS = 2
DEFAULT_OUT = "runs/train"
EVAL_CROPS = 3  # fixed crops per rated image, cached per crop in training (the test average; tiles vary per size)
CACHE_DIR, RESULTS_FILE = "cache", "results.json"
SPLIT_DIR = "split_{:02d}"



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
    crops: int = EVAL_CROPS  # K fixed crop windows per image (test average; restored windows in "crops" mode)
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
class TrainResult:
    """A training run: one split, or the splits of the N-split protocol with their summary."""

    run_dir: Path
    splits: list[SplitResult]
    summary: dict[str, MetricSummary] | None = None
    results_file: Path | None = None

    @property
    def test(self) -> Correlations | None:
        return self.splits[0].test if len(self.splits) == 1 else None



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
        run = RunContext(opts, device, dist, splits, Path(opts.cache) if opts.cache else out / CACHE_DIR)
        run.fingerprint = {
            "version": STATE_VERSION, "data": str(dataset.root), "format": dataset.format, "csv": opts.csv,
            "split_file": str(Path(opts.split_file).resolve()), "preset": opts.preset,
            "init": str(opts.init) if opts.init else None, "diffusion": str(opts.diffusion) if opts.diffusion else None,
            "epochs": opts.epochs, "batch": opts.batch, "lr": opts.lr, "weight_decay": opts.weight_decay,
            "crops": opts.crops, "freeze_backbones": opts.freeze_backbones, "flip_features": opts.flip_features,
            "seed": opts.seed, "world": dist.world,
        }
        results = [train_split(run, k, out / SPLIT_DIR.format(k) if opts.splits else out) for k in indices]
        summary = results_file = None
        if opts.splits:
            tests = [r.test for r in results if r.test is not None]
            summary = summarise(tests) if tests else None
            results_file = out / RESULTS_FILE
            if dist.main:
                write_json(results_file, {
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
    p.add_argument("--crops", type=int, default=EVAL_CROPS, help="K fixed crops per image (test average)")
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
