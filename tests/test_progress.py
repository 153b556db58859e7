"""iqa/progress.py: a bar on a terminal, plain timed lines in a log."""

import io

from iqa.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_lines_without_carriage_returns():
    log = io.StringIO()
    for _ in progress_bar(range(5), file=log, desc="work", mininterval=0):
        pass
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) >= 2
    assert lines[0].startswith("work:") and "0/5" in lines[0] and "5/5" in lines[-1]


def test_a_log_is_written_at_most_once_a_minute_between_start_and_end():
    log = io.StringIO()
    for _ in progress_bar(range(1000), file=log, desc="work"):
        pass
    assert len(log.getvalue().splitlines()) == 2  # the start and the end
    bar = progress_bar(range(3), file=io.StringIO())
    assert bar.mininterval == bar.maxinterval == LOG_INTERVAL_S  # tqdm's monitor may not redraw it sooner
    bar.close()


def test_a_terminal_gets_the_redrawn_bar():
    term = Terminal()
    for _ in progress_bar(range(3), file=term, desc="work", mininterval=0):
        pass
    assert "\r" in term.getvalue()
