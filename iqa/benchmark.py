"""`python -m iqa benchmark`: parameter counts and per-stage time for one image, with machine facts;
with `--train`, the images/s of one `train-rank` step in float32, bf16 autocast and channels_last."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqa.assess import DEFAULT_CHECKPOINT as DEFAULT_CHECKPOINT_PATH
from iqa.assess import DEFAULT_CROPS, Assessor, load
from iqa.images import ImageError
from iqa.progress import progress_bar
from iqa.score import add_diffusion_scale_option, add_fold_batchnorm_option, collect_images, parse_bf16

DEFAULT_SIZE = (512, 384)
DEFAULT_REPEATS = 5
TARGET_BEST_S, TARGET_MEDIAN_S = 0.5, 0.6  # issue 20: a 512x384 photo on 2 CPU cores
TRAIN_TARGET = 25.0  # images/s of a train-rank step on 2 CPU cores (issue 20)
TRAIN_MODES = ("float32", "bf16", "channels_last", "channels_last+bf16")


@dataclass
class BenchmarkResult:
    """One benchmark run: the model's seconds per image (best / median of `repeats` after a warm-up),
    its per-stage median seconds, BRISQUE on the same image, and a cached re-analysis."""

    preset: str
    device: str
    machine: str
    size: tuple[int, int]
    crops: int
    steps: int
    repeats: int
    parameters: dict[str, int]
    seconds: dict[str, float]  # per stage, median over the repeats
    best_s: float
    median_s: float
    brisque_best_s: float
    brisque_median_s: float
    cached_s: float  # the same image and settings again (the Inspect tab's redraws, a repeated click)
    diffusion_on: str = ""  # DiffusionConfig.on: where the diffusion ran
    unet_scale: int = 1  # DiffusionConfig.unet_scale: the U-Net ran at 1/unet_scale resolution
    full_res_steps: int = 0  # DiffusionConfig.full_res_steps: ... except in these last sampling steps
    bf16: tuple[str, ...] = ()  # stages run under bf16 autocast
    batchnorm_folded: bool = False  # the backbones' BatchNorms folded into their convolutions
    target_best_s: float = TARGET_BEST_S
    target_median_s: float = TARGET_MEDIAN_S

    @property
    def images_per_s(self) -> float:
        return 1.0 / self.median_s

    @property
    def ratio(self) -> float:
        """How many times BRISQUE's median time the model's median takes."""
        return self.median_s / self.brisque_median_s

    @property
    def target_met(self) -> bool:
        return self.best_s <= self.target_best_s and self.median_s <= self.target_median_s


def machine_info(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def test_image(size: tuple[int, int]) -> np.ndarray:
    """A natural photo (scikit-image's astronaut) resized to `size` (W, H)."""
    from skimage.data import astronaut

    return np.asarray(Image.fromarray(astronaut()).resize(size, Image.Resampling.BICUBIC))


def _times(fn, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def run_benchmark(assessor: Assessor, size=DEFAULT_SIZE, crops: int = DEFAULT_CROPS, steps: int | None = None,
                  warmup: bool = True, repeats: int = DEFAULT_REPEATS) -> BenchmarkResult:
    """Time `repeats` assessments of one photo (each with its own seed, so none is served from the
    assessor's memory), then the same image once more (served from it), and BRISQUE on the image."""
    from iqa.peers import load_peer
    if repeats < 1:
        raise ValueError(f"repeats {repeats}: at least 1 timed run")
    m = assessor.model
    img = test_image(size)
    brisque = load_peer("brisque")
    if warmup:
        assessor.assess(img, crops=crops, steps=steps, seed=-1)
        brisque.score(img)
    results = []
    times = _times(lambda i: results.append(assessor.assess(img, crops=crops, steps=steps, seed=i)), repeats)
    cached = _times(lambda i: assessor.assess(img, crops=crops, steps=steps, seed=repeats - 1), 1)[0]
    b_times = _times(lambda i: brisque.score(img), repeats)
    stages = {k: round(float(np.median([r.timings.get(k, 0.0) for r in results])), 4) for k in results[0].timings}
    params = m.parameter_counts()
    return BenchmarkResult(
        preset=assessor.cfg.name, device=str(assessor.device), machine=machine_info(assessor.device),
        size=tuple(size), crops=len(results[0].crops), steps=steps or assessor.cfg.diffusion.sample_steps,
        repeats=repeats, parameters=params, seconds=stages, best_s=min(times), median_s=float(np.median(times)),
        brisque_best_s=min(b_times), brisque_median_s=float(np.median(b_times)), cached_s=cached,
        diffusion_on=assessor.cfg.diffusion.on if m.diffusion is not None else "none", bf16=tuple(assessor.bf16),
        unet_scale=assessor.cfg.diffusion.unet_scale, full_res_steps=assessor.cfg.diffusion.full_res_steps,
        batchnorm_folded=m.batchnorm_folded)


def _unet_resolution(r: BenchmarkResult) -> str:
    if r.unet_scale == 1:
        return ""
    last = f", its last {r.full_res_steps} step(s) at full" if r.full_res_steps else ""
    return f" (U-Net at 1/{r.unet_scale} resolution{last})"


def format_result(r: BenchmarkResult) -> str:
    lines = [f"preset {r.preset} on {r.device} ({r.machine})",
             f"image {r.size[0]}x{r.size[1]}, {r.crops} crops, {r.steps} sampling steps, "
             f"{r.repeats} timed runs after a warm-up",
             f"diffusion on: {r.diffusion_on}{_unet_resolution(r)}; "
             f"bf16 autocast: {', '.join(r.bf16) or 'none (float32)'}; "
             f"backbone BatchNorms {'folded into their convolutions' if r.batchnorm_folded else 'as trained'}",
             "parameters:"]
    lines += [f"  {k:<10} {v / 1e6:8.2f} M" for k, v in r.parameters.items()]
    lines.append("seconds per stage (median):")
    lines += [f"  {k:<18} {v:8.4f}" for k, v in r.seconds.items()]
    verdict = "met" if r.target_met else "NOT met"
    lines += [f"model:   best {r.best_s:.3f} s, median {r.median_s:.3f} s per image ({r.images_per_s:.2f} images/s)",
              f"BRISQUE: best {r.brisque_best_s:.4f} s, median {r.brisque_median_s:.4f} s on the same image",
              f"ratio:   the model takes {r.ratio:.0f}x BRISQUE's time",
              f"cached re-analysis (same image and settings): {r.cached_s:.4f} s",
              f"target:  best <= {r.target_best_s} s, median <= {r.target_median_s} s: {verdict}"]
    return "\n".join(lines)


@dataclass
class FolderResult:
    """`--batch-folder`: images assessed (and failed) in a folder, and the rate."""

    folder: str
    images: int
    failed: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def run_folder(assessor: Assessor, folder: str | Path, crops: int = DEFAULT_CROPS,
               steps: int | None = None) -> FolderResult:
    """Assess every image of a folder (as `python -m iqa score` finds them) and time the whole."""
    paths = collect_images([Path(folder)]).files
    if not paths:
        raise ValueError(f"{folder}: no images found")
    failed = 0
    t = time.perf_counter()
    for p in progress_bar(paths, desc="benchmark folder", unit="image"):
        try:
            assessor.assess(p, crops=crops, steps=steps)
        except ImageError:
            failed += 1
    return FolderResult(str(folder), len(paths) - failed, failed, time.perf_counter() - t)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="seconds per 512x384 image beside BRISQUE, per stage",
                       description="Times assessments of a 512x384 photo (best and median of --repeats after "
                                   "a warm-up), BRISQUE on the same image, a cached re-analysis, and prints "
                                   "parameter counts, per-stage median seconds and machine facts. "
                                   "--batch-folder times a folder; --train a training step.")
    p.add_argument("--preset", default=None, help="paper, lite or tiny (untrained heads: timing only)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint instead of a preset")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--crops", type=int, default=DEFAULT_CROPS,
                   help="crops per image (0: tile the whole image, the assessor's default)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    p.add_argument("--size", default="512x384", help="image size WxH (default 512x384)")
    p.add_argument("--allow-random-backbone", action="store_true",
                   help="with --preset: build on random backbone weights when no pretrained ones are reachable")
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up run (slow presets on CPU)")
    p.add_argument("--float32", action="store_true", help="every stage in float32 (same as --bf16 none)")
    p.add_argument("--bf16", type=parse_bf16, default="auto", metavar="STAGES",
                   help="stages run under bf16 autocast: auto (default: diffusion, backbones and VCG trunk on "
                        "CPUs with AMX, none elsewhere), none, or comma-separated names of diffusion, backbones, vcg")
    add_fold_batchnorm_option(p)
    add_diffusion_scale_option(p)
    p.add_argument("--batch-folder", default=None, metavar="DIR",
                   help="also assess every image of DIR and print images/s")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--train", action="store_true",
                   help="time a train-rank step instead (float32, bf16 autocast, channels_last) of --checkpoint")
    p.add_argument("--series", type=int, default=3, help="with --train: ranked series (10 crops each) per step")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed runs (default {DEFAULT_REPEATS}; with --train: timed steps per mode, default 3)")
    p.add_argument("--modes", nargs="+", choices=TRAIN_MODES, default=list(TRAIN_MODES),
                   help="with --train: what to time")
    p.set_defaults(func=run)


