"""One split of `python -m iqa train`: its model, caches, epochs, validation, checkpoints and test.

`train_split` trains one split of a `train` call (`RunContext`: what the splits share), resuming its
state.pt; `iqa.train_iqa` holds the options, the loop over splits and the CLI.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_model
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from iqa.assess import Assessor
from iqa.cache import DEFAULT_SEED, FEATURES_DIR, STATES_DIR, DiffusionCache, FeatureCache
from iqa.checkpoint import WEIGHTS, CheckpointError, load_checkpoint, read_metadata, save_checkpoint, weights_path
from iqa.config import preset
from iqa.data.records import Record
from iqa.data.splits import SplitSet
from iqa.diffusion import Diffusion
from iqa.metrics import MIN_PAIRS, Correlations
from iqa.model import DiffV2IQA
from iqa.progress import progress_bar
from iqa.train_iqa_data import Scorer, SkipSampler, TrainSet, correlate, predict
from iqa.training import LOG, STATE, DistInfo, JsonlLog, atomic_save, autocast, load_state, seed_everything

if TYPE_CHECKING:
    from iqa.train_iqa import TrainOptions

DEFAULT_PRESET = "lite"
DEFAULT_LR = 1e-5
DEFAULT_WEIGHT_DECAY = 1e-5
STATE_VERSION = 1
BEST, LAST = "best", "last"
METRICS_FILE = "metrics.json"
NO_VAL_NOTICE = ("no validation part in this split ({ratios}): the LAST epoch's weights are used "
                 "(the test part never selects a checkpoint)")


class TrainError(ValueError):
    """A training request that cannot run; the message says what to change."""


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


# ---------------------------------------------------------------------------------------------
# Model, checkpoints, files


def diffusion_from(path: str | Path):
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
        dcfg, sd = diffusion_from(opts.diffusion)
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


def jsonable(obj: Any) -> Any:
    """JSON-ready copy: dataclasses to dicts, paths to str, NaN / inf to None."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2))
    tmp.replace(path)


def correlations_from(d: dict | None) -> Correlations | None:
    if not d:
        return None
    names = {f.name for f in fields(Correlations)}
    kw = {k: (float("nan") if v is None and k != "logistic_params" else v) for k, v in d.items() if k in names}
    if kw.get("logistic_params") is not None:
        kw["logistic_params"] = tuple(kw["logistic_params"])
    return Correlations(**kw)



@dataclass
class RunContext:
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


@dataclass
class _Progress:
    """Where a split's training stands: what state.pt stores besides the weights and optimizer."""

    epoch: int = 0
    step: int = 0  # optimizer steps into the current epoch
    global_step: int = 0
    loss_sum: float = 0.0  # over the current epoch, for its mean loss
    loss_count: int = 0
    best_srcc: float | None = None
    best_epoch: int = 0

    @classmethod
    def from_state(cls, state: dict) -> "_Progress":
        return cls(int(state["epoch"]), int(state["step"]), int(state["global_step"]), float(state["loss_sum"]),
                   int(state["loss_count"]), state["best_srcc"], int(state["best_epoch"]))


@dataclass
class _SplitRun:
    """One split's training: its records, caches, model and optimizer."""

    run: RunContext
    index: int
    run_dir: Path
    train: list[Record]
    val: list[Record]
    test: list[Record]
    fingerprint: dict
    model: DiffV2IQA | None = None
    scorer: Scorer | None = None
    states: DiffusionCache | None = None
    features: FeatureCache | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    progress: _Progress = field(default_factory=_Progress)

    def predict(self, records: list[Record]) -> np.ndarray:
        opts, run = self.run.opts, self.run
        return predict(self.scorer, records, self.states, self.features, run.device, opts.workers, run.dist)

    def save_state(self, finished: bool = False) -> None:
        if self.run.dist.main:
            device = self.run.device
            atomic_save({
                "version": STATE_VERSION, "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
                **asdict(self.progress), "finished": finished, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            }, self.run_dir / STATE)
        self.run.barrier()


def train_split(run: RunContext, index: int, run_dir: Path) -> SplitResult:
    """Train one split (resuming its state.pt), pick the best epoch on val, test it once."""
    opts, device = run.opts, run.device
    t_start = time.perf_counter()
    parts = run.splits.part_names
    sp = _SplitRun(run, index, run_dir, run.splits.part(index, "train"),
                run.splits.part(index, "val") if "val" in parts else [], run.splits.part(index, "test"),
                {**run.fingerprint, "split_index": index})
    ratios = ":".join(f"{r:g}" for r in run.splits.ratios)
    if not sp.train:
        raise TrainError(f"split {index} of {opts.split_file} has no training images.")
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _check_state(sp)
    if state is not None and state.get("finished") and (run_dir / METRICS_FILE).is_file():
        run.say(f"split {index}: already finished ({run_dir / METRICS_FILE}); use another --out to train again")
        return _finished_result(index, run_dir)

    seed_everything(opts.seed)
    sp.model, notices = build_model(opts)
    for n in notices:
        run.say(f"note: {n}")
    if not sp.val:
        run.say("note: " + NO_VAL_NOTICE.format(ratios=ratios))
    _fill_caches(sp)
    sp.scorer = Scorer(sp.model, sp.features.layout if sp.features else None)
    sp.optimizer = build_optimizer(sp.model, opts.lr, opts.weight_decay)
    sp.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(sp.optimizer, T_max=opts.epochs)
    resumed = None
    if state is not None:
        sp.model.load_state_dict(state["model"])
        sp.optimizer.load_state_dict(state["optimizer"])
        sp.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        sp.progress = _Progress.from_state(state)
        resumed = (sp.progress.epoch, sp.progress.step)
        run.say(f"resuming from epoch {resumed[0]}, step {resumed[1]} ({run_dir / STATE})")

    card_base = _card_base(run, index, len(sp.train), len(sp.val), len(sp.test), ratios)
    card_base["backbone_weights"] = sp.model.weights_sources()
    _train_epochs(sp, card_base)
    return _test_split(sp, card_base, resumed, t_start)


