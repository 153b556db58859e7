"""Content-disjoint train/val/test splits, saved as JSON for training and evaluation.

Records are split by `Record.group` (the reference image for synthetic datasets, the image itself
for authentic ones), so no content is seen in two parts. Ratios count groups, as the usual
protocol does (LIVE 8:2 = 23 / 6 references). Each of the N splits draws its own permutation
from (seed, split index), so split k is the same whatever N is.

CLI: `python -m iqa splits --data DIR --format F --ratios 8:2 --count 10 --seed 0 --out splits.json`
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from iqa.data.datasets import CSV_FORMATS, FORMATS, Dataset, DatasetError, Record, load_dataset

PART_NAMES = {2: ("train", "test"), 3: ("train", "val", "test")}
RATIO_PRESETS = ("8:2", "7:1:2", "6:2:2")  # the paper's protocols
SPLITS_VERSION = 1
DEFAULT_COUNT = 10
MAX_LISTED = 5


def parse_ratios(ratios: str | Sequence[float]) -> tuple[float, ...]:
    """'8:2' or (8, 2) -> (8.0, 2.0); two parts are train:test, three train:val:test."""
    if isinstance(ratios, str):
        try:
            values = tuple(float(v) for v in ratios.replace("/", ":").split(":"))
        except ValueError:
            raise ValueError(f"ratios '{ratios}' are not numbers separated by ':' (e.g. {', '.join(RATIO_PRESETS)})") from None
    else:
        values = tuple(float(v) for v in ratios)
    if len(values) not in PART_NAMES or any(not np.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"ratios {ratios!r}: give 2 (train:test) or 3 (train:val:test) positive numbers, "
                         f"e.g. {', '.join(RATIO_PRESETS)}")
    return values


def part_sizes(n_groups: int, ratios: Sequence[float]) -> list[int]:
    """Groups per part: largest-remainder rounding of n * ratio, at least one group per part."""
    k = len(ratios)
    if n_groups < k:
        raise ValueError(f"cannot split {n_groups} content group(s) into {k} non-empty parts; "
                         f"the dataset needs at least {k} distinct groups (reference images).")
    exact = n_groups * np.asarray(ratios, dtype=np.float64) / float(sum(ratios))
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[: n_groups - sizes.sum()]:
        sizes[i] += 1
    while (sizes == 0).any():  # tiny datasets: take from the biggest part
        sizes[int(np.argmax(sizes))] -= 1
        sizes[int(np.argmin(sizes))] += 1
    return sizes.tolist()


@dataclass
class SplitSet:
    """N splits of one dataset. Each split maps part name -> image paths relative to `root`."""

    format: str
    root: Path
    csv: str | None
    lower_is_better: bool
    ratios: tuple[float, ...]
    seed: int
    splits: list[dict[str, list[str]]]
    _dataset: Dataset | None = field(default=None, repr=False, compare=False)

    @property
    def part_names(self) -> tuple[str, ...]:
        return PART_NAMES[len(self.ratios)]

    def __len__(self) -> int:
        return len(self.splits)

    def dataset(self) -> Dataset:
        """The dataset the splits index (loaded from `root` on first use)."""
        if self._dataset is None:
            csv_path = str(self.root / self.csv) if self.csv else None  # absolute paths stay as they are
            self._dataset = load_dataset(self.root, self.format, csv=csv_path,
                                         lower_is_better=self.lower_is_better)
        return self._dataset

    def part(self, index: int, name: str) -> list[Record]:
        """Records of part `name` ('train', 'val', 'test') of split `index` (0-based)."""
        if not 0 <= index < len(self.splits):
            raise IndexError(f"split index {index} out of range: this file holds {len(self.splits)} splits (0..{len(self.splits) - 1})")
        if name not in self.splits[index]:
            raise ValueError(f"no part '{name}' in split {index}; parts: {', '.join(self.splits[index])}")
        by_path = self.dataset().index()
        paths = self.splits[index][name]
        missing = [p for p in paths if p not in by_path]
        if missing:
            raise DatasetError(f"{len(missing)} image(s) of split {index} part '{name}' are not in the dataset at "
                               f"{self.root}: {', '.join(missing[:MAX_LISTED])}. The dataset changed since the "
                               "splits were made: make the splits again.")
        return [by_path[p] for p in paths]

    def to_dict(self) -> dict:
        dataset = self._dataset
        return {
            "version": SPLITS_VERSION,
            "dataset": {"format": self.format, "root": str(self.root), "csv": self.csv,
                        "lower_is_better": self.lower_is_better,
                        "name": dataset.name if dataset else None,
                        "records": len(dataset) if dataset else None,
                        "groups": len(dataset.groups) if dataset else None},
            "ratios": [int(r) if float(r).is_integer() else r for r in self.ratios],
            "parts": list(self.part_names),
            "seed": self.seed,
            "count": len(self.splits),
            "splits": self.splits,
        }


def split_groups(groups: Iterable[str], ratios: str | Sequence[float], seed: int = 0,
                 k: int = 0) -> dict[str, list[str]]:
    """Split number `k` of content groups into parts (train/(val/)test -> sorted group names).

    The same rule as `make_splits`, so a folder of pristine photos split by their names gives the
    same photos per part as the synthetic set made from them (whose groups are those names)."""
    values = parse_ratios(ratios)
    names = PART_NAMES[len(values)]
    groups = sorted(set(groups))
    sizes = part_sizes(len(groups), values)
    order = np.random.default_rng([seed, k]).permutation(len(groups))
    bounds = np.cumsum([0] + sizes)
    return {name: sorted(groups[i] for i in order[lo:hi]) for name, lo, hi in zip(names, bounds[:-1], bounds[1:])}


def make_splits(dataset: Dataset, ratios: str | Sequence[float] = "8:2", count: int = DEFAULT_COUNT,
                seed: int = 0) -> SplitSet:
    """`count` random content-disjoint splits of `dataset`; deterministic for a given seed."""
    values = parse_ratios(ratios)
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    members: dict[str, list[str]] = {}
    for r in dataset.records:
        members.setdefault(r.group, []).append(dataset.relative(r.image))
    splits = []
    for k in range(count):
        parts = split_groups(dataset.groups, values, seed, k)
        splits.append({name: [path for g in chosen for path in members[g]] for name, chosen in parts.items()})
    csv_used = None
    if dataset.format in CSV_FORMATS and dataset.label_file is not None:
        csv_used = dataset.relative(dataset.label_file)  # relative: survives moving the dataset
    return SplitSet(format=dataset.format, root=dataset.root, csv=csv_used,
                    lower_is_better=dataset.lower_is_better, ratios=values, seed=int(seed),
                    splits=splits, _dataset=dataset)


def save_splits(splits: SplitSet, path: str | Path) -> Path:
    """Write `splits` as JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits.to_dict(), indent=1))
    return path


