"""Unpacking an uploaded dataset .zip safely.

Refused: members that would land outside the target folder (absolute paths, `..`, drive letters),
symbolic links, encrypted entries, more than `MAX_MEMBERS` files, more than `MAX_UNPACKED_BYTES` in
all (counted while writing, not trusted from the header), and members compressed more than
`MAX_RATIO` times (zip bombs). Any other failure (damaged data, unknown compression) is an
`ArchiveError` too, and leaves nothing behind.
"""
from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from iqa.data.datasets import escapes_folder

MAX_MEMBERS = 200_000
MAX_UNPACKED_BYTES = 16 * 2**30
MAX_RATIO = 200  # uncompressed / compressed size of one member
COPY_CHUNK = 1 << 20
ENCRYPTED_FLAG = 0x1  # general-purpose bit 0 of a zip entry
SKIPPED_PREFIXES = ("__MACOSX/",)  # macOS resource forks
PARTIAL_SUFFIX = ".partial"  # an unpacking under way (the app handles one Start at a time)


class ArchiveError(ValueError):
    """A zip that is refused; the message says which entry and why."""


def _member_path(info: zipfile.ZipInfo, name: str) -> PurePosixPath:
    if escapes_folder(info.filename):
        raise ArchiveError(f"{name}: entry '{info.filename}' points outside the archive folder; refusing to unpack. "
                           "Re-create the zip from the dataset folder itself.")
    if info.flag_bits & ENCRYPTED_FLAG:
        raise ArchiveError(f"{name}: entry '{info.filename}' is password-protected; encrypted zips are not "
                           "supported. Zip the dataset without a password.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{name}: entry '{info.filename}' is a symbolic link; links are not unpacked. "
                           "Zip the files themselves.")
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def safe_extract(zip_path: str | Path, dest: str | Path, *, max_members: int = MAX_MEMBERS,
                 max_bytes: int = MAX_UNPACKED_BYTES, name: str | None = None) -> Path:
    """Unpack `zip_path` into the new folder `dest`; returns the dataset root (the single top folder
    when the zip wraps everything in one). On any refusal nothing is left behind."""
    zip_path, dest = Path(zip_path), Path(dest)
    name = name or zip_path.name
    try:
        zf = zipfile.ZipFile(zip_path)
    except Exception as e:  # BadZipFile, OSError, and e.g. UnicodeDecodeError for a mislabelled entry name
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
    except Exception as e:  # zipfile raises many kinds (zlib.error, NotImplementedError, RuntimeError, ...)
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(e, ArchiveError):
            raise
        if isinstance(e, NotImplementedError):
            raise ArchiveError(f"{name}: uses a compression method this app cannot read ({e}). Re-create it "
                               "with plain deflate compression (the default of most zip tools).") from None
        raise ArchiveError(f"{name}: the zip is damaged ({e}). Re-create it and upload again.") from None
    if not any(dest.iterdir()):
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(f"{name}: the zip is empty.")
    return top_folder(dest)


def top_folder(dest: Path) -> Path:
    """The dataset root inside an unpacked folder: its single sub-folder when the zip wrapped everything in one."""
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def unpack_once(zip_path: str | Path, dest: str | Path, name: str | None = None) -> tuple[Path, bool]:
    """(dataset root, whether it was unpacked now): `safe_extract` into `dest` unless a complete earlier
    unpacking is there. It unpacks beside `dest` and renames, so `dest` never holds a partial one."""
    dest = Path(dest)
    if dest.is_dir():
        return top_folder(dest), False
    partial = dest.with_name(f"{dest.name}{PARTIAL_SUFFIX}")
    shutil.rmtree(partial, ignore_errors=True)  # left by an app killed while unpacking
    safe_extract(zip_path, partial, name=name or Path(zip_path).name)
    partial.rename(dest)
    return top_folder(dest), True
