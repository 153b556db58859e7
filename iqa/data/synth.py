"""`python -m iqa synth`: a KADID-style synthetic training set labelled by full-reference metrics.

Each pristine photo gives N random crops (the references, `OUT/refs/<ref>.png`); every crop is
distorted by the 25 kinds of `iqa.data.distortions` at 5 levels (`OUT/images/<ref>_<kind>_<level>.png`).
`OUT/meta.csv` is the project's generic dataset layout: image, ref, group, distortion, level, mos,
then one column per full-reference (FR) metric. `group` is the pristine photo, so every crop of one
photo stays on one side of a content-disjoint split.

Each image is labelled with a pseudo-MOS in [0, 1] (higher = better): the mean of four
full-reference metrics against its reference crop, each mapped to [0, 1] (`iqa.data.pseudo_mos`).
It is a model of a model, not human opinion (limits: docs/SYNTH.md); use it to pre-train or to
exercise the pipeline, and report results on human-rated data.

Runs are deterministic for a seed: every crop and every (crop, kind) gets its own generator derived
from the base seed and the names, so results do not depend on `--workers` or on which kinds are
asked for. All files are written to a temporary name and renamed, and finished (crop, kind) parts
are recorded under `OUT/parts/`, so an interrupted run can be re-run and skips what is done.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from iqa.data.distortions import KINDS, LEVELS
from iqa.data.pseudo_mos import METRICS, ensemble_mos, pseudo_mos
from iqa.data.sources import Source, SourceError, find_sources
from iqa.data.workers import worker_context
from iqa.images import ImageError, load_image
from iqa.progress import progress_bar

SYNTH_VERSION = 1  # bump when distortions or crops change, so old output folders are not mixed in
DEFAULT_SIZE = (512, 384)  # KADID-10k's image size (width, height)
DEFAULT_CROPS = 1
DEFAULT_SEED = 0
MIN_CROP_SIDE = 64  # below this VIF (41 px) and the coarse metric scales break down
PRISTINE_KIND = "pristine"  # `distortion` of the reference rows added by --include-pristine
META_CSV = "meta.csv"
SETTINGS_JSON = "synth.json"
REFS_DIR, IMAGES_DIR, PARTS_DIR = "refs", "images", "parts"
PNG_COMPRESS_LEVEL = 6
CSV_DECIMALS = 6

# Seed-stream tags, so crops and distortions of one reference never share random numbers.
CROP_STREAM, KIND_STREAM = 1, 2

# ---------------------------------------------------------------- configuration and results

@dataclass(frozen=True)
class SynthConfig:
    """What to generate. `size` is (width, height); `levels` are 1-based level numbers."""

    size: tuple[int, int] = DEFAULT_SIZE
    crops_per_image: int = DEFAULT_CROPS
    kinds: tuple[str, ...] = tuple(KINDS)
    levels: tuple[int, ...] = tuple(range(1, LEVELS + 1))
    seed: int = DEFAULT_SEED
    include_pristine: bool = False

    def settings(self) -> dict:
        """The settings that fix the content of existing files (a re-run must match them)."""
        return {"version": SYNTH_VERSION, "size": list(self.size), "crops_per_image": self.crops_per_image,
                "seed": self.seed}


@dataclass
class Sample:
    """One row of meta.csv: paths relative to the output folder."""

    image: str
    ref: str
    group: str
    distortion: str
    level: int
    mos: float
    metrics: dict[str, float]

    def csv_row(self) -> list[str]:
        fmt = f"{{:.{CSV_DECIMALS}f}}"
        return [self.image, self.ref, self.group, self.distortion, str(self.level), fmt.format(self.mos)] + \
            [fmt.format(self.metrics[m]) for m in METRICS]


META_COLUMNS = ("image", "ref", "group", "distortion", "level", "mos") + tuple(METRICS)


@dataclass
class Failure:
    what: str
    reason: str


@dataclass
class SynthSummary:
    """What a `synthesize` run did."""

    out: Path
    samples: list[Sample]
    refs: list[str]
    images_written: int = 0
    images_reused: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def meta_csv(self) -> Path:
        return self.out / META_CSV


class SynthError(ValueError):
    """Unusable arguments or output folder; the message says what to do."""


# ---------------------------------------------------------------- small helpers

def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def crop_rng(seed: int, ref_source: str) -> np.random.Generator:
    return np.random.default_rng([seed, CROP_STREAM, _stable_id(ref_source)])


def kind_rng(seed: int, ref: str, kind: str) -> np.random.Generator:
    """Generator of one (reference crop, kind): the same for every level, so levels share a pattern."""
    return np.random.default_rng([seed, KIND_STREAM, _stable_id(ref), _stable_id(kind)])


def select_levels(count: int) -> tuple[int, ...]:
    """`count` of the 5 levels, evenly spread (always 1 and 5 when count >= 2; 3 when count == 1)."""
    if not 1 <= count <= LEVELS:
        raise SynthError(f"--levels must be between 1 and {LEVELS}, got {count}")
    if count == 1:
        return (math.ceil(LEVELS / 2),)
    return tuple(int(round(v)) for v in np.linspace(1, LEVELS, count))


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 512x384")
    w, h = int(m.group(1)), int(m.group(2))
    if min(w, h) < MIN_CROP_SIDE:
        raise argparse.ArgumentTypeError(f"size {w}x{h} is too small; each side needs at least {MIN_CROP_SIDE} px")
    return w, h


def parse_kinds(values: Iterable[str] | None) -> tuple[str, ...]:
    """Kind names (space or comma separated; 'all' = every kind) in registry order."""
    names = [n.strip() for v in (values or ["all"]) for n in v.split(",") if n.strip()]
    if not names or "all" in names:
        return tuple(KINDS)
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise SynthError(f"unknown distortion kind(s) {', '.join(unknown)}; choose from: {', '.join(KINDS)}")
    return tuple(k for k in KINDS if k in names)


def random_crops(image: np.ndarray, size: tuple[int, int], count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` random (height, width) = size[::-1] crops of an RGB image; a smaller image is upscaled first."""
    w, h = size
    ih, iw = image.shape[:2]
    if iw < w or ih < h:
        scale = max(w / iw, h / ih)
        nw, nh = max(w, math.ceil(iw * scale)), max(h, math.ceil(ih * scale))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_CUBIC)
        ih, iw = nh, nw
    crops = []
    for _ in range(count):
        y, x = int(rng.integers(0, ih - h + 1)), int(rng.integers(0, iw - w + 1))
        crops.append(np.ascontiguousarray(image[y:y + h, x:x + w]))
    return crops


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def write_png(path: Path, image: np.ndarray) -> None:
    atomic_write_bytes(path, _png_bytes(image))


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def image_rel(ref: str, kind: str, level: int) -> str:
    return f"{IMAGES_DIR}/{ref}_{kind}_{level}.png"


