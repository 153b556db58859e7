"""`python -m iqa benchmark`: parameter counts and per-stage time for one image, with machine facts;
with `--train`, the images/s of one `train-rank` step in float32, bf16 autocast and channels_last."""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from iqa.assess import DEFAULT_CHECKPOINT as DEFAULT_CHECKPOINT_PATH
from iqa.assess import Assessor, load
from iqa.model import count_parameters

DEFAULT_SIZE = (512, 384)
TRAIN_MODES = ("float32", "bf16", "channels_last", "channels_last+bf16")


@dataclass
class BenchmarkResult:
    preset: str
    device: str
    machine: str
    size: tuple[int, int]
    crops: int
    steps: int
    parameters: dict[str, int]
    seconds: dict[str, float]  # per stage, from the timed run
    images_per_s: float


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


def run_benchmark(assessor: Assessor, size=DEFAULT_SIZE, crops: int = 3, steps: int | None = None,
                  warmup: bool = True) -> BenchmarkResult:
    m = assessor.model
    img = test_image(size)
    if warmup:
        assessor.assess(img, crops=crops, steps=steps)
    t = time.perf_counter()
    result = assessor.assess(img, crops=crops, steps=steps)
    wall = time.perf_counter() - t
    params = {"diffusion": count_parameters(m.diffusion), "backbones": count_parameters(m.backbone)
              + count_parameters(m.vda_backbone), "vcg": count_parameters(m.vcg),
              "vda": count_parameters(m.vda), "total": count_parameters(m)}
    return BenchmarkResult(
        preset=assessor.cfg.name, device=str(assessor.device), machine=machine_info(assessor.device),
        size=tuple(size), crops=len(result.crops), steps=steps or assessor.cfg.diffusion.sample_steps,
        parameters=params, seconds={k: round(v, 3) for k, v in result.timings.items()},
        images_per_s=1.0 / wall)


def format_result(r: BenchmarkResult) -> str:
    lines = [f"preset {r.preset} on {r.device} ({r.machine})",
             f"image {r.size[0]}x{r.size[1]}, {r.crops} crops, {r.steps} sampling steps", "parameters:"]
    lines += [f"  {k:<10} {v / 1e6:8.2f} M" for k, v in r.parameters.items()]
    lines.append("seconds:")
    lines += [f"  {k:<10} {v:8.3f}" for k, v in r.seconds.items()]
    lines.append(f"images/s   {r.images_per_s:.3f}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="parameter counts and per-stage time for one 512x384 image",
                       description="Times one assessment of a 512x384 photo (after a warm-up run) and "
                                   "prints parameter counts, per-stage seconds and machine facts.")
    p.add_argument("--preset", default=None, help="paper, lite or tiny (untrained heads: timing only)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint instead of a preset")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--crops", type=int, default=3, help="crops per image (default 3)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    p.add_argument("--size", default="512x384", help="image size WxH (default 512x384)")
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up run (slow presets on CPU)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--train", action="store_true",
                   help="time a train-rank step instead (float32, bf16 autocast, channels_last) of --checkpoint")
    p.add_argument("--series", type=int, default=3, help="with --train: ranked series (10 crops each) per step")
    p.add_argument("--repeats", type=int, default=3, help="with --train: timed steps per mode (after a warm-up)")
    p.add_argument("--modes", nargs="+", choices=TRAIN_MODES, default=list(TRAIN_MODES), help="with --train: what to time")
    p.set_defaults(func=run)


def train_throughput(model, series: int = 3, crop: int = 224, repeats: int = 3,
                     modes: tuple[str, ...] = TRAIN_MODES, free_from_block: int = 4, say=None) -> dict[str, float]:
    """Images/s of a train-rank step (forward + backward + AdamW step; `RankConfig` defaults) on
    random series of 10 crops, for each mode; the first step of each mode is a warm-up."""
    from iqa.data.stream import CLEAN, Batch
    from iqa.train_rank import RankConfig, prepare, step_loss, train_mode
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
                  series=torch.arange(series).repeat_interleave(per), kind=kind, level=level, mos=torch.rand(n))
    device = next(model.parameters()).device
    out = {}
    for mode in modes:
        model.to(memory_format=torch.channels_last if "channels_last" in mode else torch.contiguous_format)
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
        train_throughput(model, series=args.series, repeats=args.repeats, modes=tuple(args.modes),
                         say=lambda line: print(line, flush=True))
        return 0
    w, h = (int(v) for v in args.size.lower().split("x"))
    assessor = load(args.checkpoint or args.preset or None, device=args.device)
    r = run_benchmark(assessor, (w, h), args.crops, args.steps, warmup=not args.no_warmup)
    print(json.dumps(asdict(r), indent=2) if args.json else format_result(r))
    return 0
