"""Progress bars that read well both in a terminal and in a log file.

In a terminal a bar redraws in place as usual. When standard error is not a terminal (``nohup kdkit compare ... >
log 2>&1``, CI, a job scheduler) tqdm's redraws are carriage returns, so a log file would get one endless line with
an update per step (several per second). There :func:`progress` redraws at most every :data:`LOG_INTERVAL_S`
seconds and each redraw is a line of its own, so ``tail log`` shows where a run is.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def interactive(stream=None) -> bool:
    """Whether ``stream`` (default: standard error, where the bars go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class LineStream:
    """A file-like wrapper that turns tqdm's carriage-return redraws into lines (blank lines dropped)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        lines = (part.rstrip() for part in text.replace("\r", "\n").split("\n"))
        self.stream.write("".join(f"{line}\n" for line in lines if line))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", None)


def bar_options(**kwargs) -> dict:
    """tqdm's keyword arguments for a bar: unchanged in a terminal; for a log, a line at most every
    :data:`LOG_INTERVAL_S` seconds (``mininterval`` and ``file`` given by the caller win)."""
    if interactive(kwargs.get("file")):
        return kwargs
    options = {"mininterval": LOG_INTERVAL_S, **kwargs}
    options["file"] = LineStream(kwargs.get("file") or sys.stderr)
    return options


def progress(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, log-friendly when standard error is not a terminal (see the module)."""
    return tqdm(iterable, **bar_options(**kwargs))
