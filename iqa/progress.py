"""Progress bars that read well in a terminal and in a log file.

On a terminal `progress_bar` is tqdm's bar. Written to a file or a pipe (a run under `nohup`, CI), tqdm's
carriage returns would pile every update of an hour-long run into one line; there it writes one plain
line at most every `LOG_INTERVAL_S` seconds, and one at the end.
"""
from __future__ import annotations

import sys
from typing import IO

from tqdm import tqdm

LOG_INTERVAL_S = 60.0


class _Lines:
    """A stream for tqdm that turns each refresh into a line of its own."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress_bar(iterable=None, *, file: IO[str] | None = None, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs) on stderr (or `file`): a bar on a terminal, timed lines elsewhere."""
    stream = file or sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    kwargs.setdefault("maxinterval", kwargs["mininterval"])  # else tqdm's monitor redraws a slow bar every 10 s
    return tqdm(iterable, file=_Lines(stream), ascii=True, **kwargs)
