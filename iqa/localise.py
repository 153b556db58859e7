"""`python -m iqa localise`: do the per-patch maps show *where* a photo is damaged?

Held-out photos (the split's test part, at their own size) get one half damaged, the left half or the
right half (so a map that always favours one side cannot pass), by Gaussian blur + white noise or by
JPEG at quality 8. For each case and method, on the cells the model's crops cover (cells that straddle
the middle left out):

- *side ordered*: the damaged half's mean patch score is below the clean half's;
- *AUC*: the chance that a clean cell scores above a damaged one (Mann-Whitney U / n1 n2; 0.5 = chance).

Methods: the checkpoint's VCG score map, and as a crude baseline BRISQUE on a window around each cell
(negated, so higher = better). Results go to OUT/localise.md and OUT/localise.json.
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import mannwhitneyu

from iqa.data.stream import add_held_out_options, held_out_from
from iqa.images import ImageError, load_image
from iqa.progress import progress_bar
from iqa.results import PatchMaps
from iqa.score import add_diffusion_scale_option

BLUR_SIGMA, NOISE_SIGMA = 3.0, 18.0  # px, 8-bit levels: the damage of the blur+noise cases
JPEG_QUALITY = 8
DAMAGES = ("blur+noise", "jpeg8")
SIDES = ("left", "right")
BASELINE_WINDOW = 64  # px side of the BRISQUE window around a cell (BRISQUE needs more than one cell)
GATE_AUC = 0.80


def damaged(image: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """`image` (H, W, 3) uint8 damaged all over by `kind` (one of DAMAGES)."""
    if kind == "blur+noise":
        out = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA).astype(np.float32)
        out += np.random.default_rng(seed).standard_normal(image.shape, dtype=np.float32) * NOISE_SIGMA
        bad = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    elif kind == "jpeg8":
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        bad = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    else:
        raise ValueError(f"unknown damage {kind!r}; choose one of {', '.join(DAMAGES)}")
    return bad


def damage(image: np.ndarray, kind: str, side: str, seed: int = 0) -> np.ndarray:
    """`image` (H, W, 3) uint8 with its `side` half damaged by `kind` (one of DAMAGES)."""
    bad = damaged(image, kind, seed)
    half = image.shape[1] // 2
    out = image.copy()
    cols = slice(half, None) if side == "right" else slice(0, half)
    out[:, cols] = bad[:, cols]
    return out


def cell_sides(maps: PatchMaps, width: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (gh, gw) masks of the covered cells wholly on the damaged and on the clean half."""
    half = width // 2
    x0, x1 = maps.boxes[..., 0], maps.boxes[..., 2]
    left, right = x1 <= half, x0 >= half
    covered = np.isfinite(maps.score)
    damaged, clean = (right, left) if side == "right" else (left, right)
    return damaged & covered, clean & covered


def auc(clean: np.ndarray, damaged: np.ndarray) -> float:
    """P(a clean cell's value > a damaged cell's), ties counted half."""
    if clean.size == 0 or damaged.size == 0:
        return float("nan")
    return float(mannwhitneyu(clean, damaged, alternative="greater").statistic / (clean.size * damaged.size))


def brisque_map(image: np.ndarray, maps: PatchMaps, brisque) -> np.ndarray:
    """(gh, gw) negated BRISQUE of a BASELINE_WINDOW window centred on each covered cell (NaN elsewhere)."""
    h, w = image.shape[:2]
    out = np.full(maps.score.shape, np.nan)
    r = BASELINE_WINDOW // 2
    for i, j in zip(*np.nonzero(np.isfinite(maps.score))):
        x0, y0, x1, y1 = maps.boxes[i, j]
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        xa, ya = int(np.clip(cx - r, 0, max(0, w - 2 * r))), int(np.clip(cy - r, 0, max(0, h - 2 * r)))
        try:
            out[i, j] = brisque.score(image[ya:ya + 2 * r, xa:xa + 2 * r])
        except ValueError:  # a flat window: no statistics
            pass
    return out


@dataclass
class Case:
    photo: str
    damage: str
    side: str
    method: str
    damaged_mean: float
    clean_mean: float
    auc: float

    @property
    def side_ordered(self) -> bool:
        return bool(self.damaged_mean < self.clean_mean)


@dataclass
class MethodSummary:
    method: str
    cases: int
    side_ordered: float  # share of cases
    auc: float  # mean over cases
    auc_by_damage: dict[str, float]


