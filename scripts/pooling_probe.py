"""How should the crops' scores make the image's score? The levels test under other poolings.

The image score is the mean of its crops' scores. With whole-image tiles (`--crops 0`) many crops hold
flat content (sky, walls) that shows a mild distortion barely, and the mean dilutes what the textured
ones see. This probe scores the levels test's images once (each photo of a split's part and its plain
distortions at 5 levels, as `python -m iqa levels` makes them) and keeps every crop's score, then
recomputes the test for poolings that keep only the best-scoring share of the crops (`--keep 1` is the
mean; `--keep 0.75` leaves out the lowest quarter). It also reports, for photos with one half damaged
(`iqa.localise`), how often the clean photo still scores above its half-damaged version, and by how
much on average: a pooling that ignores the worst crops must not ignore damage in part of the image.

    python scripts/pooling_probe.py --photos ../shared/pristine --part val --crops 0
    python scripts/pooling_probe.py --photos ../shared/pristine --part test --crops 3 --no-halves
    python scripts/pooling_probe.py --photos ../shared/pristine --part val --out runs/pooling-val-tiles.jsonl \
        --photo-rho contrast

Per-crop scores go to `--out` as they come (a stopped run resumes); nothing here changes the pipeline.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iqa.data.plain import PLAIN_KINDS, all_kinds
from iqa.data.stream import StreamConfig, training_photos
from iqa.images import load_image
from iqa.levels import MethodLevels, distorted, series_result, summarise
from iqa.localise import DAMAGES, SIDES, damage


def pooled(crop_scores: list[float], keep: float) -> float:
    """Mean of the best-scoring `keep` share of the crops (at least one)."""
    s = np.sort(np.asarray(crop_scores, dtype=float))
    return float(s[-max(1, math.ceil(keep * len(s) - 1e-9)):].mean())


@dataclass
class HalvesResult:
    """Clean photo vs its half-damaged versions under one pooling."""

    keep: float
    clean_above: float  # share of (photo, damage, side) cases
    mean_drop: float  # clean score minus half-damaged score, averaged over cases
    cases: int


class CropScores:
    """Per-crop scores by (photo, kind, level-or-side), in a JSON-lines file appended as they come."""

    def __init__(self, path: Path | None):
        self.path, self.rows = path, {}
        if path is not None and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    r = json.loads(line)
                    self.rows[(r["photo"], r["kind"], r["at"])] = r["crops"]
                except (ValueError, KeyError):
                    continue  # a line cut by a kill

    def get(self, key: tuple, image_fn, score_fn) -> list[float]:
        if key not in self.rows:
            self.rows[key] = [float(v) for v in score_fn(image_fn())]
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as f:
                    f.write(json.dumps(dict(zip(("photo", "kind", "at"), key), crops=self.rows[key])) + "\n")
        return self.rows[key]


def probe(photos: list[Path], crop_scores_of, keeps: list[float], cache: CropScores, seed: int = 0,
          halves: bool = True) -> tuple[list[MethodLevels], list[HalvesResult]]:
    """The levels summary per pooling, and the half-damaged comparison per pooling (empty without
    `halves`). `crop_scores_of(image)` gives the per-crop scores of one image."""
    series = {k: [] for k in keeps}
    drops = {k: [] for k in keeps}
    for pi, path in enumerate(photos):
        image = load_image(path).array
        clean = cache.get((path.name, "clean", 0), lambda: image, crop_scores_of)
        for kind in PLAIN_KINDS:
            rows = [clean] + [cache.get((path.name, kind, lv), lambda lv=lv: distorted(image, kind, lv, seed, pi),
                                        crop_scores_of) for lv in range(1, len(all_kinds()[kind].levels) + 1)]
            for k in keeps:
                series[k].append(series_result(path.name, kind, [pooled(r, k) for r in rows]))
        if halves:
            for kind in DAMAGES:
                for side in SIDES:
                    half = cache.get((path.name, kind, side), lambda: damage(image, kind, side), crop_scores_of)
                    for k in keeps:
                        drops[k].append(pooled(clean, k) - pooled(half, k))
    levels = [summarise(f"keep the best {k:g} of the crops", series[k]) for k in keeps]
    halves_out = [HalvesResult(k, float(np.mean(np.array(d) > 0)), float(np.mean(d)), len(d))
                  for k, d in drops.items() if d]
    return levels, halves_out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", required=True, help="folder of pristine photos (split by name)")
    p.add_argument("--part", default="test", help="part of the split: train, val or test (default test)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N photos of the part (0: all)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled one)")
    p.add_argument("--crops", type=int, default=0, help="crops per image (0: tile the whole image; default 0)")
    p.add_argument("--noise-seed", type=int, default=0, help="the diffusion's noise seed")
    p.add_argument("--keep", default="1,0.75,0.5", help="shares of the best crops to average, comma-separated")
    p.add_argument("--no-halves", action="store_true", help="skip the half-damaged photos")
    p.add_argument("--out", default=None, help="JSON-lines file of per-crop scores (resumes; default: none)")
    p.add_argument("--photo-rho", default=None, metavar="KIND", choices=list(PLAIN_KINDS),
                   help="also print each photo's ρ for this plain kind under every pooling")
    args = p.parse_args(argv)
    try:
        keeps = [float(v) for v in args.keep.split(",")]
        if not all(0 < k <= 1 for k in keeps):
            raise ValueError
    except ValueError:
        p.error(f"--keep {args.keep!r}: give shares in (0, 1], comma-separated")
    from iqa.assess import load
    photos = training_photos(StreamConfig(photos=args.photos, part=args.part))
    photos = photos[:args.limit] if args.limit else photos
    assessor = load(args.checkpoint)
    levels, halves = probe(photos, lambda a: assessor.assess(a, crops=args.crops, seed=args.noise_seed).crop_scores,
                           keeps, CropScores(Path(args.out) if args.out else None), args.noise_seed,
                           not args.no_halves)
    print(f"{len(photos)} photos ({args.part}), crops {args.crops or 'tiles'}, noise seed {args.noise_seed}")
    kinds = list(PLAIN_KINDS)
    print("| pooling | mean ρ | " + " | ".join(kinds) + " | adjacent | clean above level 1 |")
    print("|---" * (len(kinds) + 4) + "|")
    for m in levels:
        print(f"| {m.method} | {m.rho:.3f} | " + " | ".join(f"{m.per_kind[k]:.3f}" for k in kinds)
              + f" | {m.adjacent:.3f} | {m.clean_above_level1:.3f} |")
    if args.photo_rho:
        for m in levels:
            rhos = ", ".join(f"{r.photo} {r.rho:.3f}" for r in m.series_results if r.kind == args.photo_rho)
            print(f"{m.method}, {args.photo_rho} per photo: {rhos}")
    for h in halves:
        print(f"keep {h.keep:g}: clean above its half-damaged version in {h.clean_above:.3f} of {h.cases} cases, "
              f"mean drop {h.mean_drop:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
