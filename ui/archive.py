"""Unpacking an uploaded dataset .zip safely.

Refused: members that would land outside the target folder (absolute paths, `..`, drive letters),
symbolic links, more than `MAX_MEMBERS` files, more than `MAX_UNPACKED_BYTES` in all (counted while
writing, not trusted from the header), and members compressed more than `MAX_RATIO` times (zip bombs).
"""
from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 200_000
MAX_UNPACKED_BYTES = 16 * 2**30
MAX_RATIO = 200  # uncompressed / compressed size of one member
COPY_CHUNK = 1 << 20
SKIPPED_PREFIXES = ("__MACOSX/",)  # macOS resource forks


class ArchiveError(ValueError):
    """A zip that is refused; the message says which entry and why."""


def _member_path(info: zipfile.ZipInfo, name: str) -> PurePosixPath:
    raw = info.filename.replace("\\", "/")
    parts = PurePosixPath(raw).parts
    if raw.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
        raise ArchiveError(f"{name}: entry '{info.filename}' points outside the archive folder; refusing to unpack. "
                           "Re-create the zip from the dataset folder itself.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{name}: entry '{info.filename}' is a symbolic link; links are not unpacked. "
                           "Zip the files themselves.")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def safe_extract(zip_path: str | Path, dest: str | Path, *, max_members: int = MAX_MEMBERS,
                 max_bytes: int = MAX_UNPACKED_BYTES, name: str | None = None) -> Path:
    """Unpack `zip_path` into the new folder `dest`; returns the dataset root (the single top folder
    when the zip wraps everything in one). On any refusal nothing is left behind."""
    zip_path, dest = Path(zip_path), Path(dest)
    name = name or zip_path.name
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{name}: not a readable .zip file ({e}). Upload a .zip of the dataset folder.") from None
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with zf:
            members = [m for m in zf.infolist() if not m.filename.startswith(SKIPPED_PREFIXES)]
            if len(members) > max_members:
                raise ArchiveError(f"{name}: {len(members)} entries, more than the {max_members} allowed.")
            planned = [(_member_path(m, name), m) for m in members]  # check every entry before writing any
            written = 0
            for rel, m in planned:
                if not rel.parts:
                    continue
                target = dest.joinpath(*rel.parts)
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if m.compress_size and m.file_size / m.compress_size > MAX_RATIO:
                    raise ArchiveError(f"{name}: entry '{m.filename}' expands {m.file_size / m.compress_size:.0f}x; "
                                       "refusing a possible zip bomb.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, target.open("wb") as out:
                    while chunk := src.read(COPY_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ArchiveError(f"{name}: unpacks to more than {max_bytes / 2**30:.1f} GiB, "
                                               "the limit. Upload a smaller dataset or use a server folder.")
                        out.write(chunk)
    except (ArchiveError, zipfile.BadZipFile, OSError, EOFError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(e, ArchiveError):
            raise
        raise ArchiveError(f"{name}: the zip is damaged ({e}). Re-create it and upload again.") from None
    entries = [p for p in dest.iterdir()]
    if not entries:
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(f"{name}: the zip is empty.")
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
