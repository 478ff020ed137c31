"""Kept checkpoints (``train.keep_checkpoints``): RUN/checkpoints/step-NNNNNN/ with the weights, the
training state and a marker; the oldest beyond N deleted (only folders vla-align wrote); a ``last``
pointer (relative symlink, or a text file where links fail); ``eval --checkpoint``; resume repairs."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tests.synthetic import write_synthetic

from vla_align import checkpoint, safety
from vla_align.cli import main
from vla_align.errors import UserError

TINY = ["--preset", "tiny", "--train.steps", "20", "--train.checkpoint-every", "5"]
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("keep") / "synth", n_train=32, n_val=8, n_test=12)


@pytest.fixture(scope="module")
def kept(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-step run checkpointed every 5 steps that keeps the newest 2: 10 steps, then the user adds
    files of their own to checkpoints/, then the run is resumed to 20 steps."""
    run = tmp_path_factory.mktemp("kept") / "run"
    os.environ["VLA_ALIGN_QUIET"] = "1"
    try:
        flags = [*TINY, "--train.steps", "10", "--train.keep-checkpoints", "2"]
        assert main(["train", *flags, "--data", str(dataset), "--out", str(run)]) == 0
        assert [s for s, _ in checkpoint.snapshots(run)] == [5, 10]
        (run / "checkpoints" / "step-000001").mkdir()  # a folder a user named like ours
        (run / "checkpoints" / "notes.txt").write_text("mine")
        assert main(["train", "--resume", str(run), "--train.steps", "20"]) == 0
    finally:
        os.environ.pop("VLA_ALIGN_QUIET", None)
    return run


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_the_newest_n_are_kept_with_weights_state_and_marker(kept: Path) -> None:
    assert [s for s, _ in checkpoint.snapshots(kept)] == [15, 20]
    for step, folder in checkpoint.snapshots(kept):
        assert {p.name for p in folder.iterdir()} == {"model.safetensors", "train_state.pt", "snapshot.json"}
        marker = json.loads((folder / "snapshot.json").read_text())
        assert marker == {"format": safety.SNAPSHOT_FORMAT, "step": step}
        assert torch.load(folder / "train_state.pt", weights_only=True)["step"] == step
    # the last one holds exactly the weights and state of checkpoint/ (no model selection in this run)
    for name in ("model.safetensors", "train_state.pt"):
        assert (kept / "checkpoints" / "step-000020" / name).read_bytes() == (kept / "checkpoint" / name).read_bytes()


def test_last_is_a_relative_link_to_the_newest(kept: Path) -> None:
    link = kept / "checkpoints" / "last"
    assert link.is_symlink() and os.readlink(link) == "step-000020"
    assert checkpoint.read_last(kept) == "step-000020"
    assert checkpoint.snapshot_dir(kept, "last") == kept / "checkpoints" / "step-000020"


def test_only_folders_vla_align_wrote_are_pruned(kept: Path) -> None:
    assert _names(kept) == ["last", "notes.txt", "step-000001", "step-000015", "step-000020"]
    assert not safety.is_snapshot_dir(kept / "checkpoints" / "step-000001")  # no marker: never touched
    with pytest.raises(UserError, match="not a vla-align checkpoint"):
        safety.discard(kept / "checkpoints" / "step-000001", "checkpoint")
    assert (kept / "checkpoints" / "step-000001").is_dir()


def test_a_marker_naming_another_step_is_not_ours(tmp_path: Path) -> None:
    folder = tmp_path / "step-000007"
    folder.mkdir()
    (folder / "snapshot.json").write_text(json.dumps({"format": safety.SNAPSHOT_FORMAT, "step": 8}))
    assert not safety.is_snapshot_dir(folder)
    (folder / "snapshot.json").write_text(json.dumps({"format": safety.SNAPSHOT_FORMAT, "step": 7}))
    assert safety.is_snapshot_dir(folder)
    link = tmp_path / "step-000009"
    link.symlink_to(folder, target_is_directory=True)
    assert not safety.is_snapshot_dir(link)  # a link is never followed into