def train_throughput(model, series: int = 3, crop: int = 224, repeats: int = 3,
                     modes: tuple[str, ...] = TRAIN_MODES, free_from_block: int = 4, say=None) -> dict[str, float]:
    """Images/s of a train-rank step (forward + backward + AdamW step; `RankConfig` defaults) on
    random series of 10 crops, for each mode; the first step of each mode is a warm-up."""
    from iqa.data.stream import CLEAN, Batch
    from iqa.rank_optim import prepare
    from iqa.train_rank import RankConfig, step_loss, train_mode
    if repeats < 1:
        raise ValueError(f"repeats {repeats}: at least 1 timed step per mode")
    cfg = RankConfig(free_from_block=free_from_block)
    opt = torch.optim.AdamW(prepare(model, cfg), weight_decay=cfg.weight_decay)
    train_mode(model)
    n, per = series * 10, 10
    kind = torch.tensor(([CLEAN] + [0, 0, 0, 1, 1, 1, 2, 2, 2]) * series)
    level = torch.tensor(([0] + [1, 3, 5] * 3) * series)
    batch = Batch(states=torch.randint(0, 256, (n, 4 if model.cfg.use_diffusion else 1, 3, crop, crop),
                                       dtype=torch.uint8),
                  series=torch.arange(series).repeat_interleave(per), kind=kind, level=level, mos=torch.rand(n),
                  local=torch.rand(n, model.cfg.vcg.grid, model.cfg.vcg.grid))
    device = next(model.parameters()).device
    out = {}
    for mode in modes:
        model.to(memory_format=torch.contiguous_format)
        if "channels_last" in mode:
            model.to_channels_last()
        ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if "bf16" in mode
               else torch.autocast(device.type, enabled=False))
        times = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            with ctx:
                loss, _ = step_loss(model, batch, cfg, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        out[mode] = n / float(np.median(times[1:]))
        if say:
            say(f"train-rank step, {mode:>18}: {out[mode]:.2f} images/s")
    return out


def run(args: argparse.Namespace) -> int:
    if args.train:
        from iqa.assess import resolve_device
        from iqa.checkpoint import load_checkpoint
        model, _ = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT_PATH, device=resolve_device(args.device))
        print(machine_info(next(model.parameters()).device), f"torch threads: {torch.get_num_threads()}", flush=True)
        rates = train_throughput(model, series=args.series, repeats=args.repeats or 3, modes=tuple(args.modes),
                                 say=lambda line: print(line, flush=True))
        best = max(rates, key=rates.get)
        print(f"best: {rates[best]:.2f} images/s ({best}); target >= {TRAIN_TARGET:g} images/s: "
              f"{'met' if rates[best] >= TRAIN_TARGET else 'NOT met'}")
        return 0
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"error: --size {args.size!r}: give it as WIDTHxHEIGHT, e.g. 512x384", file=sys.stderr)
        return 2
    try:
        assessor = load(args.checkpoint or args.preset or None, device=args.device,
                        allow_random_backbone=args.allow_random_backbone, bf16=() if args.float32 else args.bf16,
                        diffusion_scale=args.diffusion_scale, full_res_steps=args.full_res_steps,
                        fold_batchnorm=args.fold_batchnorm)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    r = run_benchmark(assessor, (w, h), args.crops, args.steps, warmup=not args.no_warmup,
                      repeats=args.repeats or DEFAULT_REPEATS)
    folder = None
    if args.batch_folder:
        try:
            folder = run_folder(assessor, args.batch_folder, args.crops, args.steps)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.json:
        out = {**asdict(r), "images_per_s": r.images_per_s, "ratio_to_brisque": r.ratio, "target_met": r.target_met}
        if folder:
            out["batch_folder"] = {**asdict(folder), "images_per_s": folder.images_per_s}
        print(json.dumps(out, indent=2))
        return 0
    print(format_result(r))
    if folder:
        print(f"folder {folder.folder}: {folder.images} images in {folder.seconds:.1f} s "
              f"({folder.images_per_s:.2f} images/s), {folder.failed} failed")
    return 0
