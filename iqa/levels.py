"""`python -m iqa levels`: does the score fall as a distortion grows, on photos the model never saw?

The opinion-free acceptance test of a default. Every photo of a split's part (by default the test
part of the name split `splits` and the ranking stream use) is loaded as `assess` sees it (its own
size, at most `MAX_SIDE`), distorted by each kind at each of its 5 levels (one random realisation
per (photo, kind), growing in strength), and scored with the clean photo counted as level 0. Per
(photo, kind) series it measures the Spearman correlation between the score and minus the level
(1 = the score falls at every step), the share of adjacent levels in the right order, whether the
clean photo beats all its distortions and whether it beats level 1. Checkpoints and the classical
peers (BRISQUE, NIQE) are scored on the same images in the same run.

Scores go to `OUT/scores.jsonl` as they come, so a stopped run resumes where it was.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.stats import spearmanr

from iqa.assess import DEFAULT_CROPS, RESTORE_ON
from iqa.data.distortions import KINDS
from iqa.data.plain import PLAIN_KINDS, all_kinds
from iqa.data.stream import add_held_out_options, held_out_from
from iqa.images import ImageError, load_image
from iqa.progress import progress_bar
from iqa.score import add_diffusion_scale_option, add_fold_batchnorm_option, parse_bf16

KIND_SETS = {"plain": tuple(PLAIN_KINDS), "kadid": tuple(KINDS), "all": tuple(all_kinds())}
PEER_NAMES = ("BRISQUE", "NIQE")
SCORES = "scores.jsonl"
GATE = {"plain_mean": 0.95, "plain_each": 0.90, "kadid_monotone_mean": 0.90, "adjacent": 0.95,
        "clean_above_level1": 0.85}
LABEL_SIDE = 512  # long side the full-reference labels are computed at (bounds their cost)
LABEL_NAME = "pseudo-MOS (full reference)"


@dataclass
class SeriesResult:
    """One (photo, kind) series: scores at levels 0 (clean) to 5 and what they say."""

    photo: str
    kind: str
    scores: list[float]
    rho: float
    adjacent: float
    clean_above_all: bool
    clean_above_level1: bool


@dataclass
class MethodLevels:
    """One method over every series: means overall and per kind, and the shares of the module docstring."""

    method: str
    rho: float
    per_kind: dict[str, float]
    adjacent: float
    clean_above_all: float
    clean_above_level1: float
    series: int
    plain_rho: float = float("nan")
    kadid_monotone_rho: float = float("nan")  # mean over the KADID kinds whose labels are monotone
    series_results: list[SeriesResult] = field(default_factory=list, repr=False)


def series_result(photo: str, kind: str, scores: list[float]) -> SeriesResult:
    """scores[0] is the clean photo's, scores[l] level l's."""
    s = np.asarray(scores, dtype=float)
    levels = np.arange(len(s))
    rho = 0.0 if np.ptp(s) == 0 else float(spearmanr(-levels, s).statistic)
    adjacent = float(np.mean(s[:-1] > s[1:]))
    return SeriesResult(photo, kind, [float(v) for v in s], rho, adjacent,
                        bool(s[0] > s[1:].max()), bool(s[0] > s[1]))


@dataclass
class LevelsReport:
    """All methods on the same images; `labels`: the full-reference pseudo-MOS as a method (for scale),
    `monotone_kinds`: the KADID kinds whose labels fall at every level on every photo."""

    methods: list[MethodLevels]
    labels: MethodLevels | None
    monotone_kinds: list[str]


def monotone(results: list[SeriesResult]) -> list[str]:
    """KADID kinds whose scores fall strictly at every level step of every photo's series."""
    kinds = {r.kind for r in results if r.kind in KINDS}
    rising = {r.kind for r in results if r.adjacent < 1}
    return sorted(kinds - rising, key=list(KINDS).index)


def summarise(method: str, results: list[SeriesResult], monotone_kinds: list[str] = ()) -> MethodLevels:
    kinds = sorted({r.kind for r in results}, key=list(all_kinds()).index)
    per_kind = {k: float(np.mean([r.rho for r in results if r.kind == k])) for k in kinds}
    plain = [r.rho for r in results if r.kind in PLAIN_KINDS]
    mono = [r.rho for r in results if r.kind in monotone_kinds]
    return MethodLevels(
        method=method, rho=float(np.mean([r.rho for r in results])), per_kind=per_kind,
        adjacent=float(np.mean([r.adjacent for r in results])),
        clean_above_all=float(np.mean([r.clean_above_all for r in results])),
        clean_above_level1=float(np.mean([r.clean_above_level1 for r in results])), series=len(results),
        plain_rho=float(np.mean(plain)) if plain else float("nan"),
        kadid_monotone_rho=float(np.mean(mono)) if mono else float("nan"), series_results=results)


