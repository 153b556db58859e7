"""Readers for public IQA datasets in their standard layouts, and for a generic CSV layout.

Every reader turns a dataset folder into a list of `Record`s: image path, optional reference
path, the raw human score, the score normalised to [0, 1] with higher = better (min-max over the
dataset, DMOS inverted), and the `group` that content-disjoint splits keep together (the
reference image for synthetic distortions, the image itself for authentic ones). Layouts are the
releases' own (listed in `_LAYOUTS`); file names are matched case-insensitively because the
releases mix cases (TID2013 ships `I01.BMP` next to `i25.bmp`).
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

import numpy as np

FORMATS = ("live", "csiq", "tid2013", "kadid10k", "koniq10k", "clive", "pipal", "generic")
DISPLAY_NAMES = {
    "live": "LIVE (release 2)",
    "csiq": "CSIQ",
    "tid2013": "TID2013",
    "kadid10k": "KADID-10k",
    "koniq10k": "KonIQ-10k",
    "clive": "LIVE Challenge (CLIVE)",
    "pipal": "PIPAL",
    "generic": "generic CSV",
}
# Raw score direction of each release: True where the score is a DMOS (lower = better).
LOWER_IS_BETTER = {
    "live": True, "csiq": True, "tid2013": False, "kadid10k": False,
    "koniq10k": False, "clive": False, "pipal": False, "generic": False,
}

MAX_LISTED = 5  # names / rows quoted in an error message before "and N more"
MAX_FOUND_LISTED = 12  # folder entries quoted in a wrong-layout message

# LIVE release 2: distortion folders in the order of the 982 entries of dmos.mat.
LIVE_DISTORTIONS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVE_REF_DIR = "refimgs"

# CSIQ: distortion type as written in csiq.DMOS.xlsx -> folder under dst_imgs/ (also the file-name
# token, matched case-insensitively: 1600.AWGN.1.png lives in dst_imgs/awgn/).
CSIQ_TYPES = {
    "noise": "awgn", "awgn": "awgn",
    "jpeg": "jpeg",
    "jpeg2000": "jpeg2000", "jpeg 2000": "jpeg2000", "jp2k": "jpeg2000",
    "1/f noise": "fnoise", "fnoise": "fnoise", "pink noise": "fnoise",
    "blur": "blur",
    "contrast": "contrast",
}
CSIQ_LABEL_FILES = ("csiq.DMOS.xlsx", "csiq.DMOS.csv", "csiq_dmos.csv")
CSIQ_SHEET = "all_by_image"
CSIQ_HEADER_SCAN_ROWS = 20  # the xlsx has title rows above its header

KONIQ_LABEL_FILES = ("koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv")
KONIQ_IMAGE_DIRS = ("1024x768", "512x384", "images", "")
KONIQ_SCORE_COLUMNS = ("MOS_zscore", "MOS")  # both files carry the 1..100 score under one of these

CLIVE_TRAINING_IMAGES = 7  # the first entries of the .mat files are rater-training images

GENERIC_CSV = "meta.csv"
GENERIC_REF_DIR = "refs"
GENERIC_IMAGE_COLUMNS = ("image", "dist_name", "dist_img")
GENERIC_REF_COLUMNS = ("ref", "ref_name", "ref_img")
GENERIC_MOS_COLUMNS = ("mos",)
GENERIC_GROUP_COLUMNS = ("group",)
CSV_DELIMITERS = ",;\t"


class DatasetError(ValueError):
    """A dataset folder or label file that cannot be read; the message says what to fix."""


@dataclass(frozen=True)
class Record:
    """One rated image. `mos` is in [0, 1], higher = better; `raw` is the score as published."""

    image: Path
    ref: Path | None
    raw: float
    mos: float
    group: str  # records sharing a group never go to different split parts
    extra: dict = field(default_factory=dict)  # per-dataset metadata: distortion, level, std, set...


@dataclass
class Dataset:
    """A loaded dataset: records in label-file order plus where they came from."""

    name: str
    format: str
    root: Path
    records: list[Record]
    lower_is_better: bool  # direction of `Record.raw`
    label_file: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def relative(self, path: Path) -> str:
        """`path` relative to the dataset root, POSIX style (what split files store)."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def index(self) -> dict[str, Record]:
        """Records keyed by their image path relative to the root."""
        return {self.relative(r.image): r for r in self.records}

    @property
    def groups(self) -> list[str]:
        """Distinct groups, in first-seen order."""
        return list(dict.fromkeys(r.group for r in self.records))