def ref_rel(ref: str) -> str:
    return f"{REFS_DIR}/{ref}.png"


# ---------------------------------------------------------------- the two stages (run in workers)

@dataclass
class CropResult:
    source: Source
    refs: list[str]
    error: str | None = None


@dataclass
class KindResult:
    ref: str
    kind: str
    samples: list[Sample]
    written: int = 0
    reused: int = 0
    error: str | None = None


def make_crops(source: Source, out: Path, config: SynthConfig) -> CropResult:
    """Stage 1: save the reference crops of one photo (skipped when they all exist)."""
    refs = source.ref_names(config.crops_per_image)
    if all((out / ref_rel(r)).is_file() for r in refs):
        return CropResult(source, refs)
    try:
        image = load_image(source.path).array
        rng = crop_rng(config.seed, source.name)
        for ref, crop in zip(refs, random_crops(image, config.size, config.crops_per_image, rng)):
            write_png(out / ref_rel(ref), crop)
    except ImageError as e:
        return CropResult(source, [], error=str(e))
    except Exception as e:  # noqa: BLE001 - e.g. disk full or an undecodable variant; reported, run goes on
        return CropResult(source, [], error=f"{type(e).__name__}: {e}")
    return CropResult(source, refs)


def _part_path(out: Path, ref: str, kind: str) -> Path:
    return out / PARTS_DIR / ref / f"{kind}.json"


