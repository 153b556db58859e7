"""`python -m iqa report`: the held-out results of a synthetic-set experiment as a Markdown report.

Inputs are the test predictions of the model and its ablations: training run folders
(`python -m iqa train --out RUN` writes `RUN/metrics.json`) or per-image CSVs from
`python -m iqa evaluate --predictions`, with image paths relative to the dataset root. The report adds BRISQUE and
NIQE on the same images, per-distortion SRCC, the monotonicity of the score over distortion levels,
and the restoration quality of the diffusion network (PSNR/SSIM of y0 vs the pristine reference,
read from the diffusion cache the training filled), plus a figure of restorations.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from iqa.cache import file_sha256
from iqa.data.records import Record
from iqa.data.splits import load_splits
from iqa.metrics import Correlations, correlations
from iqa.train_iqa import EVAL_CROPS

# Acceptance checks of the default checkpoint (issue 6)
MONOTONE_MIN = 0.9  # share of adjacent level pairs of the monotone kinds where the score falls
SRCC_MIN = 0.9  # held-out SRCC
PEER_MARGIN = 0.15  # SRCC above the better of BRISQUE and NIQE
PEERS = {"brisque": "BRISQUE", "niqe": "NIQE"}
CHECKS_FAILED = 3  # exit status of `report --require-checks` when a check fails
FIGURE_ROWS = 4


@dataclass
class MethodResult:
    name: str
    overall: Correlations
    by_kind: dict[str, float]  # SRCC per distortion kind
    monotone_share: float  # adjacent (level k, k+1) pairs of one (content, kind) where the score fell
    monotone_pairs: int
    monotone_kinds_share: float = float("nan")  # the same, on the kinds whose labels are monotone
    monotone_kinds_pairs: int = 0


@dataclass
class RestorationRow:
    pairs: int
    psnr_distorted: float
    psnr_restored: float
    ssim_distorted: float
    ssim_restored: float


def read_predictions(path: str | Path) -> dict[str, float]:
    """image (relative path) -> prediction, from a training run (its folder or `metrics.json`) or a
    prediction CSV (`python -m iqa evaluate --predictions`; rows with an error are skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if path.suffix == ".json":
        return {p["image"]: float(p["pred"]) for p in json.loads(path.read_text())["predictions"]}
    out = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("prediction") not in (None, "") and not row.get("error"):
                out[row["image"]] = float(row["prediction"])
    return out


def _level_sequences(records: list[Record], values: dict[str, float], rel) -> dict[tuple[str, str], list[float]]:
    """(content, kind) -> values ordered by distortion level (images without a value are left out)."""
    seqs: dict[tuple[str, str], dict[int, float]] = {}
    for r in records:
        key = rel(r.image)
        if key in values and "distortion" in r.extra and "level" in r.extra:
            content = str(r.ref) if r.ref is not None else r.group  # a group may hold several crops
            seqs.setdefault((content, str(r.extra["distortion"])), {})[int(r.extra["level"])] = values[key]
    return {k: [v[level] for level in sorted(v)] for k, v in seqs.items()}


def monotonicity(records: list[Record], pred: dict[str, float], rel,
                 kinds: set[str] | None = None) -> tuple[float, int]:
    """Share of adjacent level pairs (same content and kind, kind in `kinds` if given) where the
    prediction falls, and the number of pairs."""
    falls = total = 0
    for (_, kind), seq in _level_sequences(records, pred, rel).items():
        if kinds is not None and kind not in kinds:
            continue
        for a, b in zip(seq, seq[1:]):
            total += 1
            falls += b < a
    return (falls / total if total else float("nan")), total


def monotone_kinds(records: list[Record], rel) -> set[str]:
    """Kinds whose labels fall with every level step on every content of `records`."""
    labels = {rel(r.image): r.mos for r in records}
    rising = {kind for (_, kind), seq in _level_sequences(records, labels, rel).items()
              if any(b >= a for a, b in zip(seq, seq[1:]))}
    return {str(r.extra["distortion"]) for r in records if "distortion" in r.extra} - rising


def method_result(name: str, records: list[Record], pred: dict[str, float], rel) -> MethodResult:
    keep = [r for r in records if rel(r.image) in pred]
    overall = correlations([pred[rel(r.image)] for r in keep], [r.mos for r in keep])
    by_kind: dict[str, float] = {}
    for kind in sorted({str(r.extra.get("distortion")) for r in keep if "distortion" in r.extra}):
        rs = [r for r in keep if str(r.extra.get("distortion")) == kind]
        if len(rs) >= 3:
            by_kind[kind] = correlations([pred[rel(r.image)] for r in rs], [r.mos for r in rs]).srcc
    share, n = monotonicity(keep, pred, rel)
    mono_share, mono_n = monotonicity(keep, pred, rel, monotone_kinds(records, rel))
    return MethodResult(name, overall, by_kind, share, n, mono_share, mono_n)


def kind_level_oracle(train: list[Record], test: list[Record]) -> float:
    """SRCC of a reference predictor that is told each test image's distortion kind and level (not its
    content) and answers the mean training label of that (kind, level): how far knowing the distortion
    alone goes. What it misses is the labels' dependence on content. NaN without kind/level columns."""
    def key(r: Record):
        return str(r.extra.get("distortion")), str(r.extra.get("level"))
    means: dict[tuple[str, str], list[float]] = {}
    for r in train:
        if "distortion" in r.extra and "level" in r.extra:
            means.setdefault(key(r), []).append(r.mos)
    keep = [r for r in test if key(r) in means]
    if len(keep) < 3:
        return float("nan")
    return correlations([float(np.mean(means[key(r)])) for r in keep], [r.mos for r in keep]).srcc


def images_digest(records: list[Record], rel) -> str:
    """sha256 over the (relative path, content hash) of every image: what a peer's predictions depend on."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: rel(r.image)):
        h.update(f"{rel(r.image)}|{file_sha256(r.image)}\n".encode())
    return h.hexdigest()


def peer_predictions(name: str, records: list[Record], root: Path, out_csv: Path, rel) -> dict[str, float]:
    """BRISQUE / NIQE predictions on `records`, computed once and kept in `out_csv`. A sidecar file
    (`out_csv` + ".sha256") holds `images_digest(records)`: other images, or the same names with
    other content (a rebuilt synthetic set), are scored again instead of reusing stale numbers."""
    sidecar = out_csv.with_name(out_csv.name + ".sha256")
    digest = images_digest(records, rel)
    if out_csv.is_file() and sidecar.is_file() and sidecar.read_text().strip() == digest:
        return read_predictions(out_csv)
    from iqa.evaluate import evaluate, write_predictions
    from iqa.peers import load_peer

    result = evaluate(load_peer(name), records, method=name, root=root)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(result, out_csv)
    sidecar.write_text(digest + "\n")
    return read_predictions(out_csv)


def restoration(checkpoint: str, cache_dir: str, crops: int, records: list[Record],
                figure: Path | None) -> RestorationRow:
    """PSNR/SSIM of the distorted input and of y0 against the reference, inside the restored windows.
    `cache_dir` is the training's --cache folder (the states are in its diffusion/ sub-folder)."""
    import piq
    import torch
    from PIL import Image

    from iqa.assess import load
    from iqa.cache import STATES_DIR, DiffusionCache

    assessor = load(checkpoint, device="cpu")
    cache = DiffusionCache(Path(cache_dir) / STATES_DIR, assessor, crops=crops)
    rows, fig_rows = [], []
    for r in records:
        if r.ref is None or (entry := cache.lookup(r.image)) is None:
            continue
        ref, _, _ = assessor.prepare(r.ref)
        for x0, y0, x1, y1 in entry.boxes:
            win = entry.states[:, y0:y1, x0:x1]  # (4, h, w, 3): x, y0, y1, y2
            t = torch.from_numpy(np.concatenate([win, ref[None, y0:y1, x0:x1]])).permute(0, 3, 1, 2).float() / 255
            rows.append([float(piq.psnr(t[0:1], t[4:5])), float(piq.psnr(t[1:2], t[4:5])),
                         float(piq.ssim(t[0:1], t[4:5])), float(piq.ssim(t[1:2], t[4:5]))])
            if figure is not None and len(fig_rows) < FIGURE_ROWS and int(r.extra.get("level", 0)) == 3:
                fig_rows.append(np.concatenate([win[0], win[3], win[2], win[1], ref[y0:y1, x0:x1]], axis=1))
    if figure is not None and fig_rows:
        figure.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(fig_rows, axis=0)).save(figure)
    if not rows:
        raise ValueError(f"no restored test image with a reference in {cache_dir} for {checkpoint} at --crops "
                         f"{crops}: pass the --cache and --crops the training of that checkpoint used.")
    return RestorationRow(len(rows), *(float(v) for v in np.array(rows).mean(0)))


