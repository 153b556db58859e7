"""Agreement of a quality method with a dataset's human scores: `evaluate()` and `python -m iqa evaluate`.

The method is a DiffV2IQA model (checkpoint or preset) or a classical peer (BRISQUE, NIQE); every
method's score is higher = better and is compared with `Record.mos` (normalised to [0, 1], higher =
better). Files that cannot be scored are reported and skipped. Optionally restricted to one part of
a splits file, and broken down by a per-record field such as the distortion type.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from iqa.data.datasets import FORMATS, Dataset, DatasetError, Record, detect_format, load_dataset
from iqa.data.splits import PART_NAMES, load_splits
from iqa.images import ImageError
from iqa.metrics import MIN_PAIRS, Correlations, correlations
from iqa.peers import PEERS, PeerInputError, load_peer
from iqa.progress import progress_bar
from iqa.score import (add_device_option, add_model_group, add_sampling_options,
                       check_sampling_options, open_assessor)

Scorer = Callable[[Path], float]  # image file -> quality, higher = better
SCORING_ERRORS = (ImageError, PeerInputError)  # a bad file: reported and skipped
TARGET_RANGE = (0.0, 1.0)  # Record.mos is normalised to this range
UNGROUPED = "(none)"  # breakdown group of records without the `by` field
GROUP_FIELD = "group"  # `by` value that also reaches `Record.group` (the content), when not in `extra`
PREDICTION_COLUMNS = ("image", "target", "raw", "prediction", "group", "error")
PARTS = PART_NAMES[3]  # train, val, test
DEFAULT_PART = "test"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class EvaluationError(ValueError):
    """Too few images could be scored to compute the metrics."""


@dataclass
class Prediction:
    """One scored image: `target` is the normalised MOS in [0, 1], `raw` the published score."""

    image: str  # relative to the dataset root
    target: float
    raw: float
    prediction: float
    group: str | None = None  # value of the breakdown field, when one is asked for


@dataclass
class Failure:
    image: str
    error: str


@dataclass
class EvaluationResult:
    """Metrics of one method on a set of records, overall and per group of `by`."""

    method: str
    dataset: str
    n: int  # images scored (the metrics' sample size)
    correlations: Correlations
    by: str | None = None
    groups: dict[str, Correlations] = field(default_factory=dict)  # groups with >= MIN_PAIRS images
    failures: list[Failure] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # what was evaluated how (split, crops...)

    def to_dict(self, include_predictions: bool = False) -> dict:
        """JSON-ready (NaN -> None). Metrics: srcc, krcc, plcc (raw predictions), plcc_logistic
        (after the 4-parameter logistic fit), rmse, rmse_logistic."""
        out = {
            "method": self.method, "dataset": self.dataset, "n": self.n, "failed": len(self.failures),
            **self.settings,
            "metrics": self.correlations.as_dict(),
            "by": self.by,
            "groups": {k: v.as_dict() for k, v in self.groups.items()},
            "failures": [{"image": f.image, "error": f.error} for f in self.failures],
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }
        if include_predictions:
            out["predictions"] = [vars(p) for p in self.predictions]
        return _finite_or_none(out)


def _finite_or_none(value):
    """Replace NaN / inf floats by None, recursively, so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def _as_scorer(scorer) -> Scorer:
    return scorer.score if hasattr(scorer, "score") else scorer


