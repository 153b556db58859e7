"""`python -m iqa score PATH...`: quality scores of image files, folders and glob patterns.

Per image: file, score (= vcg_weight * S1 + vda_weight * S2, higher = better), the branch scores S1 and S2, and
the seconds it took. Output is an aligned table (default), a JSON list (`--json`) or a CSV file
(`--csv OUT`). A file that cannot be read gets an `error` and the rest continue; the exit status
is 1 when any image failed, 2 for usage errors (no images found, no model).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from iqa.assess import DEFAULT_CROPS, STAGES, Assessor, load
from iqa.bundle import provisional_note
from iqa.config import PRESETS
from iqa.images import ImageError
from iqa.progress import progress_bar

# Suffixes taken from folders and glob matches (files named explicitly are always tried).
IMAGE_EXTENSIONS = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pnm"})
GLOB_CHARS = frozenset("*?[")
DEVICES = ("auto", "cpu", "cuda")
CSV_COLUMNS = ("file", "score", "s1", "s2", "seconds", "error", "notices")
NOTICE_SEPARATOR = "; "  # joins several notices in one CSV cell
SCORE_DIGITS = 4
SECONDS_DIGITS = 2
MISSING = "-"  # table cell of a value that does not exist (branch disabled, image failed)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class ScoreRow:
    """The outcome for one file: scores when it was assessed, else `error`."""

    file: str
    score: float | None = None
    s1: float | None = None
    s2: float | None = None
    seconds: float | None = None
    error: str | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CollectedInputs:
    """Files to score (in order, no duplicates) and warnings about arguments that gave none."""

    files: list[Path]
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ inputs


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if is_image_file(p))


def collect_images(paths: Sequence[str | Path], recursive: bool = False) -> CollectedInputs:
    """Expand files, folders (their images, sorted; subfolders too with `recursive`) and glob
    patterns (expanded here as well, for shells that pass them on unexpanded).

    A named path that does not exist is kept, so it is reported as a failed file.
    """
    out: list[Path] = []
    warnings: list[str] = []

    def expand_folder(folder: Path, label: str) -> list[Path]:
        images = _folder_images(folder, recursive)
        if not images:
            hint = "" if recursive or not any(p.is_dir() for p in folder.iterdir()) else \
                " (it has subfolders: add -r to include them)"
            warnings.append(f"{label}: no image files in this folder{hint}")
        return images

    for arg in paths:
        text = str(arg)
        path = Path(text).expanduser()
        if path.is_dir():
            out += expand_folder(path, text)
        elif path.exists() or not GLOB_CHARS & set(text):
            out.append(path)  # a file, or a missing path reported later as a failure
        else:
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
            images = []
            for m in matches:
                images += _folder_images(m, recursive) if m.is_dir() else ([m] if is_image_file(m) else [])
            if not images:
                warnings.append(f"{text}: no image files match this pattern")
            out += images
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return CollectedInputs(unique, warnings)


# ----------------------------------------------------------------------------------- scoring


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # keeps an active progress bar intact


def score_files(assessor: Assessor, files: Sequence[Path], *, crops: int = DEFAULT_CROPS,
                steps: int | None = None, seed: int = 0, progress: bool = True) -> list[ScoreRow]:
    """Assess each file; a bad one gets a row with `error` (also printed on stderr) and the rest go on.
    Notices (e.g. "downscaled ...") are printed on stderr as they come."""
    rows = []
    bar = progress_bar(files, desc="scoring", unit="img", disable=not progress or len(files) <= 1)
    for path in bar:
        name = str(path)
        try:
            result = assessor.assess(path, crops=crops, steps=steps, seed=seed, name=name)
        except ImageError as err:  # unreadable, or too big for the device's memory
            _say(f"error: {err}")
            rows.append(ScoreRow(file=name, error=str(err)))
            continue
        for notice in result.notices:
            _say(f"{name}: {notice}")
        rows.append(ScoreRow(file=name, score=result.score, s1=result.s1, s2=result.s2,
                             seconds=result.timings.get("total"), notices=list(result.notices)))
    return rows


# ------------------------------------------------------------------------------------ output


def _cell(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def format_table(rows: Sequence[ScoreRow]) -> str:
    """Aligned text table: file, score, S1, S2, seconds (failed files show 'failed')."""
    header = ("file", "score", "S1", "S2", "seconds")
    body = [(r.file, _cell(r.score, SCORE_DIGITS) if r.ok else "failed", _cell(r.s1, SCORE_DIGITS),
             _cell(r.s2, SCORE_DIGITS), _cell(r.seconds, SECONDS_DIGITS)) for r in rows]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        return "  ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])])

    return "\n".join([fmt(header), *(fmt(line) for line in body)])


def rows_to_json(rows: Sequence[ScoreRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


def write_csv(rows: Sequence[ScoreRow], path: str | Path) -> Path:
    """One line per file with the columns of `CSV_COLUMNS` (empty cells for missing values)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            d = asdict(r)
            d["notices"] = NOTICE_SEPARATOR.join(r.notices)
            writer.writerow({k: "" if d[k] is None else d[k] for k in CSV_COLUMNS})
    return path


# --------------------------------------------------------------------------------------- CLI