@dataclass
class Check:
    text: str
    passed: bool


def acceptance(methods: list[MethodResult]) -> list[Check]:
    """The default checkpoint's acceptance checks on the first method (none if it is a peer)."""
    peers = [m for m in methods if m.name in PEERS.values()]
    if not methods or methods[0].name in PEERS.values():
        return []
    main = methods[0]
    srcc = main.overall.srcc
    checks = [Check(f"held-out SRCC {_fmt(srcc)} ≥ {SRCC_MIN}", srcc >= SRCC_MIN)]
    if peers:
        best = max(peers, key=lambda m: m.overall.srcc)
        gap = srcc - best.overall.srcc
        checks.append(Check(f"{_fmt(gap)} above the better peer ({best.name}, {_fmt(best.overall.srcc)}), "
                            f"needed ≥ {PEER_MARGIN}", gap >= PEER_MARGIN))
    share = main.monotone_kinds_share
    checks.append(Check(f"score falls with level on {_fmt(share)} of the monotone kinds' adjacent level pairs, "
                        f"needed ≥ {MONOTONE_MIN}", share >= MONOTONE_MIN))
    return checks


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (reports are committed)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _fmt(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3f}"


def render(methods: list[MethodResult], rest: RestorationRow | None, meta: dict) -> str:
    lines = [f"# Results on held-out content ({meta['dataset']})", "",
             f"Generated by `{meta['command']}`.", "",
             f"Test part: {meta['n_test']} images of {meta['n_groups']} photos never seen in training "
             f"(split file `{meta['split_file']}`, index {meta['split_index']}). Labels are the synthetic set's "
             "full-reference pseudo-MOS (MS-SSIM, VIF, GMSD, FSIM ensemble), **not human opinion**: the numbers "
             "say how well a no-reference model reproduces that ensemble on unseen photos, not how well it "
             "agrees with people. PLCC(log) is after a 4-parameter logistic fit.", "",
             "| method | SRCC | PLCC | PLCC(log) | KRCC | RMSE | score falls with level (all kinds) "
             "| … (monotone kinds) |",
             "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        c = m.overall
        lines.append(f"| {m.name} | {_fmt(c.srcc)} | {_fmt(c.plcc)} | {_fmt(c.plcc_logistic)} | {_fmt(c.krcc)} | "
                     f"{_fmt(c.rmse) if m.name not in PEERS.values() else '–'} | "
                     f"{_fmt(m.monotone_share)} of {m.monotone_pairs} | "
                     f"{_fmt(m.monotone_kinds_share)} of {m.monotone_kinds_pairs} |")
    lines += ["", "\"Score falls with level\": share of adjacent level pairs (same reference image, same kind) "
              "where the score falls. Monotone kinds are those whose pseudo-MOS labels fall at every level step "
              f"on every test reference ({meta['monotone_kinds']} of {meta['n_kinds']} kinds here)."]
    oracle = meta.get("kind_level_oracle_srcc", float("nan"))
    if np.isfinite(oracle):
        lines += ["", "For scale: a reference predictor told each test image's distortion kind and level, which "
                  f"answers the mean training label of that kind and level, reaches SRCC {_fmt(oracle)}."
                  + (" Knowing the distortion is not enough: the labels also depend on the photo's content, which "
                     "a model has to judge from the distorted image alone." if oracle < SRCC_MIN else "")]
    checks = acceptance(methods)
    if checks:
        lines += ["", f"Checks for **{methods[0].name}**:", ""]
        lines += [f"- {c.text}: {'yes' if c.passed else 'NO'}" for c in checks]
    kinds = sorted({k for m in methods for k in m.by_kind})
    lines += ["", "SRCC per distortion kind:", "",
              "| kind | " + " | ".join(m.name for m in methods) + " |",
              "|---" * (len(methods) + 1) + "|"]
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(_fmt(m.by_kind.get(k, float('nan'))) for m in methods) + " |")
    if rest is not None:
        lines += ["", "Restoration (diffusion network, on the analysed 224 px windows of the test images):", "",
                  "| | PSNR (dB) | SSIM |", "|---|---|---|",
                  f"| distorted input vs reference | {rest.psnr_distorted:.2f} | {rest.ssim_distorted:.4f} |",
                  f"| restored y0 vs reference | {rest.psnr_restored:.2f} | {rest.ssim_restored:.4f} |",
                  "", f"{rest.pairs} windows. Figure `docs/restorations.png`: distorted x | y2 | y1 | y0 | reference."]
    return "\n".join(lines) + "\n"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="held-out results table (model, ablations, BRISQUE, NIQE, restoration)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split-file", required=True, help="splits JSON the methods were trained on")
    p.add_argument("--split-index", type=int, default=0, help="which split of the file")
    p.add_argument("--method", action="append", default=[], metavar="NAME=RUN",
                   help="a model's test predictions: a training run folder, its metrics.json, or an evaluate "
                        "--predictions CSV, with a prediction for every test image of the split (repeat for "
                        "ablations; the first is the main model)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True, help="add BRISQUE and NIQE")
    p.add_argument("--checkpoint", default=None, help="main checkpoint, for the restoration table")
    p.add_argument("--cache", default=None,
                   help="the --cache folder the training used (its diffusion outputs are read)")
    p.add_argument("--crops", type=int, default=EVAL_CROPS,
                   help="the --crops the training used (its restorations in --cache are keyed on it)")
    p.add_argument("--out", default="docs/RESULTS.md",
                   help="Markdown report; peer predictions and restorations.png are written beside it")
    p.add_argument("--json", default=None, help="also write the numbers as JSON")
    p.add_argument("--require-checks", action="store_true",
                   help=f"exit with status {CHECKS_FAILED} unless the first method passes every acceptance check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    splits = load_splits(args.split_file)
    ds = splits.dataset()
    records = splits.part(args.split_index, "test")
    out = Path(args.out)
    methods = []
    for spec in args.method:
        name, _, path = spec.partition("=")
        if not path:
            print(f"error: --method {spec!r}: expected NAME=RUN", file=sys.stderr)
            return 2
        pred = read_predictions(path)
        missing = [ds.relative(r.image) for r in records if ds.relative(r.image) not in pred]
        if missing:  # methods must be compared on the same images: never on whatever subset each has
            print(f"error: --method {spec!r}: no prediction for {len(missing)} of the {len(records)} test "
                  f"images of {args.split_file} (split {args.split_index}), e.g. {missing[0]} (scored on "
                  f"another split, or those files failed). Score it on this split (python -m iqa evaluate "
                  f"--checkpoint RUN/best --split-file {args.split_file} --split-index {args.split_index} --part test "
                  f"--predictions FILE.csv) and pass --method '{name}=FILE.csv'.", file=sys.stderr)
            return 2
        methods.append(method_result(name, records, pred, ds.relative))
    if args.peers:
        for peer, label in PEERS.items():
            pred = peer_predictions(peer, records, ds.root, out.parent / f"{peer}_test_predictions.csv", ds.relative)
            methods.append(method_result(label, records, pred, ds.relative))
    rest = None
    if args.checkpoint and args.cache:
        try:
            rest = restoration(args.checkpoint, args.cache, args.crops, records, out.parent / "restorations.png")
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    command = "python -m iqa report" + (" " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["report"] else "")
    meta = {"dataset": _shown(ds.root), "split_file": args.split_file, "split_index": args.split_index,
            "n_test": len(records), "n_groups": len({r.group for r in records}),
            "monotone_kinds": len(monotone_kinds(records, ds.relative)),
            "kind_level_oracle_srcc": kind_level_oracle(splits.part(args.split_index, "train"), records),
            "n_kinds": len({str(r.extra["distortion"]) for r in records if "distortion" in r.extra}),
            "command": command}
    out.parent.mkdir(parents=True, exist_ok=True)
    checks = acceptance(methods)
    out.write_text(render(methods, rest, meta))
    if args.json:
        Path(args.json).write_text(json.dumps({"methods": [asdict(m) for m in methods],
                                               "restoration": asdict(rest) if rest else None,
                                               "checks": [asdict(c) for c in checks], **meta},
                                              indent=2, default=float))
    print(out.read_text())
    if args.require_checks and not (checks and all(c.passed for c in checks)):
        print("error: the first method does not pass every acceptance check", file=sys.stderr)
        return CHECKS_FAILED
    return 0