def gate(m: MethodLevels) -> dict[str, bool]:
    """The default's acceptance checks that this test measures (nan = not measured: fails)."""
    plain = [v for k, v in m.per_kind.items() if k in PLAIN_KINDS]
    return {"plain_mean": m.plain_rho >= GATE["plain_mean"],
            "plain_each": len(plain) == len(PLAIN_KINDS) and min(plain) >= GATE["plain_each"],
            "kadid_monotone_mean": m.kadid_monotone_rho >= GATE["kadid_monotone_mean"],
            "adjacent": m.adjacent >= GATE["adjacent"],
            "clean_above_level1": m.clean_above_level1 >= GATE["clean_above_level1"]}


def distorted(image: np.ndarray, kind: str, level: int, seed: int, photo_index: int) -> np.ndarray:
    """`kind` at `level` (1-5) of `image`; the realisation depends on (seed, photo, kind) only."""
    ki = list(all_kinds()).index(kind)
    return all_kinds()[kind](image, level, np.random.default_rng([seed, photo_index, ki]))


@dataclass
class Method:
    """A named scorer: `score(array) -> float`, higher = better; `key` identifies its weights
    (for a checkpoint: `weights` is the SHA-256 of its weights file)."""

    name: str
    key: str
    score: Callable[[np.ndarray], float]
    weights: str = ""


def weights_digest(path: str | Path) -> str:
    """SHA-256 of a checkpoint's tensors (names, dtypes, shapes and data; not its card), so that a
    levels result stays tied to the weights when the card is rewritten (e.g. by `bundle`)."""
    import struct
    from iqa.checkpoint import weights_path
    h = hashlib.sha256()
    with weights_path(path).open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        h.update(json.dumps(header, sort_keys=True).encode())
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_method(name: str, path: str, crops: int, device: str = "auto", diffusion_on: str | None = None,
                      bf16: tuple[str, ...] | None = None, noise_seed: int = 0,
                      diffusion_scale: int | None = None, full_res_steps: int | None = None,
                      fold_batchnorm: bool | None = None) -> Method:
    """A checkpoint as a `Method`, scored by `Assessor.assess(crops=crops, seed=noise_seed)`."""
    from iqa.assess import load
    assessor = load(path, device=device, diffusion_on=diffusion_on, bf16=bf16, diffusion_scale=diffusion_scale,
                    full_res_steps=full_res_steps, fold_batchnorm=fold_batchnorm)
    digest = weights_digest(path)
    # the weights digest misses the config: the pipeline and the fusion weights change the score too
    pipeline = (f"noise-field:{assessor.cfg.diffusion.on}:bf16-{'+'.join(assessor.bf16) or 'none'}"
                f":fusion{assessor.cfg.vcg_weight:g},{assessor.cfg.vda_weight:g}")
    if assessor.cfg.diffusion.unet_scale != 1:
        pipeline += f":unet-scale{assessor.cfg.diffusion.unet_scale}"
        if assessor.cfg.diffusion.full_res_steps:
            pipeline += f":full-res-steps{assessor.cfg.diffusion.full_res_steps}"
    if assessor.model.batchnorm_folded:  # equal in float32, not bit for bit under bf16
        pipeline += ":bn-folded"
    if noise_seed:
        pipeline += f":noise-seed{noise_seed}"
    return Method(name, f"ckpt:{digest[:16]}:crops{crops}:{pipeline}",
                  lambda a: assessor.assess(a, crops=crops, seed=noise_seed).score, weights=digest)


def peer_method(name: str) -> Method:
    from iqa.peers import load_peer
    peer = load_peer(name)
    return Method(name, f"peer:{name.lower()}", peer.score)


