"""Which fast paths change the score? Time and score change of assessment variants against a reference.

For the test part of a photo folder (resized to `--side` px, long side) and the six plain kinds at
levels 1, 3, 5, it scores every image with each variant of the pipeline: where the diffusion runs
(`DiffusionConfig.on`: each crop, or the crops' bounding region when smaller), which stages run in
bf16 autocast, the U-Net at half resolution (`DiffusionConfig.unet_scale`) and the backbones'
BatchNorms folded into their convolutions (`Assessor(fold_batchnorm=...)`). It prints, per
variant, the median seconds per image and the mean / largest absolute score change against the first
variant, beside the change that another noise seed alone makes. `--variants` picks some by number
(the first one picked is the reference).

    python scripts/precision_probe.py --photos ../shared/pristine
    python scripts/precision_probe.py --photos ../shared/pristine --variants 4,7,5,6
    python scripts/precision_probe.py --photos ../shared/pristine --variants 6,8
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iqa.assess import Assessor, load
from iqa.data.plain import PLAIN_KINDS
from iqa.data.stream import StreamConfig, training_photos
from iqa.images import load_image
from iqa.levels import distorted

PROBE_LEVELS = (1, 3, 5)


@dataclass
class Variant:
    name: str
    on: str
    bf16: tuple[str, ...]
    seed: int = 0
    unet_scale: int = 1  # DiffusionConfig.unet_scale
    full_res_steps: int = 0  # DiffusionConfig.full_res_steps
    fold_batchnorm: bool | None = None  # the backbones' BatchNorms folded (None: `load`'s rule, float32 only)


VARIANTS = (
    Variant("crops, float32 (reference)", "crops", ()),
    Variant("crops, float32, noise seed 1", "crops", (), seed=1),
    Variant("region, float32", "region", ()),
    Variant("region, bf16 diffusion + vcg", "region", ("diffusion", "vcg")),
    Variant("region, bf16 all (diffusion, backbones, vcg)", "region", ("diffusion", "backbones", "vcg")),
    Variant("region, bf16 all, U-Net at 1/2 resolution", "region", ("diffusion", "backbones", "vcg"), unet_scale=2),
    Variant("region, bf16 all, U-Net at 1/2, last step full", "region", ("diffusion", "backbones", "vcg"), unet_scale=2,
            full_res_steps=1),
    Variant("region, bf16 all, noise seed 1", "region", ("diffusion", "backbones", "vcg"), seed=1),
    Variant("region, bf16 all, U-Net at 1/2, last step full, BatchNorm folded", "region",
            ("diffusion", "backbones", "vcg"), unet_scale=2, full_res_steps=1, fold_batchnorm=True),
    Variant("region, float32, BatchNorm not folded", "region", (), fold_batchnorm=False),
)


@dataclass
class VariantResult:
    name: str
    median_s: float
    mean_abs_change: float
    max_abs_change: float


def probe_images(photos: list[Path], side: int) -> list[np.ndarray]:
    """Each photo at `side` px (long side) and its plain distortions at `PROBE_LEVELS`."""
    out = []
    for i, path in enumerate(photos):
        a = load_image(path).array
        h, w = a.shape[:2]
        f = side / max(h, w)
        a = cv2.resize(a, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        out.append(a)
        out += [distorted(a, kind, level, 0, i) for kind in PLAIN_KINDS for level in PROBE_LEVELS]
    return out


def run_variants(assessor_for: Callable[[Variant], Assessor], images: list[np.ndarray],
                 variants=VARIANTS) -> list[VariantResult]:
    """Score `images` under each variant with the assessor `assessor_for(variant)` builds for it (a fresh
    one each, so no result is served from another variant's memory)."""
    scores, results = [], []
    for v in variants:
        assessor = assessor_for(v)
        runs = [assessor.assess(a, seed=v.seed) for a in images]
        s = np.array([r.score for r in runs])
        scores.append(s)
        change = np.abs(s - scores[0])
        results.append(VariantResult(v.name, float(np.median([r.timings["total"] for r in runs])),
                                     float(change.mean()), float(change.max())))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", required=True, help="folder of pristine photos (its test part is used)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled one)")
    p.add_argument("--side", type=int, default=512, help="long side the photos are resized to")
    p.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    p.add_argument("--variants", default=None, metavar="I,J,...",
                   help="numbers of the variants to run, the reference first (default: all, in order): "
                        + "; ".join(f"{i} {v.name}" for i, v in enumerate(VARIANTS)))
    args = p.parse_args(argv)
    try:
        variants = [VARIANTS[int(i)] for i in args.variants.split(",")] if args.variants else list(VARIANTS)
    except (ValueError, IndexError):
        p.error(f"--variants {args.variants!r}: give numbers from 0 to {len(VARIANTS) - 1}, comma-separated")
    photos = training_photos(StreamConfig(photos=args.photos, part="test"))
    photos = photos[:args.limit] if args.limit else photos
    images = probe_images(photos, args.side)
    print(f"{len(images)} images ({len(photos)} photos at {args.side} px, plain kinds at levels {PROBE_LEVELS})")
    print(f"{'variant':70s} {'median s':>9s} {'mean |Δ|':>9s} {'max |Δ|':>9s}")
    for r in run_variants(lambda v: load(args.checkpoint, device="cpu", bf16=v.bf16, diffusion_on=v.on,
                                        diffusion_scale=v.unet_scale, full_res_steps=v.full_res_steps,
                                        fold_batchnorm=v.fold_batchnorm),
                          images, variants):
        print(f"{r.name:70s} {r.median_s:9.3f} {r.mean_abs_change:9.4f} {r.max_abs_change:9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
