"""`python -m iqa partial`: does the score fall when only part of a photo is damaged?

The levels test distorts whole photos; damage on a user's photo is often local (a smudge, a blown-up
region, one block of heavy compression). Here held-out photos (a split's part, at their own size) get one
cell of a GRID x GRID grid damaged, by the damages of `iqa.localise` (blur + noise, JPEG q8): every cell,
every damage. A score that rests on part of the image misses damage elsewhere, so each crop setting
(`--crops 3,0`: 3 crops and whole-image tiles) is a method of its own, beside BRISQUE and NIQE on the
same images (they look at the whole image). Per method: the share of cases where the clean photo scores
above its damaged version, the mean drop, and the share per damage and per grid cell. Scores go to
`OUT/scores.jsonl` as they come, so a stopped run resumes where it was; results go to OUT/partial.md and
OUT/partial.json.
"""
from __future__ import annotations

import functools
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from iqa.data.stream import add_held_out_options, held_out_from
from iqa.images import ImageError, load_image
from iqa.levels import PEER_NAMES, SCORES, Method, ScoreCache, checkpoint_method, peer_method
from iqa.localise import DAMAGES, damaged, write_results
from iqa.progress import progress_bar

GRID = 3  # the damaged cell is one of GRID x GRID: a ninth of the photo
DEFAULT_CROPS = "3,0"


def damage_cell(image: np.ndarray, kind: str, row: int, col: int, seed: int = 0) -> np.ndarray:
    """`image` (H, W, 3) uint8 with grid cell (row, col) damaged by `kind` (one of `iqa.localise.DAMAGES`)."""
    h, w = image.shape[:2]
    ys = slice(row * h // GRID, (row + 1) * h // GRID)
    xs = slice(col * w // GRID, (col + 1) * w // GRID)
    out = image.copy()
    out[ys, xs] = damaged(image, kind, seed)[ys, xs]
    return out


@dataclass
class PartialCase:
    photo: str
    damage: str
    row: int
    col: int
    method: str
    clean: float  # the method's score of the clean photo
    damaged: float  # ... and of the photo with one cell damaged

    @property
    def clean_above(self) -> bool:
        return bool(self.clean > self.damaged)


@dataclass
class PartialSummary:
    method: str
    cases: int
    clean_above: float  # share of cases
    mean_drop: float  # clean minus damaged score, on the method's own scale
    clean_above_by_damage: dict[str, float]
    clean_above_by_cell: list[list[float]]  # (GRID, GRID): share of cases per damaged cell


def summarise(cases: list[PartialCase]) -> list[PartialSummary]:
    out = []
    for m in dict.fromkeys(c.method for c in cases):
        mine = [c for c in cases if c.method == m]

        def share(keep) -> float:
            picked = [c.clean_above for c in mine if keep(c)]
            return float(np.mean(picked)) if picked else float("nan")
        out.append(PartialSummary(
            m, len(mine), share(lambda c: True), float(np.mean([c.clean - c.damaged for c in mine])),
            {d: share(lambda c, d=d: c.damage == d) for d in DAMAGES},
            [[share(lambda c, r=r, k=k: (c.row, c.col) == (r, k)) for k in range(GRID)] for r in range(GRID)]))
    return out


def run_partial(photos: list[Path], methods: list[Method], cache: ScoreCache | None = None) -> list[PartialCase]:
    """Every (photo, damage, cell) case for every method; a photo that cannot be read is reported and skipped.
    Scores in `cache` (keyed by method, photo, damaged cell and damage seed) are not computed again."""
    cache = cache or ScoreCache(None)
    cells = [(d, r, k) for d in DAMAGES for r in range(GRID) for k in range(GRID)]
    cases = []
    with progress_bar(total=len(photos) * len(cells), desc="partial", unit="case") as bar:
        for p, path in enumerate(photos):
            try:
                clean = load_image(path).array
            except ImageError as err:
                print(f"skipped: {err}", file=sys.stderr)
                bar.update(len(cells))
                continue
            before = [cache.get((m.key, path.name, "clean", 0), lambda m=m: m.score(clean)) for m in methods]
            for i, (kind, row, col) in enumerate(cells):
                seed = p * len(cells) + i
                image = functools.cache(lambda: damage_cell(clean, kind, row, col, seed=seed))  # made if needed
                after = [cache.get((m.key, path.name, f"{kind}:cell{row},{col}", seed), lambda m=m: m.score(image()))
                         for m in methods]
                cases += [PartialCase(path.stem, kind, row, col, m.name, b, a)
                          for m, b, a in zip(methods, before, after)]
                bar.update()
    return cases


def markdown(summaries: list[PartialSummary], command: str, n_photos: int) -> str:
    lines = [f"Partial damage: {n_photos} held-out photos x {len(DAMAGES)} damages x {GRID * GRID} cells "
             f"(one cell of a {GRID}x{GRID} grid damaged). `{command}`", "",
             "| method | cases | clean photo above | mean drop | " + " | ".join(DAMAGES) + " | worst cell |",
             "|---|---|---|---|" + "---|" * len(DAMAGES) + "---|"]
    for s in summaries:
        worst = float(np.nanmin(s.clean_above_by_cell))
        lines.append(f"| {s.method} | {s.cases} | {s.clean_above:.3f} | {s.mean_drop:.4f} | " +
                     " | ".join(f"{s.clean_above_by_damage[d]:.3f}" for d in DAMAGES) + f" | {worst:.2f} |")
    return "\n".join(lines) + "\n"


def register(subparsers) -> None:
    p = subparsers.add_parser("partial", help="does the score fall when one part of a photo is damaged?",
                              description=__doc__)
    add_held_out_options(p)
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled one)")
    p.add_argument("--crops", default=DEFAULT_CROPS, metavar="K[,K...]",
                   help=f"crop settings to compare, each a method (default {DEFAULT_CROPS}: 3 crops and tiles)")
    p.add_argument("--noise-seed", type=int, default=0, help="the checkpoint's diffusion noise seed (assess --seed)")
    p.add_argument("--no-peers", action="store_true", help="leave out BRISQUE and NIQE")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", default="runs/partial", help="folder for scores.jsonl (resume), partial.md, partial.json")
    p.set_defaults(func=run)


def _crops(spec: str) -> list[int]:
    try:
        values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise ValueError(f"--crops {spec!r}: give crop counts separated by commas, each >= 1 or 0 for tiles")
    return values


def run(args) -> int:
    from iqa.assess import DEFAULT_CHECKPOINT
    checkpoint = args.checkpoint or str(DEFAULT_CHECKPOINT)
    try:
        photos = held_out_from(args)
        methods = [checkpoint_method("tiles" if k == 0 else f"{k} crops", checkpoint, k, args.device,
                                     noise_seed=args.noise_seed) for k in _crops(args.crops)]
        if not args.no_peers:
            methods += [peer_method(n) for n in PEER_NAMES]
        cases = run_partial(photos, methods, ScoreCache(Path(args.out) / SCORES))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summaries = summarise(cases)
    command = shlex.join(["python", "-m", "iqa", *sys.argv[1:]])
    write_results(args.out, "partial", markdown(summaries, command, len(photos)), {
        "command": command, "checkpoint": checkpoint, "photos": [p.name for p in photos],
        "summaries": [asdict(s) for s in summaries],
        "cases": [{**asdict(c), "clean_above": c.clean_above} for c in cases]})
    return 0