def label(image: np.ndarray, reference: np.ndarray) -> float:
    """Full-reference pseudo-MOS of `image` against `reference`, both resized to LABEL_SIDE (long side)."""
    import cv2
    from iqa.data.pseudo_mos import pseudo_mos
    h, w = reference.shape[:2]
    f = min(1.0, LABEL_SIDE / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = [cv2.resize(a, size, interpolation=cv2.INTER_AREA) if f < 1 else a for a in (image, reference)]
    return pseudo_mos(small[0], small[1])[0].mos


class ScoreCache:
    """Scores by (method key, photo, kind, level) in a JSON-lines file; appended as they come."""

    def __init__(self, path: Path | None):
        self.path = path
        self.scores: dict[tuple, float] = {}
        if path is not None and path.is_file():
            text = path.read_text()
            if text and not text.endswith("\n"):  # a kill cut the last line: drop it, so appends start clean
                text = text[:text.rfind("\n") + 1]
                path.write_text(text)
            for line in text.splitlines():
                try:
                    r = json.loads(line)
                    self.scores[(r["key"], r["photo"], r["kind"], r["level"])] = float(r["score"])
                except (ValueError, KeyError):
                    continue  # a line cut by a kill

    def get(self, key: tuple, compute: Callable[[], float]) -> float:
        if key not in self.scores:
            self.scores[key] = float(compute())
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as f:
                    f.write(json.dumps(dict(zip(("key", "photo", "kind", "level"), key),
                                            score=self.scores[key])) + "\n")
        return self.scores[key]


def run_levels(photos: list[Path], kinds: list[str], methods: list[Method], seed: int = 0,
               cache: ScoreCache | None = None, labels: bool = True, progress=None) -> LevelsReport:
    """Score every method (and, with `labels`, the pseudo-MOS) on every (photo, kind, level); see
    the module docstring."""
    cache = cache or ScoreCache(None)
    names = [m.name for m in methods] + ([LABEL_NAME] if labels else [])
    results: dict[str, list[SeriesResult]] = {n: [] for n in names}
    total = len(photos) * (1 + sum(len(all_kinds()[k].levels) for k in kinds)) * len(names)
    done = 0
    for pi, path in enumerate(photos):
        image = load_image(path).array
        scorers = [(m.name, m.key, m.score) for m in methods]
        if labels:
            scorers.append((LABEL_NAME, f"label:{LABEL_SIDE}", lambda a: label(a, image)))
        clean = {n: cache.get((key, path.name, "clean", 0), lambda f=f: f(image)) for n, key, f in scorers}
        done += len(scorers)
        for kind in kinds:
            scores: dict[str, list[float]] = {n: [clean[n]] for n in names}
            for lv in range(1, len(all_kinds()[kind].levels) + 1):
                img = None
                for n, key, f in scorers:
                    k = (key, path.name, kind, lv)
                    if k not in cache.scores and img is None:
                        img = distorted(image, kind, lv, seed, pi)
                    scores[n].append(cache.get(k, lambda f=f, img=img: f(img)))
                    done += 1
                    if progress:
                        progress(done, total, f"{path.name} {kind} {lv}")
            for n in names:
                results[n].append(series_result(path.name, kind, scores[n]))
    mono = monotone(results[LABEL_NAME]) if labels else []
    return LevelsReport([summarise(m.name, results[m.name], mono) for m in methods],
                        summarise(LABEL_NAME, results[LABEL_NAME], mono) if labels else None, mono)


def _f(v: float) -> str:
    return "n/a" if v != v else f"{v:.3f}"


def markdown(report: LevelsReport, command: str, photos: list[Path]) -> str:
    results = report.methods + ([report.labels] if report.labels else [])
    kinds = list(results[0].per_kind)
    lines = [f"Levels test: {len(photos)} photos at their own size, {len(kinds)} kinds x 5 levels, "
             f"the clean photo as level 0.", "", f"`{command}`", "",
             "| method | mean ρ | plain kinds ρ | monotone KADID ρ | adjacent levels ordered | clean above all "
             "| clean above level 1 | series |", "|---|---|---|---|---|---|---|---|"]
    for m in results:
        lines.append(f"| {m.method} | {_f(m.rho)} | {_f(m.plain_rho)} | {_f(m.kadid_monotone_rho)} | "
                     f"{_f(m.adjacent)} | {_f(m.clean_above_all)} | {_f(m.clean_above_level1)} | {m.series} |")
    if report.labels:
        kadid = sum(k in KINDS for k in kinds)
        mono = (f"Monotone KADID kinds (labels fall at every level of every photo): {len(report.monotone_kinds)} "
                f"of {kadid}. " if kadid else "")
        lines += ["", f"{mono}The pseudo-MOS row is the full-reference label (computed at {LABEL_SIDE} px), "
                  "for scale."]
    lines += ["", "Per kind (mean ρ over photos):", "", "| kind | " + " | ".join(m.method for m in results) + " |",
              "|---|" + "---|" * len(results)]
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(_f(m.per_kind[k]) for m in results) + " |")
    return "\n".join(lines) + "\n"


