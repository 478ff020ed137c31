"""Deletion and overwrite safety: only a vla-align run or a dataset is ever replaced, never the
working directory, a folder above it, the dataset a command reads or a folder nobody recognises.

A replacement never loses the old copy before the new one exists: the old one is moved aside
(``.<name>.old-<pid>@<host>-*``, one rename) and removed only after the new one succeeded; work in
progress lives in ``.<name>.partial-<pid>@<host>-*``. Such folders left by a killed process are
cleaned up the next time the same target is written (:func:`clean_stale`): a partial one is
removed, a moved-aside one is put back when the target is missing and reported otherwise.

A leaf module: it imports nothing from the package but :mod:`vla_align.errors`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from .errors import UserError

Kind = Literal["run", "dataset", "checkpoint"]
RUN_KEYS = ("preset", "dataset")  # config.json of a run made by `vla-align train`
FINGERPRINT_FILE = "fingerprint.json"
FINGERPRINT_FORMAT = "vla-align/run-fingerprint/1"
# A kept checkpoint RUN/checkpoints/step-NNNNNN/ (train.keep_checkpoints) is recognised by its name and
# the marker file training writes into it, which repeats the step of the name.
SNAPSHOT_FILE = "snapshot.json"
SNAPSHOT_FORMAT = "vla-align/checkpoint-snapshot/1"
SNAPSHOT_NAME = re.compile(r"^step-(?P<step>\d{6,})$")
_MARKERS = {
    "run": f"config.json with {' and '.join(repr(k) for k in RUN_KEYS)}, or {FINGERPRINT_FILE}",
    "dataset": "meta/info.json with 'codebase_version' and 'features'",
    "checkpoint": f"a step-NNNNNN name and {SNAPSHOT_FILE} of format {SNAPSHOT_FORMAT!r}",
}
_STALE = re.compile(r"^(?P<pid>\d+)@(?P<host>[A-Za-z0-9]*)-[A-Za-z0-9_]+$")


def _json_object(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """A run made by vla-align: its config.json has the run keys, or it holds our fingerprint.json."""
    path = Path(path)
    config = _json_object(path / "config.json")
    if config is not None and all(k in config for k in RUN_KEYS):
        return True
    fingerprint = _json_object(path / FINGERPRINT_FILE)
    return fingerprint is not None and fingerprint.get("format") == FINGERPRINT_FORMAT


def is_dataset_dir(path: str | os.PathLike[str]) -> bool:
    """A LeRobot v3 / vla-align dataset: meta/info.json with ``codebase_version`` and ``features``."""
    info = _json_object(Path(path) / "meta" / "info.json")
    return info is not None and "codebase_version" in info and "features" in info


def is_snapshot_dir(path: str | os.PathLike[str]) -> bool:
    """A checkpoint kept by ``train.keep_checkpoints``: a real folder named ``step-NNNNNN`` whose
    ``snapshot.json`` has our format and the same step (a folder a user named so is not one)."""
    path = Path(path)
    match = SNAPSHOT_NAME.match(path.name)
    if match is None or path.is_symlink() or not path.is_dir():
        return False
    marker = _json_object(path / SNAPSHOT_FILE)
    return marker is not None and marker.get("format") == SNAPSHOT_FORMAT and marker.get("step") == int(match["step"])


def _recognised(path: Path, kind: Kind) -> bool:
    return {"run": is_run_dir, "dataset": is_dataset_dir, "checkpoint": is_snapshot_dir}[kind](path)


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def check_protected(path: str | os.PathLike[str], protect: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Refuse ``path`` when it is the working directory, a folder that contains it, the home folder,
    or is / contains / lies inside one of the ``protect`` paths (the datasets the command reads)."""
    target = _resolved(path)
    cwd = _resolved(Path.cwd())
    try:
        home: Path | None = _resolved(Path.home())
    except (RuntimeError, KeyError):  # no home folder known
        home = None
    if cwd == target or cwd.is_relative_to(target) or target == home:
        raise UserError(
            f"{path}: refusing to replace it: it is the working directory, the home folder or a folder "
            "containing the working directory; choose another --out"
        )
    check_outside(path, protect)


