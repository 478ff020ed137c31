"""``train --resume RUN --train.steps N``: a run continued to a raised step count, bitwise against an
uninterrupted run of that length where the learning-rate schedule allows it; settings a resume may not
change are refused in one line (exit 2) before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.synthetic import write_synthetic

from vla_align import checkpoint
from vla_align.cli import main
from vla_align.train import TrainConfig, lr_factor, schedule_note

REPO = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "--train.checkpoint-every", "3", "--train.log-every", "3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("resume") / "synth", n_train=32, n_val=8, n_test=12)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLA_ALIGN_QUIET", "1")


def _extended(dataset: Path, out: Path, first: int, total: int, *flags: str) -> bytes:
    """Train ``first`` steps, resume to ``total``; the weights' bytes."""
    assert main(["train", *TINY, *flags, "--data", str(dataset), "--out", str(out), "--train.steps", str(first)]) == 0
    assert main(["train", "--resume", str(out), "--train.steps", str(total)]) == 0
    assert torch.load(out / "checkpoint" / "train_state.pt", weights_only=True)["step"] == total
    return (out / "checkpoint" / "model.safetensors").read_bytes()


def _straight(dataset: Path, out: Path, total: int, *flags: str) -> bytes:
    assert main(["train", *TINY, *flags, "--data", str(dataset), "--out", str(out), "--train.steps", str(total)]) == 0
    return (out / "checkpoint" / "model.safetensors").read_bytes()


def test_flat_schedule_extended_run_is_bitwise_an_uninterrupted_one(dataset: Path, tmp_path: Path) -> None:
    flat = ("--train.min-lr-ratio", "1")  # warm-up (2 steps in tiny) then a constant rate
    extended = _extended(dataset, tmp_path / "a", 6, 12, *flat)
    assert extended == _straight(dataset, tmp_path / "b", 12, *flat)
    assert checkpoint.last_logged_step(tmp_path / "a" / "metrics.jsonl") == 12


def test_a_resume_inside_the_warmup_is_bitwise_too(dataset: Path, tmp_path: Path) -> None:
    """The warm-up does not depend on the total: a run stopped before it ended continues exactly, even
    with the cosine."""
    extended = _extended(dataset, tmp_path / "a", 2, 8, "--train.warmup-steps", "4")
    assert extended == _straight(dataset, tmp_path / "b", 8, "--train.warmup-steps", "4")


def test_cosine_extended_run_differs_and_says_why(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "a"
    assert main(["train", *TINY, "--data", str(dataset), "--out", str(run), "--train.steps", "6"]) == 0
    monkeypatch.delenv("VLA_ALIGN_QUIET")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--train.steps", "12"]) == 0
    raw = capsys.readouterr().err
    err = " ".join(raw.split())
    assert "train.steps 6 -> 12" in err and "cosine over 12" in err
    # the start banner: device, data, steps, batch, run folder and the step it resumes from
    banner = next(x for x in raw.splitlines() if x.startswith("training on "))
    assert banner.startswith("training on cpu (") and "32 episodes / " in banner and f"frames of {dataset};" in banner
    assert f"12 steps x batch 16; run {run}; resuming from step 6" in banner
    monkeypatch.setenv("VLA_ALIGN_QUIET", "1")
    assert (run / "checkpoint" / "model.safetensors").read_bytes() != _straight(dataset, tmp_path / "b", 12)


def test_schedule_note_names_the_exact_cases() -> None:
    cosine = TrainConfig(steps=20, warmup_steps=4)
    assert schedule_note(cosine, 20, 10) is None  # unchanged
    assert schedule_note(cosine, None, 10) is None  # a state from before the total was recorded
    assert "exactly like an uninterrupted 20-step" in (schedule_note(cosine, 10, 3) or "")  # inside the warm-up
    note = schedule_note(cosine, 10, 10) or ""
    before = TrainConfig(steps=10, warmup_steps=4)
    assert f"x {lr_factor(9, before):.3g} at step 10 -> x {lr_factor(10, cosine):.3g} at step 11" in note
    flat = TrainConfig(steps=50, warmup_steps=4, min_lr_ratio=1.0)
    assert "exactly like an uninterrupted 50-step" in (schedule_note(flat, 10, 10) or "")


def test_steps_below_the_step_reached_are_refused(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "a"
    assert main(["train", *TINY, "--data", str(dataset), "--out", str(run), "--train.steps", "3"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--train.steps", "2"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and "--train.steps 3 or more" in lines[0]


def test_a_forbidden_override_is_one_line_and_exit_2(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "a"
    assert main(["train", *TINY, "--data", str(dataset), "--out", str(run), "--train.steps", "2"]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("VLA_ALIGN_QUIET", None)  # refused before anything is printed, quiet or not
    done = subprocess.run(
        [sys.executable, "-m", "vla_align", "train", "--resume", str(run), "--model.embed-dim", "64"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "model.embed_dim: 32 -> 64" in lines[0] and "train.steps" in lines[0]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing touched