def evaluate(scorer: Scorer, records: Sequence[Record], *, method: str = "", dataset: str = "",
             by: str | None = None, root: str | Path | None = None, progress: bool = True,
             settings: dict[str, Any] | None = None) -> EvaluationResult:
    """Score every record's image and correlate with its `mos`.

    scorer: a callable path -> quality (higher = better), or an object with such a `.score`
      (an `Assessor`, a peer method). Files it rejects (`ImageError`, `PeerInputError`) are skipped
      and listed in `failures`.
    by: a key of `Record.extra` (e.g. "distortion"), or "group" (the content group), for a per-group
      breakdown.
    root: dataset folder, to name images relative to it.
    Raises EvaluationError when fewer than MIN_PAIRS images could be scored.
    """
    fn = _as_scorer(scorer)
    name = (lambda p: os.path.relpath(p, root)) if root else str
    predictions: list[Prediction] = []
    failures: list[Failure] = []
    notes: list[str] = []
    t0 = time.perf_counter()
    bar = progress_bar(records, desc=f"evaluating {method}".strip(), unit="img",
                       disable=not progress or len(records) <= 1)
    for rec in bar:
        try:
            value = float(fn(rec.image))
        except SCORING_ERRORS as err:
            message = str(err) if rec.image.name in str(err) else f"{rec.image}: {err}"  # name the file
            failures.append(Failure(name(rec.image), message))
            tqdm.write(f"skipped: {message}", file=sys.stderr)
            continue
        group = None
        if by:
            key = rec.extra.get(by, rec.group if by == GROUP_FIELD else None)
            group = UNGROUPED if key is None else str(key)
        predictions.append(Prediction(name(rec.image), rec.mos, rec.raw, value, group))
    seconds = time.perf_counter() - t0

    if len(predictions) < MIN_PAIRS:
        first = f" First error: {failures[0].error}" if failures else ""
        raise EvaluationError(f"only {len(predictions)} of {len(records)} image(s) could be scored; at least "
                              f"{MIN_PAIRS} are needed for the metrics.{first}")
    overall = correlations([p.prediction for p in predictions], [p.target for p in predictions])

    groups: dict[str, Correlations] = {}
    if by:
        members: dict[str, list[Prediction]] = {}
        for p in predictions:
            members.setdefault(p.group, []).append(p)
        if set(members) == {UNGROUPED}:
            notes.append(f"no record has a '{by}' field: no breakdown")
        else:
            for key in sorted(members):
                ps = members[key]
                if len(ps) < MIN_PAIRS:
                    notes.append(f"group '{key}' has {len(ps)} image(s), fewer than {MIN_PAIRS}: left out")
                    continue
                groups[key] = correlations([p.prediction for p in ps], [p.target for p in ps])
    preds = [p.prediction for p in predictions]
    if min(preds) < TARGET_RANGE[0] or max(preds) > TARGET_RANGE[1]:
        notes.append("predictions are not on the [0, 1] scale of the targets: rmse is not meaningful, "
                     "rmse_logistic (after the fit) is")
    if failures:
        notes.append(f"{len(failures)} of {len(records)} image(s) could not be scored and were left out")
    return EvaluationResult(method=method, dataset=dataset, n=len(predictions), correlations=overall, by=by,
                            groups=groups, failures=failures, predictions=predictions, seconds=seconds,
                            notes=notes, settings=dict(settings or {}))


