"""Reading label files and finding files in dataset folders: CSV (any of , ; tab), Excel, MATLAB
.mat, case-insensitive paths. Every failure is a `DatasetError` saying which file and what to fix."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import numpy as np

MAX_LISTED = 5  # names / rows quoted in an error message before "and N more"
CSV_DELIMITERS = ",;\t"


class DatasetError(ValueError):
    """A dataset folder or label file that cannot be read; the message says what to fix."""


class FileIndex:
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


def listing(items: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def exists_ci(root: Path, rel: str) -> Path | None:
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


def parse_score(value: Any) -> float | None:
    """A finite float, or None when the value is missing or not a number."""
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float, np.number)) else float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def convert_extra(value: Any) -> Any:
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


def label_path(root: Path, csv_arg: str | None, defaults: Iterable[str]) -> Path:
    """The label file: the user's `csv` (as given, else relative to root) or the first default."""
    if csv_arg:
        for cand in (Path(csv_arg), root / csv_arg):
            if cand.is_file():
                return cand.resolve()
        raise DatasetError(f"label file {csv_arg} not found (looked in the current folder and in {root}).")
    for name in defaults:
        hit = exists_ci(root, name)
        if hit is not None and hit.is_file():
            return hit
    raise DatasetError(f"none of {', '.join(defaults)} found in {root}.")


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
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


def column(path: Path, header: list[str], names: tuple[str, ...], required: bool = True) -> str | None:
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


def load_mat(path: Path, key: str) -> np.ndarray:
    import scipy.io  # local: only the .mat readers need it

    try:
        data = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError) as err:
        raise DatasetError(f"cannot read {path} as a MATLAB file: {err}") from err
    if key not in data:
        keys = [k for k in data if not k.startswith("__")]
        raise DatasetError(f"{path} has no variable '{key}'; variables found: {', '.join(keys) or 'none'}.")
    return np.asarray(data[key])


def mat_strings(arr: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (any shape) -> flat list of str."""
    out = []
    for item in arr.ravel():
        flat = np.asarray(item).ravel()
        out.append(str(flat[0]).strip() if flat.size else "")
    return out


def cell_text(value: Any) -> str:
    """A label cell as text; whole numbers from spreadsheets (1600.0) lose their '.0'."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


def name_tokens(name: str) -> list[int | str]:
    """'I01_02_3.png' -> [1, 2, 3]: the distortion / level fields encoded in a file name."""
    return [convert_extra(t) for t in PurePosixPath(name).stem.split("_")[1:]]


def read_xlsx(path: Path, sheet_name: str, header_scan_rows: int) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Header and rows of the CSIQ sheet; the header is the first row holding 'image' and 'dmos'."""
    try:
        import openpyxl
    except ImportError as err:
        raise DatasetError(f"reading {path} needs openpyxl (pip install openpyxl), or save its sheet "
                           f"'{sheet_name}' as csiq.DMOS.csv next to it.") from err
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises several unrelated types for broken files
        raise DatasetError(f"cannot read {path} as an Excel workbook: {err}") from err
    sheets = [book[sheet_name]] if sheet_name in book.sheetnames else list(book.worksheets)
    for sheet in sheets:
        all_rows = list(sheet.iter_rows(values_only=True))
        for h, cells in enumerate(all_rows[:header_scan_rows]):
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
                       f"(expected sheet '{sheet_name}').")
