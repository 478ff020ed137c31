"""One bad input as data: how to build it, the command line that meets it, what the error must say."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CATEGORIES = ("dataset", "config", "run", "checkpoint", "cli", "filesystem")


@dataclass
class Ctx:
    """Where one case builds its inputs.

    ``root`` is the case directory (everything under it is snapshotted before the command runs);
    ``pristine`` holds the fixtures (datasets and trained runs) built once, under the same names they
    get here, so that the absolute dataset paths recorded in a run's config.json stay true in a copy.
    ``values`` fills the ``{name}`` placeholders of the argv.
    """

    root: Path
    pristine: Path
    values: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values.update(root=str(self.root), cwd=str(self.root / "cwd"), out=str(self.root / "out"))

    def use(self, *names: str) -> Path:
        """Copy fixtures into the case directory (a run brings the dataset it was trained on); returns the
        path of the first one and sets the placeholders ``{name}``."""
        for name in names:
            for dep in (*FIXTURE_DEPENDS.get(name, ()), name):
                dest = self.root / dep
                if not dest.exists():
                    shutil.copytree(self.pristine / dep, dest, symlinks=True)
                self.values[dep] = str(dest)
        return self.root / names[0]

    def path(self, rel: str) -> Path:
        return self.root / rel


# The fixtures (built by ``catalogue.build_fixtures``): name -> what a copy of it needs beside it.
FIXTURE_DEPENDS: dict[str, tuple[str, ...]] = {"run": ("data",), "polrun": ("baby",)}


def no_setup(ctx: Ctx) -> None:
    del ctx


@dataclass(frozen=True)
class Case:
    """A bad input. The expected outcome is always the same: exit code 2, no traceback, exactly one line
    on stderr containing every keyword (case-insensitive; ``"a|b"`` accepts either), and every file
    that existed before the command byte-identical afterwards (``recovers``: or a repair that says so
    and keeps a backup)."""

    id: str
    category: str
    argv: tuple[str, ...]  # for vla_align.cli.main; "{name}" is replaced by Ctx.values[name]
    keywords: tuple[str, ...]
    setup: Callable[[Ctx], None] = no_setup
    why: str = ""  # what is wrong with the input (and the issue finding it reproduces)
    subprocess: bool = False  # run as `python -m vla_align` (memory limit, process-wide effects)
    memory_gb: float = 0.0  # address-space limit of the subprocess (0 = none)
    cwd: str = "cwd"  # working directory, relative to the case directory
    absent: tuple[str, ...] = ()  # paths (relative to the case directory) that must not exist afterwards
    # Exit 0 is clean too when the command repaired the damage, said so on stderr (a line holding every
    # keyword), and the bytes of every file it replaced survive elsewhere in the case directory (a backup).
    recovers: bool = False
    may_change: tuple[str, ...] = ()  # files (relative to the case directory) a command that accepts the input rewrites
    sealed: tuple[str, ...] = ()  # folders (relative to the case directory) no new file may appear in (a dataset read)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"{self.id}: unknown category {self.category!r}")
        if not self.keywords:
            raise ValueError(f"{self.id}: a case needs at least one keyword")

    def command(self, ctx: Ctx) -> list[str]:
        return [fill(arg, ctx) for arg in self.argv]

    def expected(self, ctx: Ctx) -> list[list[str]]:
        """The keywords with placeholders filled, each as its list of accepted alternatives."""
        return [fill(k, ctx).split("|") for k in self.keywords]


def fill(text: str, ctx: Ctx) -> str:
    for name, value in ctx.values.items():
        text = text.replace("{" + name + "}", value)
    return text