def write_predictions(result: EvaluationResult, path: str | Path) -> Path:
    """Per-image CSV (`PREDICTION_COLUMNS`); failed images have an empty prediction and an error."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        for p in result.predictions:
            writer.writerow({**vars(p), "group": p.group or "", "error": ""})
        for f in result.failures:
            writer.writerow({"image": f.image, "target": "", "raw": "", "prediction": "", "group": "",
                             "error": f.error})
    return path


# --------------------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="SRCC / PLCC / KRCC / RMSE of a model or peer method on a dataset",
        description="Scores a dataset's images and prints the agreement with its human scores as JSON: "
                    "srcc, krcc, plcc (raw predictions), plcc_logistic (after a 4-parameter logistic "
                    "fit), rmse. Files that cannot be read are reported and skipped.")
    group = add_model_group(p, required=True)
    group.add_argument("--model", default=None, choices=PEERS, metavar="M",
                       help=f"a classical peer method instead of DiffV2IQA: {', '.join(PEERS)}")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="dataset folder (default with --split-file: the folder the splits were made from)")
    p.add_argument("--format", default=None, choices=FORMATS, metavar="F",
                   help=f"dataset layout: {', '.join(FORMATS)} (default: detected)")
    p.add_argument("--csv", default=None, metavar="F",
                   help="label file instead of the layout's default (generic: meta.csv)")
    p.add_argument("--split-file", default=None, metavar="F", help="splits JSON from `python -m iqa splits`")
    p.add_argument("--split-index", type=int, default=0, metavar="K", help="split to use, 0-based (default 0)")
    p.add_argument("--part", default=DEFAULT_PART, choices=PARTS,
                   help=f"part of the split (default {DEFAULT_PART})")
    add_sampling_options(p)
    add_device_option(p)
    p.add_argument("--by", default=None, metavar="FIELD",
                   help="also break the metrics down by this record field: distortion, group, ...")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    p.add_argument("--predictions", default=None, metavar="CSV", help="write per-image predictions to this CSV")
    p.set_defaults(func=run)


def _load_records(args: argparse.Namespace) -> tuple[Dataset, list[Record], dict[str, Any]]:
    """(dataset, the records to evaluate, settings describing the selection). Raises DatasetError,
    ValueError or IndexError with a message for the user."""
    dataset = None
    if args.data:
        fmt = args.format or detect_format(args.data)
        if fmt is None:
            raise DatasetError(f"cannot tell the layout of {args.data}: give --format ({', '.join(FORMATS)})")
        dataset = load_dataset(args.data, fmt, csv=args.csv)
    elif not args.split_file:
        raise ValueError("name the dataset with --data DIR (and --format), or give --split-file")
    if not args.split_file:
        return dataset, list(dataset.records), {"format": dataset.format, "root": str(dataset.root)}
    splits = load_splits(args.split_file, dataset=dataset)
    dataset = splits.dataset()
    records = splits.part(args.split_index, args.part)
    split = {"file": str(args.split_file), "index": args.split_index, "part": args.part}
    return dataset, records, {"format": dataset.format, "root": str(dataset.root), "split": split}


def _method(args: argparse.Namespace) -> tuple[str, Scorer | None, dict[str, Any]]:
    """(method label, scorer, settings); scorer None after printing why the model cannot be loaded."""
    if args.model:
        return args.model.upper(), _as_scorer(load_peer(args.model)), {}
    assessor = open_assessor(args)
    if assessor is None:
        return "", None, {}
    if args.checkpoint:
        label = f"DiffV2IQA checkpoint {args.checkpoint}"
    elif args.preset:
        label = f"DiffV2IQA preset {args.preset} (untrained)"
    else:
        label = "DiffV2IQA default checkpoint"

    def scorer(path: Path) -> float:  # an image too big for the device raises ImageError: skipped too
        return assessor.assess(path, crops=args.crops, steps=args.steps, seed=args.seed).score

    return label, scorer, {"crops": args.crops, "steps": args.steps or assessor.cfg.diffusion.sample_steps,
                           "seed": args.seed, "device": str(assessor.device)}


def run(args: argparse.Namespace) -> int:
    problem = check_sampling_options(args)
    for opt in (args.out, args.predictions):
        if problem is None and opt and not Path(opt).expanduser().resolve().parent.is_dir():
            problem = f"{opt}: its folder does not exist"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        dataset, records, selection = _load_records(args)
    except (DatasetError, ValueError, IndexError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    label, scorer, settings = _method(args)
    if scorer is None:
        return EXIT_USAGE
    try:
        result = evaluate(scorer, records, method=label, dataset=dataset.name, by=args.by, root=dataset.root,
                          settings={**selection, **settings})
    except EvaluationError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    text = json.dumps(result.to_dict(), indent=2)
    print(text)
    try:
        if args.out:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.out}", file=sys.stderr)
        if args.predictions:
            print(f"wrote {write_predictions(result, args.predictions)}", file=sys.stderr)
    except OSError as err:
        print(f"error: cannot write the results: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{label}: {result.correlations.line()}", file=sys.stderr)
    return EXIT_OK