# ---------------------------------------------------------------------------------------------
# Shared machinery


@dataclass
class _Row:
    """One label entry before validation. `image`/`ref` are resolved paths, None when not found."""

    where: str  # location for messages: "line 5", "row 12", "entry 8"
    name: str  # image name as the label file writes it
    image: Path | None
    raw: Any
    ref_name: str | None = None
    ref: Path | None = None
    group: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class _Layout:
    """What a reader expects in the root. Each entry of `markers` is a set of alternatives."""

    markers: tuple[tuple[str, ...], ...]
    images_hint: str  # where the images should be, for the missing-files message
    label: tuple[str, ...] = ()  # the marker that is the label file (waived when `csv` is given)


class _FileIndex:
    """Case-insensitive lookup of the files under a folder."""

    def __init__(self, root: Path):
        self.root = root
        self._by_rel: dict[str, Path] = {}
        self._by_name: dict[str, list[Path]] = {}
        for dirpath, _dirs, files in os.walk(root):
            for fname in files:
                path = Path(dirpath) / fname
                self._by_rel[path.relative_to(root).as_posix().lower()] = path
                self._by_name.setdefault(fname.lower(), []).append(path)

    def find(self, *candidates: str) -> Path | None:
        """The first candidate (relative path) that exists; else a unique file with the first
        candidate's name anywhere under the root (re-organised copies); else None."""
        for cand in candidates:
            hit = self._by_rel.get(PurePosixPath(cand).as_posix().lower())
            if hit is not None:
                return hit
        if not candidates:
            return None
        same_name = self._by_name.get(PurePosixPath(candidates[0]).name.lower(), [])
        return same_name[0] if len(same_name) == 1 else None