def load_splits(path: str | Path, dataset: Dataset | None = None, root: str | Path | None = None) -> SplitSet:
    """Read a splits JSON. `dataset`: an already loaded dataset to use; `root`: where the dataset
    lives now, if it moved since the splits were made."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        meta = data["dataset"]
        result = SplitSet(format=meta["format"], root=Path(root) if root else Path(meta["root"]),
                          csv=meta.get("csv"), lower_is_better=bool(meta["lower_is_better"]),
                          ratios=parse_ratios(data["ratios"]), seed=int(data["seed"]),
                          splits=[{k: list(v) for k, v in s.items()} for s in data["splits"]])
    except FileNotFoundError:
        raise ValueError(f"splits file {path} not found; make one with `python -m iqa splits ...`") from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a valid splits file ({type(err).__name__}: {err}); "
                         "make it again with `python -m iqa splits ...`") from None
    if dataset is not None:
        if dataset.format != result.format:
            raise ValueError(f"{path} was made for a {result.format} dataset, got a {dataset.format} one")
        result._dataset = dataset
        result.root = dataset.root
    return result


def register(subparsers) -> None:
    p = subparsers.add_parser("splits", help="make N content-disjoint train/(val/)test splits of a dataset",
                              description="Splits a dataset by content (reference image for synthetic sets, the "
                                          "image for authentic ones) into N seeded train/(val/)test splits, saved "
                                          "as one JSON file that train, evaluate and report read.")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="dataset layout")
    p.add_argument("--csv", default=None, help="label file instead of the layout's default (generic: meta.csv)")
    p.add_argument("--lower-is-better", action=argparse.BooleanOptionalAction, default=None,
                   help="raw score is a DMOS (default: the dataset's own convention)")
    p.add_argument("--ratios", default="8:2", help=f"train:test or train:val:test, e.g. {', '.join(RATIO_PRESETS)}")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help="number of random splits")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="splits.json", help="output JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        dataset = load_dataset(args.data, args.format, csv=args.csv, lower_is_better=args.lower_is_better)
        splits = make_splits(dataset, args.ratios, args.count, args.seed)
        out = save_splits(splits, args.out)
    except (DatasetError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sizes = {n: [len(s[n]) for s in splits.splits] for n in splits.part_names}
    parts = ", ".join(f"{n} ~{np.mean(v):.0f} images" for n, v in sizes.items())
    print(f"{dataset.name}: {len(dataset)} images, {len(dataset.groups)} content groups; "
          f"{len(splits)} splits {args.ratios} (seed {splits.seed}): {parts}")
    print(f"wrote {out}")
    return 0
