"""Issue 17 (reliability) through the command line: nothing deleted or overwritten that the user did not
ask for, runs and evaluations that never lie, one line on every failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tests.synthetic import write_synthetic

from vla_align.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "--train.steps", "12", "--train.checkpoint-every", "4"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VLA_ALIGN_QUIET": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vla_align", *args], env=env, capture_output=True, text=True, timeout=300
    )


def assert_clean_failure(result: tuple[int, str, str], *needles: str) -> str:
    code, _, err = result
    assert code == 2, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("d") / "synth")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    run = tmp_path_factory.mktemp("r") / "run"
    assert main(["train", *TINY, "--data", str(dataset), "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


# --- 1. deletion / overwrite safety ----------------------------------------------------------------

Cli = Callable[..., tuple[int, str, str]]


def test_pipeline_overwrite_never_deletes_the_dataset_the_cwd_or_a_foreign_folder(
    cli: Cli, tmp_path: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Path(shutil.copytree(dataset, tmp_path / "work" / "data"))
    foreign = tmp_path / "work" / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    flags = ["pipeline", *TINY, "--data", str(data), "--overwrite", "--out"]
    assert_clean_failure(cli(*flags, str(data)), "dataset")
    assert_clean_failure(cli(*flags, str(tmp_path / "work")), "dataset")
    assert_clean_failure(cli(*flags, str(foreign)), "not a vla-align run")
    monkeypatch.chdir(foreign)
    assert_clean_failure(cli(*flags, "."), "working directory")
    assert_clean_failure(cli(*flags, ".."), "working directory")
    assert snapshot(tmp_path) == before


def test_train_out_never_writes_into_a_foreign_folder(cli: Cli, tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    (out / "metrics.jsonl").write_text("my log\n")
    before = snapshot(out)
    assert_clean_failure(cli("train", *TINY, "--data", str(dataset), "--out", str(out)), "not a vla-align run")
    assert snapshot(out) == before


def test_pipeline_overwrite_replaces_a_run_only_after_success(
    cli: Cli, tmp_path: Path, dataset: Path, run: Path
) -> None:
    before = snapshot(run)
    bad = Path(shutil.copytree(dataset, tmp_path / "bad"))
    for f in (bad / "data").rglob("*.parquet"):
        f.write_bytes(b"garbage")
    assert_clean_failure(cli("pipeline", *TINY, "--data", str(bad), "--out", str(run), "--overwrite"), "parquet")
    assert snapshot(run) == before  # the failed replacement put the old run back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "run"]


@pytest.mark.slow
def test_pipeline_overwrite_deletes_the_old_run_after_success(
    cli: Cli, tmp_path: Path, dataset: Path, run: Path
) -> None:
    code, _, err = cli(
        "pipeline", *TINY, "--train.lr", "0.002", "--data", str(dataset), "--out", str(run), "--overwrite"
    )
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 0.002
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the old one is gone now


def test_data_overwrite_replaces_only_a_dataset(cli: Cli, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    flags = ["data", "babyai", "--level", "GoToLocal", "--episodes", "3", "--val-episodes", "1", "--test-episodes", "1"]
    assert_clean_failure(cli(*flags, "--out", str(foreign), "--overwrite"), "not a vla-align dataset")
    assert (foreign / "notes.txt").read_text() == "mine"


# --- 3. one line on every failure --------------------------------------------------------------------


def test_os_errors_on_user_paths_are_one_line(cli: Cli, tmp_path: Path, dataset: Path) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    assert_clean_failure(cli("train", *TINY, "--data", str(dataset), "--out", str(out)), "file", "Not a directory")
    long = tmp_path / ("x" * 300)
    assert_clean_failure(cli("train", *TINY, "--data", str(dataset), "--out", str(long)), "too long")


def test_an_unexpected_error_saves_its_traceback(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vla_align.cli as cli_module

    def broken(args: object) -> None:
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cli_module, "cmd_presets", broken)
    code, _, err = cli("presets")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "RuntimeError: a bug" in err
    (crash,) = (tmp_path / "cache" / "vla-align").glob("crash-*.txt")
    assert str(crash) in err and "Traceback" in crash.read_text() and "a second line" in crash.read_text()


# --- 4. eval never overwrites the test numbers and never lies -----------------------------------------


def test_eval_of_another_split_keeps_the_test_numbers(cli: Cli, run: Path) -> None:
    assert cli("eval", "--run", str(run))[0] == 0
    test = json.loads((run / "metrics.json").read_text())
    assert cli("eval", "--run", str(run), "--split", "train")[0] == 0
    both = json.loads((run / "metrics.json").read_text())
    assert {k: both[k] for k in test} == test
    assert both["split/train/retrieval/samples"] == 24.0 and test["retrieval/samples"] == 12.0


def test_eval_flags_are_validated(cli: Cli, run: Path) -> None:
    before = snapshot(run)
    assert_clean_failure(cli("eval", "--run", str(run), "--max-episodes", "-1"), "--max-episodes")
    assert_clean_failure(cli("eval", "--run", str(run), "--episodes", "-5"), "--episodes")
    assert_clean_failure(cli("eval", "--run", str(run), "--split", "../x"), "--split")
    assert snapshot(run) == before


def test_eval_and_report_refuse_another_dataset(cli: Cli, tmp_path: Path, run: Path) -> None:
    other = write_synthetic(tmp_path / "other", continuous=True)
    before = snapshot(run)
    assert_clean_failure(cli("eval", "--run", str(run), "--data", str(other)), str(other), "trained on")
    assert_clean_failure(cli("report", "--run", str(run), "--data", str(other)), str(other), "trained on")
    assert snapshot(run) == before


def test_a_damaged_metrics_file_never_loses_an_evaluation(cli: Cli, run: Path) -> None:
    (run / "metrics.json").write_text('{"retrieval/x": 1, "broken')
    code, _, err = cli("eval", "--run", str(run))
    assert code == 0, err
    assert "metrics.json.bak" in err
    assert (run / "metrics.json.bak").read_text() == '{"retrieval/x": 1, "broken'
    assert "retrieval/image_to_text/R@1" in json.loads((run / "metrics.json").read_text())
    with (run / "metrics.jsonl").open("a") as log:
        log.write('{"step": 13, "loss/tot')  # a kill while a line was written
    code, _, err = cli("report", "--run", str(run), "--lang", "en")
    assert code == 0, err
    assert "cut short" in (run / "report.html").read_text()


def _pretend_killed_at(run: Path, step: int) -> None:
    path = run / "checkpoint" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    state["step"] = step
    torch.save(state, path)


def test_eval_of_an_unfinished_run_says_so(cli: Cli, run: Path) -> None:
    _pretend_killed_at(run, 8)
    code, out, err = cli("eval", "--run", str(run))
    assert code == 0 and "did not finish" in out + err
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["run/finished"], metrics["run/step"], metrics["run/steps"]) == (0.0, 8.0, 12.0)


# --- 5. resume ------------------------------------------------------------------------------------------


def test_resume_refuses_a_changed_config(cli: Cli, run: Path) -> None:
    before = snapshot(run)
    assert_clean_failure(cli("train", "--resume", str(run), "--train.lr", "0.5"), "train.lr", "--out")
    config = json.loads((run / "config.json").read_text())
    config["train"]["weight_decay"] = 0.5
    (run / "config.json").write_text(json.dumps(config))
    assert_clean_failure(cli("train", "--resume", str(run)), "train.weight_decay: 0.05 -> 0.5")
    (run / "config.json").write_bytes(before["config.json"])
    assert snapshot(run) == before


def test_resume_refuses_a_changed_dataset(cli: Cli, tmp_path: Path, dataset: Path) -> None:
    data = Path(shutil.copytree(dataset, tmp_path / "data"))
    run = tmp_path / "run"
    assert cli("train", *TINY, "--train.steps", "8", "--data", str(data), "--out", str(run))[0] == 0
    _pretend_killed_at(run, 4)
    shutil.rmtree(data)
    write_synthetic(data, n_train=20)
    before = snapshot(run)
    assert_clean_failure(cli("train", "--resume", str(run)), "different dataset", "--out")
    assert snapshot(run) == before


def test_resume_of_a_finished_run_without_its_weights_says_so(cli: Cli, run: Path) -> None:
    (run / "checkpoint" / "model.safetensors").unlink()
    before = snapshot(run)
    assert_clean_failure(cli("train", "--resume", str(run)), "already finished", "model.safetensors")
    assert snapshot(run) == before


def test_resume_after_a_torn_log_line(cli: Cli, run: Path) -> None:
    _pretend_killed_at(run, 8)
    with (run / "metrics.jsonl").open("a") as log:
        log.write('{"step": 9, "loss/to')
    code, _, err = cli("train", "--resume", str(run))
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 12


def test_pipeline_rerun_of_a_finished_run_evaluates_it(cli: Cli, run: Path, dataset: Path) -> None:
    weights = (run / "checkpoint" / "model.safetensors").read_bytes()
    code, _, err = cli("pipeline", *TINY, "--data", str(dataset), "--out", str(run), "--lang", "en")
    assert code == 0, err
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == weights  # not retrained
    assert (run / "report.html").is_file() and "retrieval/image_to_text/R@1" in (run / "metrics.json").read_text()


@pytest.mark.slow
def test_pipeline_continues_after_a_kill(tmp_path: Path, dataset: Path) -> None:
    flags = ["--preset", "tiny", "--train.steps", "40", "--train.checkpoint-every", "2", "--data", str(dataset)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VLA_ALIGN_QUIET": "1"}
    out = tmp_path / "p"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vla_align", "pipeline", *flags, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "checkpoint" / "train_state.pt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.load(state, weights_only=True)["step"] < 40
    again = run_cli("pipeline", *flags, "--out", str(out), "--lang", "en")
    assert again.returncode == 0, again.stderr
    assert "continuing the interrupted run" in " ".join((again.stdout + again.stderr).split())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run/finished"] == 1.0 and (out / "report.html").is_file()
    straight = tmp_path / "straight"
    assert main(["train", *flags, "--out", str(straight)]) == 0
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == (
        straight / "checkpoint" / "model.safetensors"
    ).read_bytes()