def register(subparsers) -> None:
    p = subparsers.add_parser("levels", help="does the score fall as distortions grow? (held-out photos, own size)",
                              description=__doc__)
    add_held_out_options(p)
    p.add_argument("--kinds", default="plain", help="plain, kadid, all, or comma-separated kind names")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="a checkpoint to test (repeatable); default: the bundled one")
    p.add_argument("--no-peers", action="store_true", help="leave out BRISQUE and NIQE")
    p.add_argument("--no-labels", action="store_true",
                   help="leave out the full-reference pseudo-MOS (it defines the monotone KADID kinds)")
    p.add_argument("--crops", type=int, default=DEFAULT_CROPS,
                   help="crops per image for the checkpoints (0: tile the whole image, as assess does by default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the distortions' realisations")
    p.add_argument("--noise-seed", type=int, default=0,
                   help="the checkpoints' diffusion noise seed (assess --seed); other values show how much the "
                        "results move with the noise drawn for y1, y2")
    p.add_argument("--out", default="runs/levels", help="folder for scores.jsonl (resume), levels.md, levels.json")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--diffusion-on", default=None, choices=RESTORE_ON,
                   help="where the checkpoints' diffusion runs (default: each checkpoint's own setting)")
    add_diffusion_scale_option(p, "each checkpoint's own")
    p.add_argument("--bf16", type=parse_bf16, default="auto", metavar="STAGES",
                   help="stages run under bf16 autocast: auto (the assessor's default for this CPU), none, or "
                        "comma-separated names of diffusion, backbones, vcg")
    add_fold_batchnorm_option(p)
    p.set_defaults(func=run)


def parse_kinds(spec: str) -> list[str]:
    """`--kinds`: a set name (plain, kadid, all) or comma-separated kind names."""
    if spec in KIND_SETS:
        return list(KIND_SETS[spec])
    names = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in names if k not in all_kinds()]
    if unknown or not names:
        raise ValueError(f"--kinds {spec!r}: unknown {', '.join(unknown) or 'empty list'}; use plain, kadid, all "
                         f"or names from: {', '.join(all_kinds())}")
    return names


def run(args) -> int:
    try:
        kinds = parse_kinds(args.kinds)
        photos = held_out_from(args)
        methods = []
        for spec in args.checkpoint or ["DiffV2IQA (bundled)=checkpoints/default"]:
            name, sep, path = spec.partition("=")
            if not sep:
                name, path = Path(spec).name, spec
            methods.append(checkpoint_method(name, path, args.crops, args.device, args.diffusion_on, args.bf16,
                                             args.noise_seed, args.diffusion_scale, args.full_res_steps,
                                             args.fold_batchnorm))
        if not args.no_peers:
            methods += [peer_method(n) for n in PEER_NAMES]
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    bar = progress_bar(desc="levels", unit="score")

    def progress(done, total, what):
        bar.total = total
        bar.set_postfix_str(what, refresh=False)
        bar.update(done - bar.n)  # redrawn at most every mininterval
    try:
        report = run_levels(photos, kinds, methods, args.seed, ScoreCache(out / SCORES), not args.no_labels,
                            progress)
    except ImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    command = shlex.join(["python", "-m", "iqa", *sys.argv[1:]])
    text = markdown(report, command, photos)
    (out / "levels.md").write_text(text)
    (out / "levels.json").write_text(json.dumps(
        {"command": command, "photos": [p.name for p in photos], "kinds": kinds,
         "monotone_kinds": report.monotone_kinds, "gate_thresholds": GATE,
         "labels": asdict(report.labels) if report.labels else None,
         "results": [{**asdict(m), "gate": gate(m), "weights": me.weights, "crops": args.crops}
                     for m, me in zip(report.methods, methods)]}, indent=1))
    print(text)
    print(f"wrote {out / 'levels.md'} and {out / 'levels.json'}")
    return 0