def add_model_group(p: argparse.ArgumentParser, required: bool = False) -> argparse._MutuallyExclusiveGroup:
    """--checkpoint | --preset (optional: neither = the bundled default). Returns the group, so a
    command can add other methods to it."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--checkpoint", default=None, metavar="C", help="checkpoint folder or .safetensors file")
    group.add_argument("--preset", default=None, choices=sorted(PRESETS), metavar="P",
                       help=f"an untrained preset model: {', '.join(sorted(PRESETS))} "
                            "(plumbing and timing only; its scores are not meaningful)")
    p.add_argument("--allow-random-backbone", action="store_true",
                   help="with --preset: build on random backbone weights when no pretrained ones are reachable")
    return group


def parse_bf16(spec: str) -> tuple[str, ...] | None:
    """A `--bf16` option: "auto" -> None (the assessor's default for the device), "none" -> (), or
    comma-separated names of `iqa.assess.STAGES`."""
    if spec == "auto":
        return None
    stages = tuple(s.strip() for s in spec.split(",") if s.strip() and s.strip() != "none")
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(unknown)}; use auto, none or names of "
                                         f"{', '.join(STAGES)}")
    return stages


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICES, help="where the model runs (default auto)")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--crops", type=int, default=DEFAULT_CROPS, metavar="K",
                   help=f"crops per image whose scores are averaged (default {DEFAULT_CROPS}: tile the whole "
                        "image, every patch analysed; K > 0: K crops spread over it)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="diffusion sampling steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="diffusion noise seed (default 0)")
    add_diffusion_scale_option(p)


def add_diffusion_scale_option(p: argparse.ArgumentParser, whose: str = "the model's") -> None:
    """--diffusion-scale / --full-res-steps: the U-Net's resolution (`DiffusionConfig.unet_scale` /
    `.full_res_steps`), by default `whose` setting."""
    p.add_argument("--diffusion-scale", type=int, default=None, metavar="N",
                   help=f"run the diffusion U-Net at 1/N resolution (1: full resolution, the paper; default: {whose} "
                        "setting; the bundled default runs 2, with --full-res-steps 1)")
    p.add_argument("--full-res-steps", type=int, default=None, metavar="K",
                   help="with --diffusion-scale above 1: the last K sampling steps still run at full resolution "
                        f"(0: none; default: {whose} setting)")


def add_fold_batchnorm_option(p: argparse.ArgumentParser) -> None:
    """--fold-batchnorm / --no-fold-batchnorm (`Assessor`'s `fold_batchnorm`; default None: where the
    backbones run in float32)."""
    p.add_argument("--fold-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                   help="fold the backbones' BatchNorms into their convolutions (default: where the backbones "
                        "run in float32, where it is exact)")


def check_sampling_options(args: argparse.Namespace) -> str | None:
    """A usage error message, or None when --crops / --steps are valid."""
    if args.crops < 0:
        return f"--crops must be at least 1, or 0 to tile the whole image; got {args.crops}"
    if args.steps is not None and args.steps < 2:
        return f"--steps must be at least 2 (two noisy states are kept), got {args.steps}"
    if args.diffusion_scale is not None and args.diffusion_scale < 1:
        return f"--diffusion-scale must be at least 1 (1: full resolution), got {args.diffusion_scale}"
    if args.full_res_steps is not None and args.full_res_steps < 0:
        return f"--full-res-steps must be at least 0, got {args.full_res_steps}"
    return None


def open_assessor(args: argparse.Namespace) -> Assessor | None:
    """The model named by --checkpoint / --preset (else the bundled default), or None after
    printing why it cannot be loaded."""
    try:
        assessor = load(args.checkpoint or args.preset or None, device=args.device,
                        allow_random_backbone=getattr(args, "allow_random_backbone", False),
                        diffusion_scale=getattr(args, "diffusion_scale", None),
                        full_res_steps=getattr(args, "full_res_steps", None))
    except (FileNotFoundError, ValueError) as err:  # missing default, bad checkpoint, no CUDA
        print(f"error: {err}", file=sys.stderr)
        return None
    if note := provisional_note(assessor.card):
        print(f"note: {note}", file=sys.stderr)
    return assessor


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="score image files, folders or glob patterns",
        description="Quality score of each image (higher = better) with its branch scores S1 (VCG) and "
                    "S2 (VDA). Exit status: 0 all scored, 1 some files failed, 2 usage error.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders or glob patterns ('photos/*.jpg')")
    p.add_argument("-r", "--recursive", action="store_true", help="include images in subfolders of folders")
    add_model_group(p)
    add_sampling_options(p)
    add_device_option(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    out.add_argument("--csv", default=None, metavar="OUT", help="also write the results to this CSV file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    problem = check_sampling_options(args)
    if problem is None and args.csv and not Path(args.csv).expanduser().resolve().parent.is_dir():
        problem = f"--csv {args.csv}: its folder does not exist"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    inputs = collect_images(args.paths, args.recursive)
    for warning in inputs.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not any(p.is_file() for p in inputs.files):
        missing = [str(p) for p in inputs.files]
        detail = f" ({', '.join(missing)} not found)" if missing else ""
        print(f"error: no images found{detail}. Name image files, folders or patterns such as 'photos/*.jpg'.",
              file=sys.stderr)
        return EXIT_USAGE
    assessor = open_assessor(args)
    if assessor is None:
        return EXIT_USAGE
    rows = score_files(assessor, inputs.files, crops=args.crops, steps=args.steps, seed=args.seed)
    failed = sum(not r.ok for r in rows)
    if args.json:
        print(rows_to_json(rows))
    else:
        print(format_table(rows))
    if args.csv:
        try:
            print(f"wrote {write_csv(rows, args.csv)}", file=sys.stderr)
        except OSError as err:
            print(f"error: cannot write {args.csv}: {err}", file=sys.stderr)
            return EXIT_USAGE
    if failed:
        print(f"{failed} of {len(rows)} file(s) could not be scored", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