def _listing(items: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def _exists_ci(root: Path, rel: str) -> Path | None:
    """`root/rel` matched case-insensitively, one path component at a time."""
    cur = root
    for part in PurePosixPath(rel).parts:
        if not cur.is_dir():
            return None
        direct = cur / part
        if direct.exists():
            cur = direct
            continue
        match = [c for c in cur.iterdir() if c.name.lower() == part.lower()]
        if not match:
            return None
        cur = match[0]
    return cur


def detect_format(root: str | Path) -> str | None:
    """The standard layout `root` looks like (first whose marker files all exist), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    for fmt in FORMATS:
        if fmt == "generic":
            if (root / GENERIC_CSV).is_file():
                return fmt
            continue
        if all(any(_exists_ci(root, alt) for alt in alts) for alts in _LAYOUTS[fmt].markers):
            return fmt
    return None


def _check_layout(root: Path, fmt: str, csv_given: bool = False) -> None:
    layout = _LAYOUTS[fmt]
    missing = [" or ".join(alts) for alts in layout.markers
               if not (csv_given and alts == layout.label) and not any(_exists_ci(root, alt) for alt in alts)]
    if not missing:
        return
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    found = _listing(entries, MAX_FOUND_LISTED) if entries else "nothing (empty folder)"
    expected = ", ".join(" or ".join(alts) for alts in layout.markers)
    if len(missing) < len(layout.markers):
        expected += f" (missing: {', '.join(missing)})"
    msg = f"{root} is not a {DISPLAY_NAMES[fmt]} folder in its standard layout: expected {expected}. Found: {found}."
    guess = detect_format(root)
    if guess and guess != fmt:
        msg += f" It looks like a {DISPLAY_NAMES[guess]} folder: use --format {guess}."
    else:
        msg += (" For any other layout use --format generic with a CSV "
                f"(columns image, mos[, ref, group]; default {GENERIC_CSV}).")
    raise DatasetError(msg)


def _parse_score(value: Any) -> float | None:
    """A finite float, or None when the value is missing or not a number."""
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float, np.number)) else float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _convert_extra(value: Any) -> Any:
    """CSV cell -> int / float / str / None, so extras are JSON-ready and comparable."""
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _build(fmt: str, root: Path, label_file: Path | None, rows: list[_Row],
           lower_is_better: bool, images_hint: str, name: str | None = None) -> Dataset:
    """Validate parsed rows (scores, duplicates, files) and normalise the scores."""
    source = str(label_file) if label_file else str(root)
    if not rows:
        raise DatasetError(f"{source}: no images listed; the dataset is empty.")

    bad = [r.where for r in rows if _parse_score(r.raw) is None]
    if bad:
        raise DatasetError(f"{source}: missing or non-numeric score at {_listing(bad)}. "
                           "Fix or remove these entries.")

    seen: dict[str, list[_Row]] = {}
    for r in rows:
        seen.setdefault((r.image.as_posix() if r.image else r.name).lower(), []).append(r)
    dups = [f"{same[0].name} ({', '.join(x.where for x in same)})" for same in seen.values() if len(same) > 1]
    if dups:
        raise DatasetError(f"{source}: {len(dups)} image(s) listed more than once: {_listing(dups)}. "
                           "Keep one row per image.")

    missing = [r.name for r in rows if r.image is None or not r.image.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(rows)} image file(s) listed in {source} are missing "
                           f"under {root}: {_listing(missing)}. Expected {images_hint}; check the "
                           "download is complete and unpacked there.")
    missing_refs = sorted({(r.ref_name or "?").lower(): r.ref_name or "?" for r in rows
                           if r.ref_name is not None and (r.ref is None or not r.ref.is_file())}.values())
    if missing_refs:
        raise DatasetError(f"{len(missing_refs)} reference image(s) named in {source} are missing "
                           f"under {root}: {_listing(missing_refs)}.")

    raw = np.array([_parse_score(r.raw) for r in rows], dtype=np.float64)
    lo, hi = float(raw.min()), float(raw.max())
    if hi <= lo:
        raise DatasetError(f"{source}: every score equals {lo}; scores cannot be normalised to [0, 1].")
    mos = (raw - lo) / (hi - lo)
    if lower_is_better:
        mos = 1.0 - mos

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, root)).as_posix()

    records = [
        Record(image=r.image, ref=r.ref, raw=float(v), mos=float(m),
               group=r.group if r.group is not None else rel(r.ref if r.ref is not None else r.image),
               extra=dict(r.extra))
        for r, v, m in zip(rows, raw, mos)
    ]
    return Dataset(name=name or DISPLAY_NAMES[fmt], format=fmt, root=root, records=records,
                   lower_is_better=lower_is_better, label_file=label_file)


def _label_path(root: Path, csv_arg: str | None, defaults: Iterable[str]) -> Path:
    """The label file: the user's `csv` (as given, else relative to root) or the first default."""
    if csv_arg:
        for cand in (Path(csv_arg), root / csv_arg):
            if cand.is_file():
                return cand.resolve()
        raise DatasetError(f"label file {csv_arg} not found (looked in the current folder and in {root}).")
    for name in defaults:
        hit = _exists_ci(root, name)
        if hit is not None and hit.is_file():
            return hit
    raise DatasetError(f"none of {', '.join(defaults)} found in {root}.")


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a comma / semicolon / tab separated file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from err
    try:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=CSV_DELIMITERS)
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    rows = []
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        for row in reader:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            rows.append((reader.line_num, {(k or "").strip(): v for k, v in row.items()}))
    except csv.Error as err:  # e.g. a field over the csv module's size limit; line_num is the last line read
        raise DatasetError(f"{path} line {reader.line_num + 1}: not readable as CSV ({err}).") from None
    return header, rows


def _column(path: Path, header: list[str], names: tuple[str, ...], required: bool = True) -> str | None:
    """The header entry matching one of `names` (case-insensitive)."""
    lower = {h.lower(): h for h in header}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    if required:
        alias = f" (also accepted: {', '.join(names[1:])})" if len(names) > 1 else ""
        raise DatasetError(f"{path} has no '{names[0]}' column{alias}; columns found: "
                           f"{', '.join(header) or 'none'}.")
    return None


def _load_mat(path: Path, key: str) -> np.ndarray:
    import scipy.io  # local: only the .mat readers need it

    try:
        data = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError) as err:
        raise DatasetError(f"cannot read {path} as a MATLAB file: {err}") from err
    if key not in data:
        keys = [k for k in data if not k.startswith("__")]
        raise DatasetError(f"{path} has no variable '{key}'; variables found: {', '.join(keys) or 'none'}.")
    return np.asarray(data[key])