def check_outside(path: str | os.PathLike[str], protect: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse ``path`` when it is, contains or lies inside one of the ``protect`` paths."""
    target = _resolved(path)
    for p in protect:
        kept = _resolved(p)
        if kept == target or kept.is_relative_to(target) or target.is_relative_to(kept):
            raise UserError(
                f"{path}: refusing to write there: it is, contains or lies inside the dataset {p} this command "
                "reads; choose another --out"
            )


def check_replaceable(path: str | os.PathLike[str], kind: Kind, protect: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Raise :class:`UserError` unless replacing ``path`` can only lose a vla-align ``kind`` (a run or a
    dataset) or an empty folder, and ``path`` is none of the protected places (:func:`check_protected`)."""
    path = Path(path)
    check_protected(path, protect)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory; refusing to replace it; choose another --out")
    if is_empty_dir(path):
        return
    if not _recognised(path, kind):
        raise UserError(
            f"{path}: not a vla-align {kind} (no {_MARKERS[kind]}); refusing to replace it; "
            "choose another --out (or remove it yourself)"
        )


def owner_tag() -> str:
    """``<pid>@<host>``: who owns a ``.partial-`` / ``.old-`` folder (so a later run can tell a stale one)."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]
    return f"{os.getpid()}@{host}"


def _owner_alive(pid: int, host: str) -> bool:
    if host != re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]:
        return True  # another machine's process: we cannot tell, so it is left alone
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def note(message: str) -> None:
    print(f"vla-align: note: {message}", file=sys.stderr)


def clean_stale(path: str | os.PathLike[str]) -> list[str]:
    """Tidy the ``.partial-`` / ``.old-`` siblings of ``path`` whose owning process is gone: a partial
    folder is removed; a moved-aside old copy is put back when ``path`` is missing and reported
    otherwise; folders of unknown owners are reported. Returns the notes (also printed on stderr)."""
    path = Path(path)
    notes: list[str] = []
    if not path.parent.is_dir():
        return notes
    for entry in sorted(path.parent.iterdir()):
        for kind in ("partial", "old"):
            prefix = f".{path.name}.{kind}-"
            if entry.name.startswith(prefix) and entry.is_dir() and not entry.is_symlink():
                message = _clean_one(entry, path, kind, entry.name[len(prefix) :])
                if message:
                    notes.append(message)
                    note(message)
    return notes


def _clean_one(entry: Path, target: Path, kind: str, tail: str) -> str | None:
    match = _STALE.match(tail)
    if match is None:
        return f"{entry} was left by an interrupted write (owner unknown); delete it if you do not need it"
    if _owner_alive(int(match["pid"]), match["host"]):
        return None
    if kind == "partial":
        shutil.rmtree(entry, ignore_errors=True)
        return None
    old = entry / target.name
    if not old.exists() and not old.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
        return None
    if not target.exists() and not target.is_symlink():
        os.replace(old, target)
        shutil.rmtree(entry, ignore_errors=True)
        return f"put {target} back from {entry} (an interrupted replacement had moved it aside)"
    return (
        f"{old} is the previous {target.name}, kept by an interrupted --overwrite; "
        "delete it once the new one is good, or move it back"
    )


def clean_stale_in(folder: Path) -> list[str]:
    """:func:`clean_stale` for every target in ``folder`` that has ``.partial-`` / ``.old-`` siblings."""
    names = set()
    if folder.is_dir():
        for entry in folder.iterdir():
            match = re.match(r"^\.(?P<name>.+)\.(partial|old)-", entry.name)
            if match is not None:
                names.add(match["name"])
    return [n for name in sorted(names) for n in clean_stale(folder / name)]


def discard(path: Path, kind: Kind) -> None:
    """Delete the vla-align ``kind`` at ``path`` (refused for anything else, even an empty folder): first
    renamed into a ``.<name>.partial-<owner>-*`` sibling (one rename), so a kill mid-way leaves a folder
    that :func:`clean_stale` removes, never a half-deleted one under the old name."""
    check_protected(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not _recognised(path, kind):
        raise UserError(f"{path}: not a vla-align {kind} (no {_MARKERS[kind]}); refusing to delete it")
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{owner_tag()}-", dir=path.parent))
    os.replace(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def move_aside(path: Path) -> Path:
    """Move ``path`` into a fresh ``.<name>.old-<owner>-*`` sibling (one rename); returns that sibling."""
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{owner_tag()}-", dir=path.parent))
    os.replace(path, trash / path.name)
    return trash


@contextlib.contextmanager
def replace_after_success(
    path: str | os.PathLike[str], kind: Kind, protect: Sequence[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """Replace the ``kind`` at ``path``: check it may be replaced, move it aside, let the block write the
    new one at ``path``, and delete the old one only when the block succeeds. When the block raises,
    what it wrote at ``path`` is removed and the old one is put back; a killed process leaves the old
    one in its ``.old-`` sibling (put back by :func:`clean_stale` when ``path`` is missing)."""
    path = Path(path)
    check_replaceable(path, kind, protect)
    clean_stale(path)
    if not path.exists() and not path.is_symlink():
        yield path
        return
    trash = move_aside(path)
    try:
        yield path
    except BaseException:
        _restore(trash, path)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def _restore(trash: Path, path: Path) -> None:
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
        os.replace(trash / path.name, path)
        trash.rmdir()
    except OSError as exc:
        note(f"could not put the previous {path} back ({exc}); it is kept in {trash / path.name}")