def _check_state(sp: _SplitRun) -> dict | None:
    """The split's saved state, if any; an error when it was made with other settings."""
    state = load_state(sp.run_dir)
    if state is not None and state.get("fingerprint") != json.dumps(sp.fingerprint, sort_keys=True):
        old = json.loads(state.get("fingerprint") or "{}")
        diff = sorted(k for k in set(old) | set(sp.fingerprint) if old.get(k) != sp.fingerprint.get(k))
        raise TrainError(f"{sp.run_dir} holds a run with other settings ({', '.join(diff)} differ); "
                         "re-run its exact command to resume, or pick another --out.")
    return state


def _fill_caches(sp: _SplitRun) -> None:
    """Diffusion states of every image of the split (and backbone features with frozen backbones)."""
    run, opts, dist = sp.run, sp.run.opts, sp.run.dist
    assessor = Assessor(sp.model, device=str(run.device))  # moves the model to the device
    sp.states = DiffusionCache(run.cache_root / STATES_DIR, assessor, opts.crops, seed=DEFAULT_SEED)
    everything = [r.image for r in sp.train + sp.val + sp.test]
    sp.states.fill(everything, dist.rank, dist.world, progress=dist.main and opts.progress)
    run.barrier()
    if opts.freeze_backbones:
        sp.features = FeatureCache(run.cache_root / FEATURES_DIR, sp.model, sp.states, flips=opts.flip_features)
        sp.features.fill(everything, dist.rank, dist.world, progress=dist.main and opts.progress)
        run.barrier()