def _mat_strings(arr: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (any shape) -> flat list of str."""
    out = []
    for item in arr.ravel():
        flat = np.asarray(item).ravel()
        out.append(str(flat[0]).strip() if flat.size else "")
    return out


def _cell_text(value: Any) -> str:
    """A label cell as text; whole numbers from spreadsheets (1600.0) lose their '.0'."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


def _name_tokens(name: str) -> list[int | str]:
    """'I01_02_3.png' -> [1, 2, 3]: the distortion / level fields encoded in a file name."""
    return [_convert_extra(t) for t in PurePosixPath(name).stem.split("_")[1:]]


# ---------------------------------------------------------------------------------------------
# Readers: each returns (label file, rows)


def _read_live(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    index = _FileIndex(root)
    realigned = _exists_ci(root, "dmos_realigned.mat")
    if realigned is not None:  # LIVE's corrected scores; falls back to the original dmos.mat
        label, key = realigned, "dmos_new"
    else:
        label, key = _exists_ci(root, "dmos.mat"), "dmos"
    dmos = _load_mat(label, key).ravel()
    orgs = _load_mat(label, "orgs").ravel().astype(bool)
    std = _load_mat(label, "dmos_std").ravel() if realigned is not None else None
    expected = sum(n for _, n in LIVE_DISTORTIONS)
    if dmos.size != expected or orgs.size != expected:
        counts = ", ".join(f"{d} {n}" for d, n in LIVE_DISTORTIONS)
        raise DatasetError(f"{label}: '{key}' has {dmos.size} and 'orgs' {orgs.size} entries; LIVE release 2 "
                           f"has {expected} ({counts}).")

    names = [f"{folder}/img{i}.bmp" for folder, count in LIVE_DISTORTIONS for i in range(1, count + 1)]
    refs_mat = _exists_ci(root, "refnames_all.mat")
    if refs_mat is not None:
        refnames = _mat_strings(_load_mat(refs_mat, "refnames_all"))
        if len(refnames) != expected:
            raise DatasetError(f"{refs_mat}: 'refnames_all' has {len(refnames)} entries, expected {expected}.")
    else:
        refnames = _live_refs_from_info(root, names)

    rows = []
    for i, (name, ref) in enumerate(zip(names, refnames)):
        if orgs[i]:
            continue  # a copy of the reference inside a distortion folder
        folder = name.split("/")[0]
        extra: dict[str, Any] = {"distortion": folder}
        if std is not None:
            extra["dmos_std"] = float(std[i])
        rows.append(_Row(where=f"entry {i + 1}", name=name, image=index.find(name), raw=dmos[i],
                         ref_name=ref, ref=index.find(f"{LIVE_REF_DIR}/{ref}"), extra=extra))
    return label, rows


def _live_refs_from_info(root: Path, names: list[str]) -> list[str]:
    """Reference names from each folder's info.txt ("refname distname parameter" per line)."""
    by_name: dict[str, str] = {}
    for folder, _ in LIVE_DISTORTIONS:
        info = _exists_ci(root, f"{folder}/info.txt")
        if info is None:
            raise DatasetError(f"{root}: neither refnames_all.mat nor {folder}/info.txt found; "
                               "one of them is needed to know each image's reference.")
        for line in info.read_text(errors="replace").splitlines():
            tokens = line.split()
            if len(tokens) >= 2:
                by_name[f"{folder}/{tokens[1]}".lower()] = tokens[0]
    return [by_name.get(n.lower(), "") for n in names]


def _read_csiq(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = _label_path(root, csv_arg, CSIQ_LABEL_FILES)
    if label.suffix.lower() in (".xlsx", ".xlsm"):
        header, table = _read_xlsx(label)
    else:
        header, table = _read_csv(label)
    col_img = _column(label, header, ("image",))
    col_type = _column(label, header, ("dst_type",))
    col_lev = _column(label, header, ("dst_lev",))
    col_dmos = _column(label, header, ("dmos",))
    col_std = _column(label, header, ("dmos_std",), required=False)
    index = _FileIndex(root)
    rows, unknown = [], []
    for line, row in table:
        ref = _cell_text(row.get(col_img))
        kind = _cell_text(row.get(col_type)).lower()
        folder = CSIQ_TYPES.get(kind)
        level = _cell_text(row.get(col_lev))
        if folder is None:
            unknown.append(f"'{kind}' (row {line})")
            continue
        name = f"dst_imgs/{folder}/{ref}.{folder}.{level}.png"
        extra = {"distortion": folder, "level": _convert_extra(level)}
        if col_std:
            extra["dmos_std"] = _convert_extra(row.get(col_std))
        rows.append(_Row(where=f"row {line}", name=name, image=index.find(name), raw=row.get(col_dmos),
                         ref_name=f"{ref}.png", ref=index.find(f"src_imgs/{ref}.png"), extra=extra))
    if unknown:
        raise DatasetError(f"{label}: unknown distortion type {_listing(unknown)}; known: "
                           f"{', '.join(sorted(set(CSIQ_TYPES)))}.")
    return label, rows


def _read_xlsx(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Header and rows of the CSIQ sheet; the header is the first row holding 'image' and 'dmos'."""
    try:
        import openpyxl
    except ImportError as err:
        raise DatasetError(f"reading {path} needs openpyxl (pip install openpyxl), or save its sheet "
                           f"'{CSIQ_SHEET}' as csiq.DMOS.csv next to it.") from err
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises several unrelated types for broken files
        raise DatasetError(f"cannot read {path} as an Excel workbook: {err}") from err
    sheets = [book[CSIQ_SHEET]] if CSIQ_SHEET in book.sheetnames else list(book.worksheets)
    for sheet in sheets:
        all_rows = list(sheet.iter_rows(values_only=True))
        for h, cells in enumerate(all_rows[:CSIQ_HEADER_SCAN_ROWS]):
            names = [str(c).strip() if c is not None else "" for c in cells]
            lowered = [n.lower() for n in names]
            if "image" in lowered and "dmos" in lowered:
                table = []
                for offset, values in enumerate(all_rows[h + 1:], start=h + 2):
                    if all(v is None or str(v).strip() == "" for v in values):
                        continue
                    table.append((offset, {n: v for n, v in zip(names, values) if n}))
                book.close()
                return [n for n in names if n], table
    book.close()
    raise DatasetError(f"{path}: no sheet with an 'image' and a 'dmos' column header "
                       f"(expected sheet '{CSIQ_SHEET}').")


def _read_tid2013(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = _label_path(root, csv_arg, ("mos_with_names.txt",))
    index = _FileIndex(root)
    rows = []
    for line, text in enumerate(label.read_text(errors="replace").splitlines(), start=1):
        tokens = text.split()
        if not tokens:
            continue
        score, name = (tokens[0], tokens[1]) if len(tokens) >= 2 else (None, tokens[0])
        ref = PurePosixPath(name).stem.split("_")[0] + ".bmp"
        fields = _name_tokens(name)
        extra = {"distortion": fields[0] if fields else None, "level": fields[1] if len(fields) > 1 else None}
        rows.append(_Row(where=f"line {line}", name=name, image=index.find(f"distorted_images/{name}"),
                         raw=score, ref_name=ref, ref=index.find(f"reference_images/{ref}"), extra=extra))
    return label, rows


def _read_kadid10k(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = _label_path(root, csv_arg, ("dmos.csv",))
    header, table = _read_csv(label)
    col_img = _column(label, header, ("dist_img",))
    col_ref = _column(label, header, ("ref_img",))
    col_dmos = _column(label, header, ("dmos",))
    col_var = _column(label, header, ("var",), required=False)
    index = _FileIndex(root)
    rows = []
    for line, row in table:
        name, ref = (row.get(col_img) or "").strip(), (row.get(col_ref) or "").strip()
        fields = _name_tokens(name)
        extra = {"distortion": fields[0] if fields else None, "level": fields[1] if len(fields) > 1 else None}
        if col_var:
            extra["var"] = _convert_extra(row.get(col_var))
        rows.append(_Row(where=f"line {line}", name=name,
                         image=index.find(f"images/{name}", f"distorted_images/{name}"), raw=row.get(col_dmos),
                         ref_name=ref, ref=index.find(f"images/{ref}", f"reference_images/{ref}"), extra=extra))
    return label, rows


def _read_koniq10k(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = _label_path(root, csv_arg, KONIQ_LABEL_FILES)
    header, table = _read_csv(label)
    col_img = _column(label, header, ("image_name",))
    col_score = _column(label, header, KONIQ_SCORE_COLUMNS)
    kept = [c for c in header if c in ("SD", "set") or (c == "MOS" and c != col_score)]
    index = _FileIndex(root)
    rows = []
    for line, row in table:
        name = (row.get(col_img) or "").strip()
        extra = {("MOS_1to5" if c == "MOS" else c): _convert_extra(row.get(c)) for c in kept}
        candidates = [f"{d}/{name}" if d else name for d in KONIQ_IMAGE_DIRS]
        rows.append(_Row(where=f"line {line}", name=name, image=index.find(*candidates),
                         raw=row.get(col_score), extra=extra))
    return label, rows


def _read_clive(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    images_mat, mos_mat = _exists_ci(root, "Data/AllImages_release.mat"), _exists_ci(root, "Data/AllMOS_release.mat")
    names = _mat_strings(_load_mat(images_mat, "AllImages_release"))
    mos = _load_mat(mos_mat, "AllMOS_release").ravel()
    if len(names) != mos.size:
        raise DatasetError(f"{images_mat} lists {len(names)} images but {mos_mat} has {mos.size} scores.")
    std_mat = _exists_ci(root, "Data/AllStdDev_release.mat")
    std = _load_mat(std_mat, "AllStdDev_release").ravel() if std_mat is not None else None
    index = _FileIndex(root)
    rows = []
    for i in range(CLIVE_TRAINING_IMAGES, len(names)):
        extra = {"std": float(std[i])} if std is not None and std.size == mos.size else {}
        rows.append(_Row(where=f"entry {i + 1}", name=names[i], image=index.find(f"Images/{names[i]}"),
                         raw=mos[i], extra=extra))
    return mos_mat, rows


def _read_pipal(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label_dir = _exists_ci(root, "Train_Label")
    index = _FileIndex(root)
    rows = []
    for label in sorted(label_dir.glob("*.txt")):
        ref = label.stem + ".bmp"
        ref_path = index.find(f"Train_Ref/{ref}")
        for line, text in enumerate(label.read_text(errors="replace").splitlines(), start=1):
            if not text.strip():
                continue
            name, _, score = text.partition(",")
            name = name.strip()
            fields = _name_tokens(name)
            extra = {"distortion": fields[0] if fields else None, "level": fields[1] if len(fields) > 1 else None}
            rows.append(_Row(where=f"{label.name} line {line}", name=name, image=index.find(f"Train_Dis/{name}"),
                             raw=score or None, ref_name=ref, ref=ref_path, extra=extra))
    return label_dir, rows


def escapes_folder(path: str) -> bool:
    """True for an absolute path, a drive letter or a '..' step: a relative path (a CSV entry, a zip
    member) that could point outside the folder it is meant to be inside."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    return path.startswith(("/", "\\")) or ".." in parts or bool(parts and ":" in parts[0])


def _read_generic(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = _label_path(root, csv_arg, (GENERIC_CSV,))
    header, table = _read_csv(label)
    col_img = _column(label, header, GENERIC_IMAGE_COLUMNS)
    col_mos = _column(label, header, GENERIC_MOS_COLUMNS)
    col_ref = _column(label, header, GENERIC_REF_COLUMNS, required=False)
    col_group = _column(label, header, GENERIC_GROUP_COLUMNS, required=False)
    extras = [c for c in header if c not in (col_img, col_mos, col_ref, col_group)]
    rows = []
    for line, row in table:
        name = (row.get(col_img) or "").strip()
        ref_name = (row.get(col_ref) or "").strip() if col_ref else ""
        for path in (name, ref_name):
            if path and escapes_folder(path):
                raise DatasetError(f"{label} line {line}: '{path}' is not inside the dataset folder; image and "
                                   f"ref paths are relative to {root}, without '..'.")
        ref = None
        if ref_name:
            ref = next((p for p in (root / ref_name, root / GENERIC_REF_DIR / ref_name) if p.is_file()), None)
        group = (row.get(col_group) or "").strip() if col_group else ""
        rows.append(_Row(where=f"line {line}", name=name or f"<empty at line {line}>",
                         image=(root / name) if name else None, raw=row.get(col_mos),
                         ref_name=ref_name or None, ref=ref, group=group or None,
                         extra={c: _convert_extra(row.get(c)) for c in extras}))
    return label, rows


_READERS: dict[str, Callable[[Path, str | None], tuple[Path, list[_Row]]]] = {
    "live": _read_live, "csiq": _read_csiq, "tid2013": _read_tid2013, "kadid10k": _read_kadid10k,
    "koniq10k": _read_koniq10k, "clive": _read_clive, "pipal": _read_pipal, "generic": _read_generic,
}
_LAYOUTS: dict[str, _Layout] = {
    "live": _Layout(((LIVE_REF_DIR,), ("dmos_realigned.mat", "dmos.mat"))
                    + tuple((d,) for d, _ in LIVE_DISTORTIONS),
                    "jp2k/, jpeg/, wn/, gblur/, fastfading/ holding img1.bmp ... and refimgs/"),
    "csiq": _Layout((("src_imgs",), ("dst_imgs", "dst_imgs_all"), CSIQ_LABEL_FILES),
                    "dst_imgs/<type>/<name>.<TYPE>.<level>.png and src_imgs/<name>.png", CSIQ_LABEL_FILES),
    "tid2013": _Layout((("mos_with_names.txt",), ("distorted_images",), ("reference_images",)),
                       "distorted_images/iXX_YY_L.bmp and reference_images/IXX.BMP", ("mos_with_names.txt",)),
    "kadid10k": _Layout((("dmos.csv",), ("images", "distorted_images")),
                        "images/Ixx_yy_zz.png with the references images/Ixx.png", ("dmos.csv",)),
    "koniq10k": _Layout((KONIQ_LABEL_FILES,), "1024x768/<image_name> (or 512x384/)", KONIQ_LABEL_FILES),
    "clive": _Layout((("Data/AllImages_release.mat",), ("Data/AllMOS_release.mat",), ("Images",)),
                     "Images/<name> as listed in Data/AllImages_release.mat"),
    "pipal": _Layout((("Train_Label",), ("Train_Dis",), ("Train_Ref",)),
                     "Train_Dis/<name> and Train_Ref/<ref>.bmp"),
    "generic": _Layout((), "paths relative to the CSV's dataset folder"),
}


def layout_help(fmt: str) -> str:
    """One line on what a format's folder holds: its marker files / folders and where the images are."""
    layout = _LAYOUTS[fmt]
    if fmt == "generic":
        return (f"{GENERIC_CSV} with columns {GENERIC_IMAGE_COLUMNS[0]}, {GENERIC_MOS_COLUMNS[0]} (higher = better) "
                f"and optionally {GENERIC_REF_COLUMNS[0]} (pristine reference) and {GENERIC_GROUP_COLUMNS[0]} "
                f"(kept on one side of the split); {layout.images_hint}")
    markers = ", ".join(" or ".join(alts) for alts in layout.markers)
    return f"{markers}; {layout.images_hint}"


# Formats whose label file `csv` may replace (the others read fixed .mat / folder files).
CSV_FORMATS = ("csiq", "tid2013", "kadid10k", "koniq10k", "generic")


def load_dataset(root: str | Path, format: str, csv: str | None = None,
                 lower_is_better: bool | None = None) -> Dataset:
    """Read the dataset in folder `root` laid out as `format` (one of FORMATS).

    csv: label file to read instead of the layout's default (generic: the CSV, default
      `root/meta.csv`; csiq / tid2013 / kadid10k / koniq10k: their label file); a path as given or
      relative to `root`. lower_is_better: direction of the raw score; None = the release's own
      (DMOS for LIVE and CSIQ, False for generic).
    Raises DatasetError with what is wrong and what to do.
    """
    fmt = str(format).lower().replace("-", "").replace("_", "")
    if fmt not in _READERS:
        raise DatasetError(f"unknown dataset format '{format}'; choose one of {', '.join(FORMATS)}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} not found (or not a folder).")
    root = root.resolve()
    if csv and fmt not in CSV_FORMATS:
        raise DatasetError(f"--csv does not apply to {DISPLAY_NAMES[fmt]} (its labels are fixed files); "
                           f"it applies to {', '.join(CSV_FORMATS)}.")
    if fmt == "generic":
        if not csv and not (root / GENERIC_CSV).is_file():
            entries = sorted(p.name for p in root.iterdir())
            guess = detect_format(root)
            hint = f" It looks like a {DISPLAY_NAMES[guess]} folder: use --format {guess}." if guess else ""
            raise DatasetError(f"{root} has no {GENERIC_CSV}: the generic layout needs a CSV with columns "
                               f"image, mos[, ref, group] (pass another with --csv). Found: "
                               f"{_listing(entries, MAX_FOUND_LISTED) or 'nothing'}.{hint}")
    else:
        _check_layout(root, fmt, csv_given=bool(csv))
    label, rows = _READERS[fmt](root, csv)
    direction = LOWER_IS_BETTER[fmt] if lower_is_better is None else bool(lower_is_better)
    name = root.name if fmt == "generic" else None
    return _build(fmt, root, label, rows, direction, _LAYOUTS[fmt].images_hint, name=name)
