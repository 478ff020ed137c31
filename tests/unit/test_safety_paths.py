"""safety.py and atomic.py: what may be replaced, replacing only after success, stale folders, umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.synthetic import write_synthetic

from vla_align import atomic, safety
from vla_align.errors import UserError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"preset": "tiny", "dataset": {"path": "d"}, "train": {}}))
    (path / "metrics.json").write_text("{}")
    return path


@pytest.fixture
def umask_002() -> Iterator[None]:
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_markers(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    data = write_synthetic(tmp_path / "data", 4, 2, 2)
    assert safety.is_run_dir(run) and not safety.is_dataset_dir(run)
    assert safety.is_dataset_dir(data) and not safety.is_run_dir(data)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model": 1}')
    assert not safety.is_run_dir(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text("[1, 2")
    assert not safety.is_run_dir(tmp_path / "other")


def test_never_the_working_directory_its_parents_or_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(tmp_path / "a" / "run")
    (run / "sub").mkdir()
    monkeypatch.chdir(run / "sub")
    for target in (run / "sub", run, tmp_path / "a", Path(".")):
        with pytest.raises(UserError, match="working directory"):
            safety.check_replaceable(target, "run")
    other = _run(tmp_path / "b")
    for protected in (other, other / "x", tmp_path / "b" / "x" / "y"):
        with pytest.raises(UserError, match="dataset"):
            safety.check_replaceable(other, "run", protect=[protected])
    safety.check_replaceable(other, "run")  # a run elsewhere: fine


def test_foreign_folders_and_files_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a vla-align run"):
        safety.check_replaceable(foreign, "run")
    with pytest.raises(UserError, match="not a vla-align dataset"):
        safety.check_replaceable(foreign, "dataset")
    with pytest.raises(UserError, match="not a vla-align dataset"):
        safety.check_replaceable(_run(tmp_path / "run"), "dataset")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        safety.check_replaceable(tmp_path / "file", "run")
    (tmp_path / "empty").mkdir()
    safety.check_replaceable(tmp_path / "empty", "run")
    safety.check_replaceable(tmp_path / "new", "dataset")


def test_replace_after_success_deletes_the_old_one_only_at_the_end(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    with safety.replace_after_success(run, "run") as target:
        assert not run.exists()  # moved aside, not deleted
        aside = [p for p in tmp_path.iterdir() if p.name.startswith(".run.old-")]
        assert len(aside) == 1 and (aside[0] / "run" / "config.json").is_file()
        _run(target)
        (target / "new.txt").write_text("new")
    assert (run / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_replace_after_success_puts_the_old_one_back_on_failure(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(RuntimeError), safety.replace_after_success(run, "run") as target:
        _run(target)
        (target / "half.txt").write_text("half")
        raise RuntimeError("training failed")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_stale_folders_of_dead_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = safety.owner_tag().split("@")[1]
    dead, live = _dead_pid(), os.getpid()
    target = tmp_path / "data"
    partial_dead = tmp_path / f".data.partial-{dead}@{host}-abc"
    partial_live = tmp_path / f".data.partial-{live}@{host}-abc"
    old_dead = tmp_path / f".data.old-{dead}@{host}-xyz"
    legacy = tmp_path / ".data.partial-k2j4_9"
    for p in (partial_dead, partial_live, legacy, old_dead / "data"):
        p.mkdir(parents=True)
    (old_dead / "data" / "keep.txt").write_text("old")
    notes = safety.clean_stale(target)
    assert not partial_dead.exists() and partial_live.exists()
    assert (target / "keep.txt").read_text() == "old" and not old_dead.exists()  # put back: it was the only copy
    assert legacy.exists() and any(str(legacy) in n for n in notes)
    # an old copy whose target exists is reported, never deleted
    old_dead.mkdir()
    (old_dead / "data").mkdir()
    safety.clean_stale(target)
    assert (old_dead / "data").is_dir() and "interrupted --overwrite" in capsys.readouterr().err


def test_files_and_folders_follow_the_umask(tmp_path: Path, umask_002: None) -> None:
    atomic.write_text(tmp_path / "f.txt", "x")
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o664
    with atomic.atomic_directory(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o775
    data = write_synthetic(tmp_path / "data", 4, 2, 2)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [data, *data.rglob("*")]}
    assert modes <= {0o664, 0o775}, sorted(oct(m) for m in modes)


def test_atomic_directory_replaces_only_a_dataset(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a vla-align dataset"), atomic.atomic_directory(foreign, overwrite=True):
        pass
    assert (foreign / "notes.txt").read_text() == "mine"
    data = write_synthetic(tmp_path / "data", 4, 2, 2)
    with atomic.atomic_directory(data, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in data.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mine"]
