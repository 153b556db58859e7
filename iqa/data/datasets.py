"""Readers for public IQA datasets in their standard layouts, and for a generic CSV layout.

Every reader turns a dataset folder into a list of `Record`s: image path, optional reference
path, the raw human score, the score normalised to [0, 1] with higher = better (min-max over the
dataset, DMOS inverted), and the `group` that content-disjoint splits keep together (the
reference image for synthetic distortions, the image itself for authentic ones). Layouts are the
releases' own (listed in `_LAYOUTS`); file names are matched case-insensitively because the
releases mix cases (TID2013 ships `I01.BMP` next to `i25.bmp`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from iqa.data.label_files import (DatasetError, FileIndex, cell_text, column, convert_extra, exists_ci, label_path,
                                  listing, load_mat, mat_strings, name_tokens, parse_score, read_csv, read_xlsx)
from iqa.data.records import Dataset, Record

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
        if all(any(exists_ci(root, alt) for alt in alts) for alts in _LAYOUTS[fmt].markers):
            return fmt
    return None


def _check_layout(root: Path, fmt: str, csv_given: bool = False) -> None:
    layout = _LAYOUTS[fmt]
    missing = [" or ".join(alts) for alts in layout.markers
               if not (csv_given and alts == layout.label) and not any(exists_ci(root, alt) for alt in alts)]
    if not missing:
        return
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    found = listing(entries, MAX_FOUND_LISTED) if entries else "nothing (empty folder)"
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


def _build(fmt: str, root: Path, label_file: Path | None, rows: list[_Row],
           lower_is_better: bool, images_hint: str, name: str | None = None) -> Dataset:
    """Validate parsed rows (scores, duplicates, files) and normalise the scores."""
    source = str(label_file) if label_file else str(root)
    if not rows:
        raise DatasetError(f"{source}: no images listed; the dataset is empty.")

    bad = [r.where for r in rows if parse_score(r.raw) is None]
    if bad:
        raise DatasetError(f"{source}: missing or non-numeric score at {listing(bad)}. "
                           "Fix or remove these entries.")

    seen: dict[str, list[_Row]] = {}
    for r in rows:
        seen.setdefault((r.image.as_posix() if r.image else r.name).lower(), []).append(r)
    dups = [f"{same[0].name} ({', '.join(x.where for x in same)})" for same in seen.values() if len(same) > 1]
    if dups:
        raise DatasetError(f"{source}: {len(dups)} image(s) listed more than once: {listing(dups)}. "
                           "Keep one row per image.")

    missing = [r.name for r in rows if r.image is None or not r.image.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(rows)} image file(s) listed in {source} are missing "
                           f"under {root}: {listing(missing)}. Expected {images_hint}; check the "
                           "download is complete and unpacked there.")
    missing_refs = sorted({(r.ref_name or "?").lower(): r.ref_name or "?" for r in rows
                           if r.ref_name is not None and (r.ref is None or not r.ref.is_file())}.values())
    if missing_refs:
        raise DatasetError(f"{len(missing_refs)} reference image(s) named in {source} are missing "
                           f"under {root}: {listing(missing_refs)}.")

    raw = np.array([parse_score(r.raw) for r in rows], dtype=np.float64)
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


# ---------------------------------------------------------------------------------------------
# Readers: each returns (label file, rows)


def _read_live(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    index = FileIndex(root)
    realigned = exists_ci(root, "dmos_realigned.mat")
    if realigned is not None:  # LIVE's corrected scores; falls back to the original dmos.mat
        label, key = realigned, "dmos_new"
    else:
        label, key = exists_ci(root, "dmos.mat"), "dmos"
    dmos = load_mat(label, key).ravel()
    orgs = load_mat(label, "orgs").ravel().astype(bool)
    std = load_mat(label, "dmos_std").ravel() if realigned is not None else None
    expected = sum(n for _, n in LIVE_DISTORTIONS)
    if dmos.size != expected or orgs.size != expected:
        counts = ", ".join(f"{d} {n}" for d, n in LIVE_DISTORTIONS)
        raise DatasetError(f"{label}: '{key}' has {dmos.size} and 'orgs' {orgs.size} entries; LIVE release 2 "
                           f"has {expected} ({counts}).")

    names = [f"{folder}/img{i}.bmp" for folder, count in LIVE_DISTORTIONS for i in range(1, count + 1)]
    refs_mat = exists_ci(root, "refnames_all.mat")
    if refs_mat is not None:
        refnames = mat_strings(load_mat(refs_mat, "refnames_all"))
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
        info = exists_ci(root, f"{folder}/info.txt")
        if info is None:
            raise DatasetError(f"{root}: neither refnames_all.mat nor {folder}/info.txt found; "
                               "one of them is needed to know each image's reference.")
        for line in info.read_text(errors="replace").splitlines():
            tokens = line.split()
            if len(tokens) >= 2:
                by_name[f"{folder}/{tokens[1]}".lower()] = tokens[0]
    return [by_name.get(n.lower(), "") for n in names]


def _read_csiq(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = label_path(root, csv_arg, CSIQ_LABEL_FILES)
    if label.suffix.lower() in (".xlsx", ".xlsm"):
        header, table = read_xlsx(label, CSIQ_SHEET, CSIQ_HEADER_SCAN_ROWS)
    else:
        header, table = read_csv(label)
    col_img = column(label, header, ("image",))
    col_type = column(label, header, ("dst_type",))
    col_lev = column(label, header, ("dst_lev",))
    col_dmos = column(label, header, ("dmos",))
    col_std = column(label, header, ("dmos_std",), required=False)
    index = FileIndex(root)
    rows, unknown = [], []
    for line, row in table:
        ref = cell_text(row.get(col_img))
        kind = cell_text(row.get(col_type)).lower()
        folder = CSIQ_TYPES.get(kind)
        level = cell_text(row.get(col_lev))
        if folder is None:
            unknown.append(f"'{kind}' (row {line})")
            continue
        name = f"dst_imgs/{folder}/{ref}.{folder}.{level}.png"
        extra = {"distortion": folder, "level": convert_extra(level)}
        if col_std:
            extra["dmos_std"] = convert_extra(row.get(col_std))
        rows.append(_Row(where=f"row {line}", name=name, image=index.find(name), raw=row.get(col_dmos),
                         ref_name=f"{ref}.png", ref=index.find(f"src_imgs/{ref}.png"), extra=extra))
    if unknown:
        raise DatasetError(f"{label}: unknown distortion type {listing(unknown)}; known: "
                           f"{', '.join(sorted(set(CSIQ_TYPES)))}.")
    return label, rows


def _read_tid2013(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = label_path(root, csv_arg, ("mos_with_names.txt",))
    index = FileIndex(root)
    rows = []
    for line, text in enumerate(label.read_text(errors="replace").splitlines(), start=1):
        tokens = text.split()
        if not tokens:
            continue
        score, name = (tokens[0], tokens[1]) if len(tokens) >= 2 else (None, tokens[0])
        ref = PurePosixPath(name).stem.split("_")[0] + ".bmp"
        fields = name_tokens(name)
        extra = {"distortion": fields[0] if fields else None, "level": fields[1] if len(fields) > 1 else None}
        rows.append(_Row(where=f"line {line}", name=name, image=index.find(f"distorted_images/{name}"),
                         raw=score, ref_name=ref, ref=index.find(f"reference_images/{ref}"), extra=extra))
    return label, rows


def _read_kadid10k(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = label_path(root, csv_arg, ("dmos.csv",))
    header, table = read_csv(label)
    col_img = column(label, header, ("dist_img",))
    col_ref = column(label, header, ("ref_img",))
    col_dmos = column(label, header, ("dmos",))
    col_var = column(label, header, ("var",), required=False)
    index = FileIndex(root)
    rows = []
    for line, row in table:
        name, ref = (row.get(col_img) or "").strip(), (row.get(col_ref) or "").strip()
        fields = name_tokens(name)
        extra = {"distortion": fields[0] if fields else None, "level": fields[1] if len(fields) > 1 else None}
        if col_var:
            extra["var"] = convert_extra(row.get(col_var))
        rows.append(_Row(where=f"line {line}", name=name,
                         image=index.find(f"images/{name}", f"distorted_images/{name}"), raw=row.get(col_dmos),
                         ref_name=ref, ref=index.find(f"images/{ref}", f"reference_images/{ref}"), extra=extra))
    return label, rows


def _read_koniq10k(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label = label_path(root, csv_arg, KONIQ_LABEL_FILES)
    header, table = read_csv(label)
    col_img = column(label, header, ("image_name",))
    col_score = column(label, header, KONIQ_SCORE_COLUMNS)
    kept = [c for c in header if c in ("SD", "set") or (c == "MOS" and c != col_score)]
    index = FileIndex(root)
    rows = []
    for line, row in table:
        name = (row.get(col_img) or "").strip()
        extra = {("MOS_1to5" if c == "MOS" else c): convert_extra(row.get(c)) for c in kept}
        candidates = [f"{d}/{name}" if d else name for d in KONIQ_IMAGE_DIRS]
        rows.append(_Row(where=f"line {line}", name=name, image=index.find(*candidates),
                         raw=row.get(col_score), extra=extra))
    return label, rows


def _read_clive(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    images_mat, mos_mat = exists_ci(root, "Data/AllImages_release.mat"), exists_ci(root, "Data/AllMOS_release.mat")
    names = mat_strings(load_mat(images_mat, "AllImages_release"))
    mos = load_mat(mos_mat, "AllMOS_release").ravel()
    if len(names) != mos.size:
        raise DatasetError(f"{images_mat} lists {len(names)} images but {mos_mat} has {mos.size} scores.")
    std_mat = exists_ci(root, "Data/AllStdDev_release.mat")
    std = load_mat(std_mat, "AllStdDev_release").ravel() if std_mat is not None else None
    index = FileIndex(root)
    rows = []
    for i in range(CLIVE_TRAINING_IMAGES, len(names)):
        extra = {"std": float(std[i])} if std is not None and std.size == mos.size else {}
        rows.append(_Row(where=f"entry {i + 1}", name=names[i], image=index.find(f"Images/{names[i]}"),
                         raw=mos[i], extra=extra))
    return mos_mat, rows


def _read_pipal(root: Path, csv_arg: str | None) -> tuple[Path, list[_Row]]:
    label_dir = exists_ci(root, "Train_Label")
    index = FileIndex(root)
    rows = []
    for label in sorted(label_dir.glob("*.txt")):
        ref = label.stem + ".bmp"
        ref_path = index.find(f"Train_Ref/{ref}")
        for line, text in enumerate(label.read_text(errors="replace").splitlines(), start=1):
            if not text.strip():
                continue
            name, _, score = text.partition(",")
            name = name.strip()
            fields = name_tokens(name)
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
    label = label_path(root, csv_arg, (GENERIC_CSV,))
    header, table = read_csv(label)
    col_img = column(label, header, GENERIC_IMAGE_COLUMNS)
    col_mos = column(label, header, GENERIC_MOS_COLUMNS)
    col_ref = column(label, header, GENERIC_REF_COLUMNS, required=False)
    col_group = column(label, header, GENERIC_GROUP_COLUMNS, required=False)
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
                         extra={c: convert_extra(row.get(c)) for c in extras}))
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
                               f"{listing(entries, MAX_FOUND_LISTED) or 'nothing'}.{hint}")
    else:
        _check_layout(root, fmt, csv_given=bool(csv))
    label, rows = _READERS[fmt](root, csv)
    direction = LOWER_IS_BETTER[fmt] if lower_is_better is None else bool(lower_is_better)
    name = root.name if fmt == "generic" else None
    return _build(fmt, root, label, rows, direction, _LAYOUTS[fmt].images_hint, name=name)
