"""The progress bar of long commands: a rich bar on stderr, on a terminal only.

:class:`StageBar` is the library's progress callback (``progress(fraction, what)``,
:mod:`onnx_sk.runtime.progress`) drawn as one bar: its label is the current stage (``load``,
each pass, ``write``) and step (the conv being fitted, the shape being timed), its fraction the
step's within the stage, with the time elapsed. It appears only once the run has taken
``ONNX_SK_PROGRESS_DELAY`` seconds (1 by default), so short runs print nothing, and it is removed
when the run ends (``transient``), leaving stdout's report as it was. Not on a terminal (a pipe,
a file, CI) or with ``-q``, :func:`stage_bar` gives no bar at all.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

#: seconds a run takes before the bar appears
DEFAULT_DELAY = 1.0


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get("ONNX_SK_PROGRESS_DELAY", DEFAULT_DELAY)))
    except ValueError:
        return DEFAULT_DELAY


class StageBar:
    """A progress callback that shows a bar on ``console`` once ``delay`` seconds have passed."""

    def __init__(self, console: Console, delay: float) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), console=console, transient=True,
        )  # fmt: skip
        self._task = self._progress.add_task("start", total=1.0)
        self._lock = threading.Lock()
        self._shown = self._closed = False
        self._timer = threading.Timer(delay, self._show)
        self._timer.daemon = True
        self._timer.start()

    def __call__(self, fraction: float, what: str) -> None:
        self._progress.update(self._task, completed=min(max(fraction, 0.0), 1.0), description=what)

    def _show(self) -> None:
        with self._lock:
            if not self._closed:
                self._progress.start()
                self._shown = True

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            if self._shown:
                self._progress.stop()


@contextlib.contextmanager
def stage_bar(quiet: bool = False) -> Iterator[StageBar | None]:
    """A :class:`StageBar` on stderr when stderr is a terminal and not ``quiet``, else None."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    bar = StageBar(console, _delay())
    try:
        yield bar
    finally:
        bar.close()
