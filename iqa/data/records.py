"""What a dataset reader returns: rated images (`Record`) and the loaded dataset (`Dataset`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


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