def _load_part(out: Path, ref: str, kind: str, levels: Sequence[int]) -> list[Sample] | None:
    """Rows of a finished (ref, kind) covering `levels`, or None if it must be (re)made."""
    path = _part_path(out, ref, kind)
    try:
        rows = [Sample(**r) for r in json.loads(path.read_text())["samples"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    by_level = {r.level: r for r in rows}
    if not all(lv in by_level for lv in levels):
        return None
    chosen = [by_level[lv] for lv in levels]
    if not all((out / r.image).is_file() and set(r.metrics) == set(METRICS) for r in chosen):
        return None
    for r in chosen:  # labels follow the current maps; only the raw metric values are cached
        r.mos = ensemble_mos(r.metrics)
    return chosen


def make_kind(out: Path, ref: str, group: str, kind: str, config: SynthConfig) -> KindResult:
    """Stage 2: all levels of one kind for one reference crop (or its pristine row): files + labels."""
    levels = (0,) if kind == PRISTINE_KIND else config.levels
    done = _load_part(out, ref, kind, levels)
    if done is not None:
        return KindResult(ref, kind, done, reused=len(done))
    try:
        reference = _read_png(out / ref_rel(ref))
        if kind == PRISTINE_KIND:
            images, paths = [reference], [ref_rel(ref)]
        else:
            images = [KINDS[kind](reference, lv, kind_rng(config.seed, ref, kind)) for lv in levels]
            paths = [image_rel(ref, kind, lv) for lv in levels]
            for rel, img in zip(paths, images):
                write_png(out / rel, img)
        scores = pseudo_mos(images, reference)
    except Exception as e:  # noqa: BLE001 - reported per (ref, kind); the run goes on
        return KindResult(ref, kind, [], error=f"{type(e).__name__}: {e}")
    samples = [Sample(image=rel, ref=ref_rel(ref), group=group, distortion=kind, level=lv, mos=s.mos,
                      metrics=s.metrics) for rel, lv, s in zip(paths, levels, scores)]
    atomic_write_bytes(_part_path(out, ref, kind), json.dumps({"samples": [asdict(s) for s in samples]}).encode())
    return KindResult(ref, kind, samples, written=0 if kind == PRISTINE_KIND else len(samples))


def _init_worker() -> None:
    """One thread per worker process: no oversubscription, and the same arithmetic as a 1-worker run."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class _Runner:
    """Runs stage functions in-process (workers == 1) or in a pool of worker processes (`worker_context`)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None

    def __enter__(self):
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_init_worker,
                                            mp_context=worker_context(__name__))
        else:
            self._threads = (torch.get_num_threads(), cv2.getNumThreads())
            _init_worker()
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        else:
            torch.set_num_threads(self._threads[0])
            cv2.setNumThreads(self._threads[1])
        return False

    def map(self, fn, jobs: list[tuple]):
        """Yield fn(*job) results as they finish."""
        if self.pool is None:
            for job in jobs:
                yield fn(*job)
            return
        futures = [self.pool.submit(fn, *job) for job in jobs]
        for fut in as_completed(futures):
            yield fut.result()


# ---------------------------------------------------------------- driver

def _check_settings(out: Path, config: SynthConfig) -> None:
    path = out / SETTINGS_JSON
    want = config.settings()
    if path.is_file():
        try:
            have = json.loads(path.read_text())
        except ValueError:
            have = None
        if have != want:
            raise SynthError(f"{out} holds a synthetic set made with other settings ({have}, now {want}); "
                             f"use another --out folder or delete this one.")
    else:
        atomic_write_bytes(path, json.dumps(want, indent=2).encode())


def write_meta(path: Path, samples: Sequence[Sample]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(META_COLUMNS)
    writer.writerows(s.csv_row() for s in samples)
    atomic_write_bytes(path, buf.getvalue().encode())


def synthesize(pristine: str | Path, out: str | Path, config: SynthConfig = SynthConfig(), workers: int = 1,
               progress: bool = True, log: Callable[[str], None] | None = None) -> SynthSummary:
    """Generate the synthetic set of `config` from the photos in `pristine` into `out`; see the module doc.

    Bad photos and failed (ref, kind) parts are reported through `log` and listed in the summary;
    everything else goes on.
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    out = Path(out)
    sources = find_sources(Path(pristine))
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    summary = SynthSummary(out=out, samples=[], refs=[])
    kinds = list(config.kinds) + ([PRISTINE_KIND] if config.include_pristine else [])
    with _Runner(max(1, workers)) as runner:
        ok: dict[str, CropResult] = {}
        bar = progress_bar(total=len(sources), desc="crops", unit="photo", disable=not progress)
        for res in runner.map(make_crops, [(s, out, config) for s in sources]):
            bar.update(1)
            if res.error:
                summary.failures.append(Failure(str(res.source.path), res.error))
                log(f"skipped {res.source.path}: {res.error}")
            else:
                ok[res.source.name] = res
        bar.close()
        order = [s.name for s in sources if s.name in ok]
        jobs = [(out, ref, name, kind, config) for name in order for ref in ok[name].refs for kind in kinds]
        summary.refs = [ref for name in order for ref in ok[name].refs]
        per_job = {kind: (1 if kind == PRISTINE_KIND else len(config.levels)) for kind in kinds}
        results: dict[tuple[str, str], KindResult] = {}
        bar = progress_bar(total=sum(per_job[j[3]] for j in jobs), desc="images", unit="img", disable=not progress)
        for res in runner.map(make_kind, jobs):
            bar.update(per_job[res.kind])
            results[(res.ref, res.kind)] = res
            summary.images_written += res.written
            summary.images_reused += res.reused
            if res.error:
                summary.failures.append(Failure(f"{res.ref} {res.kind}", res.error))
                log(f"failed {res.ref} {res.kind}: {res.error}")
        bar.close()
    summary.samples = [s for ref in summary.refs for kind in kinds for s in results[(ref, kind)].samples]
    write_meta(summary.meta_csv, summary.samples)
    summary.seconds = time.perf_counter() - t0
    return summary


# ---------------------------------------------------------------- CLI

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="make a KADID-style synthetic training set (25 distortions x 5 levels, FR-ensemble labels)",
        description="Crop pristine photos, distort every crop with the 25 KADID-10k kinds at 5 levels, label each "
                    "image with a pseudo-MOS from full-reference metrics, and write OUT/meta.csv (generic layout). "
                    "Re-running with the same --out skips finished work.")
    p.add_argument("--pristine", type=Path, help="folder of pristine photos (or one photo)")
    p.add_argument("--out", type=Path, help="output folder (refs/, images/, meta.csv)")
    p.add_argument("--crops-per-image", type=int, default=DEFAULT_CROPS, metavar="N",
                   help=f"random crops per photo (default {DEFAULT_CROPS})")
    p.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, metavar="WxH",
                   help=f"crop size (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}, as KADID-10k)")
    p.add_argument("--kinds", nargs="+", metavar="KIND",
                   help="distortion kinds (space or comma separated; default all): " + ", ".join(KINDS))
    p.add_argument("--levels", type=int, default=LEVELS, metavar="N",
                   help=f"levels per kind, evenly spread over 1..{LEVELS} (default {LEVELS})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"base seed (default {DEFAULT_SEED})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (default: CPU count); the result does not depend on it")
    p.add_argument("--include-pristine", action="store_true",
                   help="also list each reference crop in meta.csv (distortion 'pristine', level 0)")
    p.add_argument("--contact-sheet", type=Path, metavar="PATH",
                   help="write one PNG of all kinds x levels for one crop (of the first --pristine photo, or of "
                        "scikit-image's astronaut when --pristine is not given)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        if args.out is None and args.contact_sheet is None:
            raise SynthError("nothing to do: give --pristine DIR --out DIR to make a set, and/or --contact-sheet PATH")
        if args.out is not None and args.pristine is None:
            raise SynthError("--out needs --pristine DIR, the folder of pristine photos to crop and distort")
        if args.crops_per_image < 1:
            raise SynthError(f"--crops-per-image must be at least 1, got {args.crops_per_image}")
        if args.workers < 1:
            raise SynthError(f"--workers must be at least 1, got {args.workers}")
        config = SynthConfig(size=tuple(args.size), crops_per_image=args.crops_per_image,
                             kinds=parse_kinds(args.kinds), levels=select_levels(args.levels), seed=args.seed,
                             include_pristine=args.include_pristine)
        if args.contact_sheet is not None:
            from iqa.data.contact_sheet import contact_sheet, save_contact_sheet, sheet_reference  # built on this

            reference, name = sheet_reference(args.pristine, config)
            sheet = contact_sheet(reference, config.kinds, config.seed, name, progress=not args.no_progress)
            save_contact_sheet(args.contact_sheet, sheet)
            print(f"contact sheet: {args.contact_sheet} ({args.contact_sheet.stat().st_size / 2**20:.2f} MB)")
        if args.out is None:
            return 0
        s = synthesize(args.pristine, args.out, config, workers=args.workers, progress=not args.no_progress)
    except (SynthError, SourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}. Check the path and free disk space.", file=sys.stderr)
        return 2
    print(f"{len(s.samples)} rows in {s.meta_csv} ({len(s.refs)} reference crops; {s.images_written} images "
          f"written, {s.images_reused} reused) in {s.seconds:.1f} s")
    if s.failures:
        print(f"{len(s.failures)} problem(s), skipped:", file=sys.stderr)
        for f in s.failures:
            print(f"  {f.what}: {f.reason}", file=sys.stderr)
    return 0 if s.refs else 1
