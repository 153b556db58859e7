"""The pristine photos a synthetic set or a training stream is made from: a folder's image files, each
with a unique, filesystem-safe name that its crops and series are called after."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class SourceError(ValueError):
    """A folder of pristine photos that cannot be used; the message says what to change."""


@dataclass
class Source:
    """A pristine photo and the unique name its crops are called after."""

    path: Path
    name: str

    def ref_names(self, crops: int) -> list[str]:
        return [f"{self.name}_c{k}" for k in range(crops)]


def safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "image"


def find_sources(pristine: Path) -> list[Source]:
    """Image files in `pristine` (a folder, not recursive, or one file), sorted, with unique names."""
    if pristine.is_file():
        files = [pristine]
    elif pristine.is_dir():
        files = sorted(p for p in pristine.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        raise SourceError(f"--pristine {pristine}: no such file or folder")
    if not files:
        raise SourceError(f"--pristine {pristine}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    sources, seen = [], set()
    for path in files:
        base = name = safe_name(path.stem)
        k = 2
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        sources.append(Source(path=path, name=name))
    return sources