def summarise(cases: list[Case]) -> list[MethodSummary]:
    out = []
    for m in dict.fromkeys(c.method for c in cases):
        mine = [c for c in cases if c.method == m and np.isfinite(c.auc)]
        out.append(MethodSummary(m, len(mine), float(np.mean([c.side_ordered for c in mine])),
                                 float(np.mean([c.auc for c in mine])),
                                 {d: float(np.mean([c.auc for c in mine if c.damage == d])) for d in DAMAGES
                                  if any(c.damage == d for c in mine)}))
    return out


def _case(photo: str, kind: str, side: str, method: str, values: np.ndarray, damaged, clean) -> Case:
    return Case(photo, kind, side, method, float(np.nanmean(values[damaged])), float(np.nanmean(values[clean])),
                auc(values[clean & np.isfinite(values)], values[damaged & np.isfinite(values)]))


def run_localise(photos: list[Path], assessor, label: str, crops: int | None = None,
                 baseline: bool = True) -> list[Case]:
    """Every (photo, damage, side) case for the checkpoint's VCG map and, with `baseline`, local BRISQUE."""
    from iqa.peers import load_peer
    brisque = load_peer("brisque") if baseline else None
    cases = []
    jobs = [(p, d, s) for p in photos for d in DAMAGES for s in SIDES]
    for i, (path, kind, side) in enumerate(progress_bar(jobs, desc="localise", unit="case")):
        try:
            clean = load_image(path).array
        except ImageError as err:
            print(f"skipped: {err}", file=sys.stderr)
            continue
        image = damage(clean, kind, side, seed=i)
        a = assessor.assess(image, crops=crops)
        if a.vcg is None:
            raise ValueError(f"{label}: the model has no VCG branch, so no patch map to test")
        bad, good = cell_sides(a.vcg, a.image.shape[1], side)
        cases.append(_case(path.stem, kind, side, label, a.vcg.score, bad, good))
        if brisque is not None:
            cases.append(_case(path.stem, kind, side, "local BRISQUE", brisque_map(a.image, a.vcg, brisque), bad, good))
    return cases


def markdown(summaries: list[MethodSummary], command: str, n_photos: int) -> str:
    lines = [f"Localisation: {n_photos} held-out photos x {len(DAMAGES)} damages x {len(SIDES)} sides "
             f"(one half damaged). `{command}`", "",
             "| method | cases | damaged half lower | AUC clean > damaged | " +
             " | ".join(f"AUC {d}" for d in DAMAGES) + " |", "|---|---|---|---|" + "---|" * len(DAMAGES)]
    for s in summaries:
        lines.append(f"| {s.method} | {s.cases} | {s.side_ordered:.2f} | {s.auc:.3f} | " +
                     " | ".join(f"{s.auc_by_damage.get(d, float('nan')):.3f}" for d in DAMAGES) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: str | Path, stem: str, text: str, numbers: dict) -> None:
    """OUT/stem.md (the table, also printed) and OUT/stem.json (`numbers`): the held-out tests' outputs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(numbers, indent=1))
    print(text)


def register(subparsers) -> None:
    p = subparsers.add_parser("localise", help="do the patch maps show where a photo is damaged? (half-damaged photos)",
                              description=__doc__)
    add_held_out_options(p)
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled one)")
    p.add_argument("--crops", type=int, default=None, help="crops per image (default: the assessor's)")
    p.add_argument("--no-baseline", action="store_true", help="skip the local-BRISQUE baseline")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_diffusion_scale_option(p)
    p.add_argument("--out", default="runs/localise", help="folder for localise.md and localise.json")
    p.set_defaults(func=run)


def run(args) -> int:
    from iqa.assess import load
    try:
        photos = held_out_from(args)
        assessor = load(args.checkpoint, device=args.device, diffusion_scale=args.diffusion_scale,
                        full_res_steps=args.full_res_steps)
        label = f"VCG map ({args.checkpoint or 'bundled default'})"
        cases = run_localise(photos, assessor, label, args.crops, baseline=not args.no_baseline)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summaries = summarise(cases)
    command = shlex.join(["python", "-m", "iqa", *sys.argv[1:]])
    write_results(args.out, "localise", markdown(summaries, command, len(photos)), {
        "command": command, "photos": [p.name for p in photos], "gate_auc": GATE_AUC,
        "summaries": [asdict(s) for s in summaries],
        "cases": [{**asdict(c), "side_ordered": c.side_ordered} for c in cases]})
    return 0
