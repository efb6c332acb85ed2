"""Progress bars: unchanged in a terminal, a line at most every 30 s in a log file."""

from __future__ import annotations

import io

from kdkit.progress import LOG_INTERVAL_S, bar_options, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_in_a_log_the_bar_writes_whole_lines_not_one_redraw_per_step():
    log = io.StringIO()
    for _ in progress(range(2000), file=log, desc="work"):
        pass
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    # the first draw and the final one; a redraw per step (tqdm's 0.1 s default) would be many more in a slow CI
    assert 1 <= len(lines) <= 3, lines
    assert lines[-1].startswith("work: 100%") and "2000/2000" in lines[-1]


def test_in_a_terminal_the_options_are_tqdms_own():
    terminal = _Terminal()
    assert bar_options(file=terminal, desc="x") == {"file": terminal, "desc": "x"}
    options = bar_options(file=io.StringIO())
    assert options["mininterval"] == LOG_INTERVAL_S


def test_a_caller_interval_wins():
    assert bar_options(file=io.StringIO(), mininterval=1.0)["mininterval"] == 1.0

