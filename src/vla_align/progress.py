"""Progress bars for long work (rich), quiet when ``VLA_ALIGN_QUIET=1``."""

from __future__ import annotations

import os
import sys
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


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Progress]:
    """A progress bar on stderr; use ``bar.update(bar.task_ids[0], advance=n, info=...)``."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=quiet(),
        # A non-terminal (CI log) gets a final line instead of hundreds of redraws.
        auto_refresh=sys.stderr.isatty(),
    )
    with bar:
        bar.add_task(description, total=total, info="")
        yield bar
