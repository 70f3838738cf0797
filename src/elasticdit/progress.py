"""Progress on long work: a rich bar on stderr when it is a terminal, silence otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    """`stage(text)` names what runs now; `advance()` moves the bar one unit."""

    def __init__(self, progress: Progress | None, total: int):
        self._progress = progress
        self._task = progress.add_task("starting", total=total) if progress else None

    def stage(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)


@contextmanager
def reporter(total: int, enabled: bool | None = None) -> Iterator[Reporter]:
    enabled = (sys.stdout.isatty() and sys.stderr.isatty()) if enabled is None else enabled
    if not enabled:
        yield Reporter(None, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield Reporter(progress, total)
