"""Tiny training runs through the CLI: TensorBoard and metrics.csv hold exactly what metrics.jsonl holds
(read back with tensorboard's own readers), also after an interrupted run is resumed or a finished one
is resumed with more steps; eval adds its metrics to TensorBoard; wandb / mlflow get the same values."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.synthetic import write_synthetic
from tests.unit.test_tracking import (
    FakeMlflow,
    FakeWandb,
    assert_points_equal,
    csv_points,
    expected_points,
    f32,
    tb_points,
)

from vla_align import tracking
from vla_align import train as train_module
from vla_align.cli import main

REPO = Path(__file__).resolve().parents[2]
FLAGS = (
    "--preset", "tiny", "--train.steps", "20", "--train.log-every", "2", "--train.checkpoint-every", "10",
    "--train.select.every", "5", "--eval.batch-size", "4",
)  # fmt: skip
TIMING = "samples_per_s"  # wall-clock throughput: the one value a resumed run logs differently


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "synth", n_train=48, n_val=16, n_test=12)


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeWandb, FakeMlflow]]:
    wandb, mlflow = FakeWandb(), FakeMlflow()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "wandb", wandb)
        mp.setitem(sys.modules, "mlflow", mlflow)
        yield wandb, mlflow


@pytest.fixture(scope="module")
def reference(dataset: Path, tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeWandb, FakeMlflow]) -> Path:
    """An uninterrupted run that also reports to (fake) wandb and mlflow."""
    run = tmp_path_factory.mktemp("ref") / "run"
    args = ["train", *FLAGS, "--data", str(dataset), "--out", str(run), "--train.log.report-to", "wandb", "mlflow"]
    assert main(args) == 0
    return run


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_views_match_the_log(run: Path) -> None:
    """Every scalar of metrics.jsonl, at its step, in TensorBoard (float32) and metrics.csv (exact); nothing
    else; no (key, step) twice anywhere."""
    want = expected_points(records(run))
    tb = tb_points(run / "tensorboard" / tracking.TB_TRAIN)
    assert_points_equal({k: v for k, (v, _) in tb.items()}, f32(want))
    assert_points_equal(csv_points(run / "metrics.csv"), want)


def without_timing(points: dict[tuple[str, int], float]) -> dict[tuple[str, int], float]:
    return {k: v for k, v in points.items() if k[0] != TIMING}


def test_tensorboard_and_csv_hold_every_scalar_of_metrics_jsonl(reference: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert_views_match_the_log(reference)
    want = expected_points(records(reference))
    assert {k for k, _ in want} >= {"loss/total", "lr", "val/score", "conflict/cos/image_text|text_action"}
    assert {s for _, s in want} == {1, 5, 15} | set(range(2, 21, 2))  # conflicts at 1, logs every 2, validation every 5
    acc = EventAccumulator(str(reference / "tensorboard"), size_guidance={"scalars": 0})  # what TensorBoard shows
    acc.Reload()
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert_points_equal(got, f32(want))
    assert sorted(p.name for p in (reference / "tensorboard").iterdir()) == [tracking.TB_TRAIN]


def test_wandb_and_mlflow_got_the_run_and_every_scalar(reference: Path, fakes: tuple[FakeWandb, FakeMlflow]) -> None:
    wandb, mlflow = fakes
    init = wandb.inits[0]
    assert (init["name"], init["dir"], init["config"]["train"]["steps"]) == ("run", str(reference), 20)
    want = expected_points(records(reference))
    assert_points_equal({(k, s): float(v) for s, vals in wandb.logged for k, v in vals.items()}, want)
    got = {(k, s): v for s, vals in mlflow.logged for k, v in vals.items()}
    assert_points_equal(got, {(tracking._mlflow_key(k), s): v for (k, s), v in want.items()})
    assert mlflow.params["model.text.backbone"] == "scratch" and mlflow.starts[0]["run_name"] == "run"
    assert (wandb.finished[0], mlflow.ended[0]) == (0, "FINISHED")
    assert json.loads((reference / "tracking.json").read_text()) == {"wandb": "wb1", "mlflow": "ml1"}


def test_eval_adds_its_metrics_at_the_last_step_and_a_second_eval_rewrites_them(
    reference: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    assert main(["eval", "--run", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    path = run / "tensorboard" / tracking.TB_EVAL
    points = tb_points(path)
    assert_points_equal({k: v for k, (v, _) in points.items()}, f32(expected_points([{"step": 20, **metrics}])))
    last_train = max(w for _, w in tb_points(run / "tensorboard" / tracking.TB_TRAIN).values())
    assert {w for _, w in points.values()} == {last_train}
    first = path.read_bytes()
    assert main(["eval", "--run", str(run)]) == 0
    assert path.read_bytes() == first  # no second copy; the same bytes
    assert_views_match_the_log(run)  # the training log untouched


def test_interrupted_then_resumed_run_logs_each_step_once(
    dataset: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: tuple[FakeWandb, FakeMlflow]
) -> None:
    """Stopped after step 15 (checkpoint at 10): the resume logs 11..15 again; TensorBoard and the CSV
    hold each once, as the uninterrupted run has them. The remote runs are continued by id."""
    run = tmp_path / "run"
    real_step = train_module.train_one_step

    def stop_after_15(run_: Any, step: int, *rest: Any) -> bool:
        if step == 15:  # 0-based: steps 1..15 are done
            raise KeyboardInterrupt
        return real_step(run_, step, *rest)

    args = ["train", *FLAGS, "--data", str(dataset), "--out", str(run), "--train.log.report-to", "wandb", "mlflow"]
    with monkeypatch.context() as mp:
        mp.setattr(train_module, "train_one_step", stop_after_15)
        assert main(args) == 130
    assert max(s for _, s in tb_points(run / "tensorboard" / tracking.TB_TRAIN)) == 15
    assert main(["train", "--resume", str(run)]) == 0
    assert_views_match_the_log(run)
    assert without_timing(expected_points(records(run))) == without_timing(expected_points(records(reference)))
    assert without_timing(csv_points(run / "metrics.csv")) == without_timing(csv_points(reference / "metrics.csv"))
    wandb, mlflow = fakes
    ids = json.loads((run / "tracking.json").read_text())
    assert wandb.inits[-2]["id"] is None and wandb.inits[-1]["id"] == ids["wandb"]  # started, then continued
    assert mlflow.starts[-2]["run_name"] == "run" and mlflow.starts[-1] == {"run_id": ids["mlflow"]}
    assert (wandb.finished[-2:], mlflow.ended[-2:]) == ([1, 0], ["FAILED", "FINISHED"])


def test_resume_with_more_steps_and_tracking_switched(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    flags = ["--train.steps", "26", "--train.log.report-to", "none", "--train.log.csv", "false"]
    assert main(["train", "--resume", str(run), *flags]) == 0
    want = expected_points(records(run))
    assert max(s for _, s in want) == 26
    tb = tb_points(run / "tensorboard" / tracking.TB_TRAIN)
    assert_points_equal({k: v for k, (v, _) in tb.items()}, f32(want))
    assert tb_points(reference / "tensorboard" / tracking.TB_TRAIN).items() <= tb.items()  # wall times kept
    assert_points_equal(csv_points(run / "metrics.csv"), {k: v for k, v in want.items() if k[1] <= 20})  # CSV off


def test_tensorboard_missing_warns_once_when_not_asked_for(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tracking, "_tensorboard", lambda: None)
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--train.steps", "4", "--data", str(dataset), "--out", str(run)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "vla-align: warning: tensorboard is not installed: no TensorBoard log (pip install tensorboard to get one)"
    ]
    assert not (run / "tensorboard").exists()
    assert_points_equal(csv_points(run / "metrics.csv"), expected_points(records(run)))
    assert main(["train", "--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / "r2"), "--train.log.tensorboard", "on"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorboard" in err[0] and not (tmp_path / "r2").exists()


def test_report_to_a_missing_package_is_one_line_naming_the_install(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    args = ["train", "--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / "r")]
    assert main([*args, "--train.log.report-to", "mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install mlflow" in err[0] and "--train.log.report-to" in err[0]
    assert main([*args, "--train.log.report-to", "slack"]) == 2
    assert "--train.log.report-to" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_then_resume_leaves_no_duplicate_or_missing_step(dataset: Path, tmp_path: Path) -> None:
    """A real kill (log every step, checkpoint every 8), then --resume: the views equal metrics.jsonl."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VLA_ALIGN_QUIET": "1"}
    flags = ["--preset", "tiny", "--train.steps", "40", "--train.log-every", "1", "--train.checkpoint-every", "8"]
    cmd = [sys.executable, "-m", "vla_align", "train", *flags, "--data", str(dataset), "--out", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        logged = tracking.read_log(run / "metrics.jsonl")
        if logged and logged[-1]["step"] >= 21:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = tb_points(run / "tensorboard" / tracking.TB_TRAIN)
    assert max(s for _, s in before) > 16, "the kill came after the run ended or before the second checkpoint"
    assert main(["train", "--resume", str(run)]) == 0
    assert_views_match_the_log(run)
    assert max(s for _, s in expected_points(records(run))) == 40