def test_the_pointer_falls_back_to_a_text_file_without_symlinks(
    kept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "copy"
    shutil.copytree(kept, run, symlinks=True)

    def no_links(*_a: object, **_k: object) -> None:
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(os, "symlink", no_links)
    (run / "checkpoints" / "last").unlink()
    checkpoint.point_last(run)
    last = run / "checkpoints" / "last"
    assert not last.is_symlink() and last.read_text() == "step-000020\n"
    assert checkpoint.snapshot_dir(run, "last").name == "step-000020"
    checkpoint.prune_snapshots(run, 1)
    assert [s for s, _ in checkpoint.snapshots(run)] == [20] and last.read_text() == "step-000020\n"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # nothing left behind


def test_eval_of_a_kept_checkpoint_writes_into_its_folder(cli: Cli, kept: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(kept, run, symlinks=True)
    assert cli("eval", "--run", str(run), "--device", "cpu")[0] == 0
    own = (run / "metrics.json").read_bytes()
    code, _, err = cli("eval", "--run", str(run), "--checkpoint", "step-000015", "--device", "cpu")
    assert code == 0, err
    assert (run / "metrics.json").read_bytes() == own  # the run's own numbers are kept
    metrics = json.loads((run / "checkpoints" / "step-000015" / "metrics.json").read_text())
    assert metrics["run/step"] == 15 and metrics["run/finished"] == 0.0
    assert 0.0 <= metrics["retrieval/image_to_text/R@1"] <= 1.0
    assert safety.is_snapshot_dir(run / "checkpoints" / "step-000015")  # still recognised with its metrics
    code, _, err = cli("eval", "--run", str(run), "--checkpoint", "last", "--device", "cpu")
    assert code == 0 and (run / "checkpoints" / "step-000020" / "metrics.json").is_file()


@pytest.mark.parametrize("name", ["step-000010", "../checkpoint", "step-000001", "latest"])
def test_eval_of_an_unknown_checkpoint_is_one_line(cli: Cli, kept: Path, name: str) -> None:
    code, _, err = cli("eval", "--run", str(kept), "--checkpoint", name)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "step-000015, step-000020" in lines[0]  # names what there is


def test_eval_checkpoint_last_without_kept_checkpoints(cli: Cli, dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "plain"
    assert cli("train", *TINY, "--train.steps", "5", "--data", str(dataset), "--out", str(run))[0] == 0
    assert not (run / "checkpoints").exists()  # keep_checkpoints 0 (the default) writes none
    code, _, err = cli("eval", "--run", str(run), "--checkpoint", "last")
    assert code == 2 and "--train.keep-checkpoints" in err


def test_a_new_run_is_refused_where_kept_checkpoints_are(cli: Cli, kept: Path, dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(kept, run, symlinks=True)
    shutil.rmtree(run / "checkpoint")
    code, _, err = cli("train", *TINY, "--data", str(dataset), "--out", str(run))
    assert code == 2 and "checkpoints" in err
    assert [s for s, _ in checkpoint.snapshots(run)] == [15, 20]


def test_resume_repairs_and_keeps_the_newest(cli: Cli, kept: Path, dataset: Path, tmp_path: Path) -> None:
    """A resume drops kept checkpoints of steps it redoes, writes the one of its own step when a kill
    came between checkpoint/ and it, cleans half-written folders and applies a changed N."""
    run = tmp_path / "copy"
    shutil.copytree(kept, run, symlinks=True)
    folder = run / "checkpoints"
    later = folder / "step-000025"  # as if from a timeline the resumed run redoes
    shutil.copytree(folder / "step-000020", later)
    (later / "snapshot.json").write_text(json.dumps({"format": safety.SNAPSHOT_FORMAT, "step": 25}))
    shutil.rmtree(folder / "step-000020")  # killed after checkpoint/ (step 20) but before its copy
    stale = folder / ".step-000030.partial-999999999@nohost-x"  # another machine's: reported, kept
    dead = folder / f".step-000030.partial-{2**22 + 12345}@{safety.owner_tag().split('@')[1]}-x"
    stale.mkdir()
    dead.mkdir()
    (folder / ".last.abcd.tmp").symlink_to("step-000015")
    code, _, err = cli("train", "--resume", str(run), "--train.steps", "30", "--train.keep-checkpoints", "3")
    assert code == 0, err
    assert [s for s, _ in checkpoint.snapshots(run)] == [20, 25, 30]  # 25 redone by this run
    assert torch.load(folder / "step-000025" / "train_state.pt", weights_only=True)["step"] == 25
    assert os.readlink(folder / "last") == "step-000030"
    assert not dead.exists() and not (folder / ".last.abcd.tmp").exists()
    assert "step-000001" in _names(run) and "notes.txt" in _names(run)
