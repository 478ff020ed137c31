"""Progress for long work: a rich bar on a terminal, one plain line per 10 % in a log file (CI,
``make demo > log``), nothing when ``VLA_ALIGN_QUIET=1``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def quiet() -> bool:
    return os.environ.get("VLA_ALIGN_QUIET", "") not in ("", "0")


class Bar:
    """``advance(n, info=...)`` and ``set(completed)``; draws with rich or logs plain lines."""

    def __init__(self, description: str, total: int, progress: Progress | None) -> None:
        self.description, self.total, self.progress = description, max(1, total), progress
        self.done, self.info, self.t0 = 0, "", time.perf_counter()
        self._next_line = 0.1
        self.silent = False

    def set(self, completed: int) -> None:
        self.done = completed
        if self.progress is not None:
            self.progress.update(self.progress.task_ids[0], completed=completed)
        self._next_line = (int(10 * completed / self.total) + 1) / 10

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        if info is not None:
            self.info = info
        if self.progress is not None:
            self.progress.update(self.progress.task_ids[0], advance=n, info=self.info)
        elif not (self.silent or quiet()) and self.done / self.total >= self._next_line - 1e-9:
            elapsed = time.perf_counter() - self.t0
            console.print(
                f"{self.description}: {self.done}/{self.total} ({100 * self.done / self.total:.0f} %) "
                f"{elapsed:.0f} s  {self.info}",
                highlight=False,
            )
            self._next_line = (int(10 * self.done / self.total) + 1) / 10


@contextmanager
def progress_bar(description: str, total: int, silent: bool = False) -> Iterator[Bar]:
    """Progress on stderr for ``total`` units of work (nothing at all when ``silent``)."""
    if silent or quiet() or not console.is_terminal:
        bar = Bar(description, total, None)
        bar.silent = silent
        yield bar
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    )
    with progress:
        progress.add_task(description, total=total, info="")
        yield Bar(description, total, progress)