def _train_epochs(sp: _SplitRun, card_base: dict) -> None:
    """The epochs left: train, step the schedule, validate, save checkpoints, the log and the state."""
    opts, dist, device, pr = sp.run.opts, sp.run.dist, sp.run.device, sp.progress
    train_set = TrainSet(sp.train, sp.states, sp.features, opts.seed)
    sampler = DistributedSampler(train_set, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=opts.seed)
    steps_per_epoch = math.ceil(len(sampler) / opts.batch)
    net: nn.Module = sp.scorer
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(
            sp.scorer, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    sp.model.train()
    while pr.epoch < opts.epochs:
        t_epoch = time.perf_counter()
        sampler.set_epoch(pr.epoch)
        train_set.epoch = pr.epoch
        first_step = pr.step
        loader = DataLoader(train_set, batch_size=opts.batch, sampler=SkipSampler(sampler, pr.step * opts.batch),
                            num_workers=opts.workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(opts.seed))
        bar = progress_bar(loader, total=steps_per_epoch, initial=pr.step, leave=False, unit="step",
                           desc=f"epoch {pr.epoch + 1}/{opts.epochs}", disable=not (dist.main and opts.progress))
        images = 0
        for x, mos in bar:
            x, mos = x.to(device, non_blocking=True), mos.to(device, non_blocking=True)
            with autocast(device):
                pred = net(x)
            loss = quality_loss(pred, mos)
            sp.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sp.optimizer.step()
            pr.step += 1
            pr.global_step += 1
            images += len(x) * dist.world
            pr.loss_sum += float(loss.detach()) * len(x)
            pr.loss_count += len(x)
            bar.set_postfix(loss=f"{pr.loss_sum / max(pr.loss_count, 1):.4f}")
            if opts.save_every and pr.global_step % opts.save_every == 0 and pr.step < steps_per_epoch:
                sp.save_state()
        bar.close()
        lr = sp.optimizer.param_groups[0]["lr"]
        sp.scheduler.step()
        pr.epoch += 1
        stats = {"lr": lr, "images_per_s": images / max(time.perf_counter() - t_epoch, 1e-9),
                 "steps": pr.step - first_step, **({"resumed_at_step": first_step} if first_step else {})}
        _end_epoch(sp, card_base, stats, t_epoch)
        pr.step, pr.loss_sum, pr.loss_count = 0, 0.0, 0
        sp.save_state()


def _end_epoch(sp: _SplitRun, card_base: dict, stats: dict, t_epoch: float) -> None:
    """Validate the epoch's weights, keep them as best/ when val SRCC improved, write last/ and the log
    (`stats`: the epoch's lr, images/s, steps and where it resumed, as logged)."""
    run, opts, pr = sp.run, sp.run.opts, sp.progress
    val = correlate(sp.predict(sp.val), sp.val) if sp.val else None
    improved = val is None or pr.best_srcc is None or (math.isfinite(val.srcc) and val.srcc > pr.best_srcc)
    if improved:
        pr.best_srcc = val.srcc if (val is not None and math.isfinite(val.srcc)) else pr.best_srcc
        pr.best_epoch = pr.epoch
    if not run.dist.main:
        return
    card = {**card_base, "epochs": pr.epoch, "metrics": {"val": val}}
    save_checkpoint(sp.model, sp.run_dir / LAST, jsonable(card))
    if improved:
        save_checkpoint(sp.model, sp.run_dir / BEST, jsonable({**card, "best_epoch": pr.epoch}))
    loss_mean = pr.loss_sum / max(pr.loss_count, 1)
    record = {"epoch": pr.epoch, "loss": loss_mean, "val_srcc": val.srcc if val else None,
              "val_plcc": val.plcc if val else None, **stats, "seconds": time.perf_counter() - t_epoch}
    log = JsonlLog(sp.run_dir / LOG)
    if not any(r.get("epoch") == pr.epoch for r in log.read()):  # a kill just after logging: no duplicate
        log.write(**jsonable(record))
    val_text = f", val SRCC {val.srcc:.4f} PLCC {val.plcc:.4f}" if val else ""
    run.say(f"epoch {pr.epoch}/{opts.epochs}: loss {loss_mean:.5f}{val_text}, lr {record['lr']:.2e}, "
            f"{record['images_per_s']:.1f} img/s")


def _test_split(sp: _SplitRun, card_base: dict, resumed: tuple[int, int] | None, t_start: float) -> SplitResult:
    """Score the test part once with the chosen weights; write metrics.json and the best/ card."""
    run, pr, run_dir, index = sp.run, sp.progress, sp.run_dir, sp.index
    run.barrier()
    load_model(sp.model, str(run_dir / BEST / WEIGHTS), device=str(run.device))
    test_pred = sp.predict(sp.test)
    test = correlate(test_pred, sp.test)
    val_best = correlate(sp.predict(sp.val), sp.val) if sp.val else None
    selection = "val_srcc" if sp.val else "last_epoch"
    result = SplitResult(index=index, run_dir=run_dir, best_checkpoint=run_dir / BEST,
                         last_checkpoint=run_dir / LAST, epochs=pr.epoch, best_epoch=pr.best_epoch,
                         selection=selection, val=val_best, test=test, resumed_from=resumed,
                         seconds=time.perf_counter() - t_start)
    if run.dist.main:
        dataset = run.splits.dataset()
        metrics = {"split_index": index, "selection": selection, "best_epoch": pr.best_epoch, "epochs": pr.epoch,
                   "val": val_best, "test": test,
                   "note": "mean over the K fixed crops per image; plcc raw, plcc_logistic after a 4-parameter fit",
                   "predictions": [{"image": dataset.relative(r.image), "mos": r.mos, "pred": float(p)}
                                   for r, p in zip(sp.test, test_pred)]}
        write_json(run_dir / METRICS_FILE, metrics)
        card = {**card_base, "epochs": pr.epoch, "best_epoch": pr.best_epoch,
                "metrics": {"val": val_best, "test": test}}
        save_checkpoint(sp.model, run_dir / BEST, jsonable(card))
        if test is not None and np.ptp(test_pred) == 0:
            run.say(f"warning: the model gives every test image the same score ({test_pred[0]:.4g}); its score "
                    "head may be stuck at 0 (ReLU). Try another --seed, a higher --lr or more epochs.")
        if test is not None:
            run.say(f"split {index} test ({len(sp.test)} images, best epoch {pr.best_epoch}, "
                    f"{'by val SRCC' if sp.val else 'last epoch'}): {test.line()}")
        else:
            run.say(f"split {index}: test part has {len(sp.test)} image(s), fewer than {MIN_PAIRS}: no correlations")
        run.say(f"checkpoints: {run_dir / BEST} (used), {run_dir / LAST}; metrics: {run_dir / METRICS_FILE}")
    sp.save_state(finished=True)
    return result


def _diffusion_card(path: str | Path) -> dict:
    """The diffusion checkpoint's card, less its `stage` (which says that checkpoint's heads are untrained)."""
    return {k: v for k, v in read_metadata(path)[1].items() if k != "stage"}


def _card_base(run: RunContext, index: int, n_train: int, n_val: int, n_test: int, ratios: str) -> dict:
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
        "command": opts.command or f"train({jsonable(asdict(opts))})",
    }


def _finished_result(index: int, run_dir: Path) -> SplitResult:
    m = json.loads((run_dir / METRICS_FILE).read_text())
    return SplitResult(index=index, run_dir=run_dir, best_checkpoint=run_dir / BEST,
                       last_checkpoint=run_dir / LAST, epochs=int(m["epochs"]), best_epoch=int(m["best_epoch"]),
                       selection=m["selection"], val=correlations_from(m.get("val")),
                       test=correlations_from(m.get("test")))
