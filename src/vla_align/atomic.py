"""Atomic file and directory writes: a crash never leaves a half-written file that reads as whole.

Files and folders get the modes the user's umask gives (0666 / 0777 minus the umask), as ``open``
and ``mkdir`` would, although they are made through ``mkstemp`` / ``mkdtemp`` (0600 / 0700)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import safety


def umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            with contextlib.suppress(OSError):  # file systems without modes keep their own
                os.fchmod(handle.fileno(), 0o666 & ~umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str], overwrite: bool = False, kind: safety.Kind = "dataset"
) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename.

    If the block raises (or the process dies) the target is untouched; a leftover
    ``.<name>.partial-<pid>@<host>-*`` directory is never mistaken for a dataset and is removed by the
    next write to the same ``path`` once its process is gone. ``overwrite`` replaces only a vla-align
    ``kind`` (or an empty folder), never the working directory or a folder above it
    (:func:`vla_align.safety.check_replaceable`); the old one is moved aside and deleted after the swap.
    """
    path = Path(path)
    safety.clean_stale(path)  # first: puts back a copy an interrupted swap had moved aside
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    if overwrite:
        safety.check_replaceable(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{safety.owner_tag()}-", dir=path.parent))
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o777 & ~umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists() or path.is_symlink():
        trash = safety.move_aside(path)
        os.replace(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, path)
